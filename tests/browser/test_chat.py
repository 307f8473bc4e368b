"""The demo chat in Chromium: on the embedded default, and between two gateways of a
`dps cluster`, with the shipped channel rules (its `chat:` rooms keep their recent
messages and their presence) or rules that keep less."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import Shoot
from tests.support import Server, local_cluster

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 10_000
RESTART_MS = 30_000  # a server restarted, and phoenix.js's reconnect backoff
EARLIER_GONE = "Earlier messages are no longer kept."
MISSED = (
    "Messages sent while this page was disconnected may be missing: the room no longer keeps them."
)


async def open_chat(browser: BrowserContext, gateway: Server, name: str) -> Page:
    """A chat page on `gateway`, named `name`, joined to its first room (lobby)."""
    page = await browser.new_page()
    await page.goto(gateway.http + "/")
    await page.fill("#name-form input[name=name]", name)
    await page.click("#name-form button")
    await joined(page)
    return page


async def joined(page: Page, timeout: int = TIMEOUT_MS) -> None:
    await expect(page.locator("#room-state")).to_have_text("joined", timeout=timeout)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")


async def say(page: Page, text: str) -> None:
    await page.fill("#send-form input[name=body]", text)
    await page.press("#send-form input[name=body]", "Enter")


async def heard(page: Page, sender: str, text: str) -> None:
    message = page.locator(f'#messages li[data-from="{sender}"] .body', has_text=text)
    await expect(message).to_have_count(1, timeout=TIMEOUT_MS)


async def shows(page: Page, lines: list[str], timeout: int = TIMEOUT_MS) -> None:
    """The room's list holds exactly `lines`, in this order: the bodies of its messages,
    and the page's notes of messages it cannot show."""
    shown = page.locator("#messages li.gap, #messages li .body")
    await expect(shown).to_have_text(lines, timeout=timeout)


async def present(page: Page, names: list[str]) -> None:
    """The room's presence list says exactly `names` (sorted)."""
    await expect(page.locator("#members li")).to_have_text(names, timeout=TIMEOUT_MS)
    await expect(page.locator("#members-note")).to_have_text("")


async def test_a_page_chats_with_the_embedded_default(
    browser: BrowserContext, server: Server, shoot: Shoot
) -> None:
    page = await open_chat(browser, server, "solo")
    await present(page, ["solo"])
    await say(page, "anyone here?")
    await heard(page, "solo", "anyone here?")
    await page.fill("#join-form input[name=room]", "elsewhere")
    await page.press("#join-form input[name=room]", "Enter")
    await expect(page.locator("#room-title")).to_have_text("# elsewhere")
    await expect(page.locator("#room-state")).to_have_text("joined", timeout=TIMEOUT_MS)
    await expect(page.locator("#messages li")).to_have_count(0)
    await expect(page.locator("#rooms li")).to_have_count(2)
    await present(page, ["solo"])
    await shoot(page, "chat-embedded")


async def test_two_pages_on_two_gateways_of_a_cluster_chat(
    browser: BrowserContext, tmp_path: Path, shoot: Shoot
) -> None:
    async with local_cluster(tmp_path / "cluster.log") as gateways:
        alice = await open_chat(browser, gateways[0], "alice")
        bob = await open_chat(browser, gateways[1], "bob")
        for page in (alice, bob):
            await present(page, ["alice", "bob"])
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

        # A reload loses what the page showed: it gets the room's recent messages back
        # from the history its first join recovers, each once, in order.
        await bob.reload()
        await joined(bob)
        await shows(bob, [text for _, _, text in lines])
        await say(bob, "Reloaded, and nothing is missing.")
        for reader in (alice, bob):
            await heard(reader, "bob", "Reloaded, and nothing is missing.")
            await present(reader, ["alice", "bob"])
        await shows(alice, [text for _, _, text in lines] + ["Reloaded, and nothing is missing."])
        await shoot(bob, "chat-bob-reloaded")


async def test_a_page_says_what_the_room_no_longer_keeps(
    browser: BrowserContext, spawn: Callable[..., Server], tmp_path: Path, shoot: Shoot
) -> None:
    """Rooms that keep 2 messages: a reload shows those 2 and says that earlier ones are
    gone; a server restart (its histories with it) is a gap the page points out where
    it is, and the chat goes on after it."""
    rules = tmp_path / "channels.toml"
    rules.write_text('[[channel]]\ntopic = "chat:*"\nhistory_size = 2\npresence = true\n')
    env = {"DPS_CHANNELS": str(rules)}
    server = spawn(env)
    page = await open_chat(browser, server, "solo")
    for text in ("one", "two", "three"):
        await say(page, text)
        await heard(page, "solo", text)
    await page.reload()
    await joined(page)
    await shows(page, [EARLIER_GONE, "two", "three"])

    server.stop()
    spawn({**env, "DPS_PORT": str(server.port)})
    await shows(page, [EARLIER_GONE, "two", "three", MISSED], timeout=RESTART_MS)
    await joined(page)
    await say(page, "four")
    await shows(page, [EARLIER_GONE, "two", "three", MISSED, "four"])
    await present(page, ["solo"])
    await expect(page.locator("#messages li.gap")).to_have_text([EARLIER_GONE, MISSED])
    await shoot(page, "chat-gaps")
