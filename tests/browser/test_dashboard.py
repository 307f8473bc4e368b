"""The dashboard in Chromium: a cluster under load, a topic server killed, and a node
whose dashboard needs its API key."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from tests.browser.conftest import Shoot
from tests.cluster.conftest import Node
from tests.support import ROOT, Server, child_process

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 10_000
DOWN_WITHIN = 3.0  # seconds from a kill -9 to the page showing the node down (issue #12)
NAMES = ["ts-a", "ts-b", "ws-a", "ws-b"]


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def counts(page: Page) -> dict[str, tuple[int, int]]:
    """(publishes, deliveries) of every node the page shows up."""
    rows = await page.locator("#nodes tbody tr[data-status=up]").all()
    found = {}
    for row in rows:
        name = await row.get_attribute("data-node")
        publishes = await row.get_attribute("data-publishes")
        deliveries = await row.get_attribute("data-deliveries")
        assert name is not None and publishes is not None and deliveries is not None
        found[name] = (int(publishes), int(deliveries))
    return found


def ring_bar(page: Page) -> Locator:
    """The ring's owners now (a second bar shows a handover's target)."""
    return page.locator("#ring .bar").first


async def test_the_dashboard_follows_a_loaded_cluster_and_a_killed_topic_server(
    browser: BrowserContext, node: Node, tmp_path: Path, shoot: Shoot
) -> None:
    servers = {name: node("ts", name) for name in ("ts-a", "ts-b")}
    gateways = [node("ws", "ws-a"), node("ws", "ws-b")]
    assert (status(servers["ts-a"].http + "/dashboard"), status(servers["ts-a"].http + "/")) == (
        200,
        404,
    )
    page = await browser.new_page()
    await page.goto(gateways[0].http + "/dashboard")
    await expect(page.locator("#nodes tbody tr[data-status=up]")).to_have_count(
        4, timeout=TIMEOUT_MS
    )
    assert list(await counts(page)) == NAMES

    argv = [
        sys.executable, "-m", "app.tools.loadtest",
        "--url", gateways[0].ws(), "--url", gateways[1].ws(),
        "--topics", "4", "--subscribers", "200", "--publishers", "4",
        "--rate", "200", "--duration", "8",
    ]  # fmt: skip
    async with child_process(argv, tmp_path / "loadtest.err", cwd=ROOT) as loadtest:
        await expect(page.locator('#nodes tr[data-node="ws-a"]')).not_to_have_attribute(
            "data-deliveries", "0", timeout=TIMEOUT_MS
        )
        before = await counts(page)
        await asyncio.sleep(2.5)
        after = await counts(page)
        for name in NAMES:
            assert after[name][0] > before[name][0], f"{name}'s publishes did not rise"
            assert after[name][1] > before[name][1], f"{name}'s deliveries did not rise"
        await shoot(page, "dashboard", docs=True)
        assert loadtest.stdout is not None
        report = await asyncio.wait_for(loadtest.stdout.read(), 60)
        assert await loadtest.wait() == 0, report.decode()

    shares = ring_bar(page).locator("[data-owner]")
    await expect(shares).to_have_count(2)
    share = await shares.first.get_attribute("data-share")
    assert share is not None and 0.2 < float(share) < 0.8

    servers["ts-a"].stop(signal.SIGKILL)
    killed = time.monotonic()
    await page.wait_for_selector(
        '#nodes tr[data-node="ts-a"][data-status="down"]', timeout=TIMEOUT_MS
    )
    assert time.monotonic() - killed < DOWN_WITHIN
    await expect(shares).to_have_count(1, timeout=TIMEOUT_MS)
    assert await shares.first.get_attribute("data-owner") == "ts-b"
    assert await shares.first.get_attribute("data-share") == "1.0000"
    await expect(page.locator("#ring")).to_contain_text("Declared but off the ring: ts-a.")
    await shoot(page, "dashboard-failover")


async def test_a_dashboard_behind_a_key_signs_in_once(
    browser: BrowserContext, spawn: Callable[..., Server], shoot: Shoot
) -> None:
    server = spawn({"DPS_API_KEY": "the-dashboard-key"})
    page = await browser.new_page()
    await page.goto(server.http + "/dashboard")
    await page.fill("input[name=key]", "not-the-key")
    await page.click("button[type=submit]")
    await expect(page.locator(".problem")).to_have_text("That is not the key (DPS_API_KEY).")
    await shoot(page, "dashboard-login")
    await page.fill("input[name=key]", "the-dashboard-key")
    await page.click("button[type=submit]")
    await expect(page.locator("#nodes tbody tr[data-status=up]")).to_have_count(
        1, timeout=TIMEOUT_MS
    )
    await page.reload()  # the session outlives the page
    await expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
