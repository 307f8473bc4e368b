"""The demo chat in Chromium: on the embedded default, and between two gateways of a
`dps cluster`."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import Shoot
from tests.support import Server, local_cluster

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 10_000


async def open_chat(browser: BrowserContext, gateway: Server, name: str) -> Page:
    """A chat page on `gateway`, named `name`, joined to its first room (lobby)."""
    page = await browser.new_page()
    await page.goto(gateway.http + "/")
    await page.fill("#name-form input[name=name]", name)
    await page.click("#name-form button")
    await expect(page.locator("#room-state")).to_have_text("joined", timeout=TIMEOUT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    return page


async def say(page: Page, text: str) -> None:
    await page.fill("#send-form input[name=body]", text)
    await page.press("#send-form input[name=body]", "Enter")


async def heard(page: Page, sender: str, text: str) -> None:
    message = page.locator(f'#messages li[data-from="{sender}"] .body', has_text=text)
    await expect(message).to_have_count(1, timeout=TIMEOUT_MS)


async def test_a_page_chats_with_the_embedded_default(
    browser: BrowserContext, server: Server, shoot: Shoot
) -> None:
    page = await open_chat(browser, server, "solo")
    await say(page, "anyone here?")
    await heard(page, "solo", "anyone here?")
    await page.fill("#join-form input[name=room]", "elsewhere")
    await page.press("#join-form input[name=room]", "Enter")
    await expect(page.locator("#room-title")).to_have_text("# elsewhere")
    await expect(page.locator("#room-state")).to_have_text("joined", timeout=TIMEOUT_MS)
    await expect(page.locator("#messages li")).to_have_count(0)
    await expect(page.locator("#rooms li")).to_have_count(2)
    await shoot(page, "chat-embedded")


async def test_two_pages_on_two_gateways_of_a_cluster_chat(
    browser: BrowserContext, tmp_path: Path, shoot: Shoot
) -> None:
    async with local_cluster(tmp_path / "cluster.log") as gateways:
        alice = await open_chat(browser, gateways[0], "alice")
        bob = await open_chat(browser, gateways[1], "bob")
        lines = [
            (alice, "alice", "Hello from gateway ws-a!"),
            (bob, "bob", "Hi alice, bob here, on ws-b."),
            (alice, "alice", "Each message went through a topic server to both gateways."),
        ]
        for page, name, text in lines:
            await say(page, text)
            for reader in (alice, bob):
                await heard(reader, name, text)
        await shoot(alice, "chat", docs=True)
        await shoot(bob, "chat-bob")
