"""A topic server's `linked_for` clock and pause watchdog, on a manual clock."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest

from app.clock import Clock
from app.link.connection import LinkConnection
from app.link.handshake import Identity
from app.ring import Declared, RingConfig
from app.settings import Role, Settings
from tests.clock import FakeClock
from topic_server.node import PAUSE_TICK, TRIM_TICK, TopicServerNode

pytestmark = pytest.mark.anyio

RING = RingConfig({"ts-a": Declared("ts-a", 1, None)}, 160, Path("ring.toml"))
LINK_TIMEOUT = 1.2


class Writer:
    def write_message(self, data: bytes) -> None:
        pass

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        pass


def topic_server(clock: Clock) -> TopicServerNode:
    settings = Settings(
        app=Role.TOPIC_SERVER,
        node="ts-a",
        cluster_secret=secrets.token_urlsafe(),
        link_timeout=LINK_TIMEOUT,
    )
    return TopicServerNode(settings, RING, clock)


def gateway_link(name: str) -> LinkConnection:
    return LinkConnection(Identity(name, Role.GATEWAY, "inc"), Writer(), 1 << 20, lambda: None)


async def test_linked_for_runs_from_the_first_gateway_link_until_the_last_one_goes() -> None:
    clock = FakeClock(100.0)
    node = topic_server(clock)
    assert node.linked_for() == 0.0
    a, b = gateway_link("gw-a"), gateway_link("gw-b")
    node.link_up(a)
    clock.advance(2.5)
    assert node.linked_for() == 2.5
    node.link_up(b)  # another gateway does not restart it
    clock.advance(1.0)
    node.link_down(a)  # nor does losing one while another stays
    assert node.linked_for() == 3.5
    node.link_down(b)
    assert node.linked_for() == 0.0
    clock.advance(10.0)
    node.link_up(a)
    clock.advance(0.5)
    assert node.linked_for() == 0.5


def watchdog_looks(clock: FakeClock) -> None:
    """Advance to the watchdog's next tick."""
    clock.advance(clock.pending[0] - clock.time())


async def test_a_pause_longer_than_the_link_timeout_restarts_the_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    node = topic_server(clock)
    await node.start()
    node.link_up(gateway_link("gw-a"))  # at 0
    clock.advance(5.0)  # the watchdog ticks on time all along
    assert node.linked_for() == 5.0
    watchdog_looks(clock)
    clock.stall(1.0)  # shorter than a link timeout: the gateways kept the links
    clock.advance(0)
    assert node.linked_for() == clock.time()
    watchdog_looks(clock)
    with caplog.at_level(logging.WARNING, logger="dps.topic_server"):
        clock.stall(2.0)  # longer: every gateway has declared this server down
        clock.advance(0)
    assert node.linked_for() == 0.0
    assert "this process was paused for 1.9 s" in caplog.text
    node.link_up(gateway_link("gw-b"))  # the gateways link again: a fresh start
    clock.advance(0.5)
    assert node.linked_for() == 0.5
    await node.stop()
    assert clock.pending == []


async def test_the_watchdog_and_the_history_sweep_tick_until_stopped() -> None:
    clock = FakeClock()
    node = topic_server(clock)
    await node.start()
    assert clock.pending == [PAUSE_TICK, TRIM_TICK]
    clock.advance(PAUSE_TICK)
    assert clock.pending == [2 * PAUSE_TICK, TRIM_TICK]
    await node.stop()
    assert clock.pending == []
