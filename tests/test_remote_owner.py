"""A gateway's end of a link to a topic server: every request gets exactly one answer.

A real `LinkConnection` over a recording writer stands in for the network, and a manual
clock for time: what the gateway sent is read back from the writer, the topic server's
answers are fed to the connection as it would receive them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from app.counters import Counters
from app.link import codec
from app.link.codec import (
    LinkAccepted,
    LinkAck,
    LinkClose,
    LinkDeliver,
    LinkDeliverKept,
    LinkFrame,
    LinkPg,
    LinkPresenceQuery,
    LinkPresenceState,
    LinkPublish,
    LinkRecovered,
    LinkRefused,
    LinkSubscribe,
    LinkTrack,
    LinkUnsubscribe,
    LinkUntrack,
)
from app.link.connection import LinkConnection
from app.link.handshake import Identity
from app.link.hub import SCOPE
from app.link.interface import Accepted, Outcome
from app.pg import NodeId
from app.ring import Declared, RingConfig
from app.settings import Role, Settings
from tests.clock import FakeClock
from tests.link.inputs import any_batches, closes_link
from tests.test_gateway import FakeSocket
from ws_gateway.node import GatewayNode
from ws_gateway.remote_owner import TIMED_OUT, UNREACHABLE, WENT_DOWN, RemoteOwner
from ws_gateway.serializers import V1, V2

pytestmark = pytest.mark.anyio

PEER = Identity("ts-a", Role.TOPIC_SERVER, "inc-1")
TIMEOUT = 5.0


class Writer:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write_message(self, data: bytes) -> None:
        self.messages.append(data)

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Fixture:
    """A RemoteOwner on a fresh link, and everything it reports."""

    def __init__(self) -> None:
        self.clock = FakeClock(1000.0)
        self.writer = Writer()
        self.link = LinkConnection(PEER, self.writer, limit=1 << 20, on_overflow=lambda: None)
        self.counters = Counters()
        self.delivered: list[tuple[RemoteOwner, LinkDeliver]] = []
        self.pg: list[tuple[LinkConnection, Any]] = []
        self.latencies: list[float] = []
        self.owner = RemoteOwner(
            self.link,
            linked_for=3.0,
            counters=self.counters,
            on_deliver=lambda owner, frame: self.delivered.append((owner, frame)),
            on_pg=lambda link, frame: self.pg.append((link, frame)),
            on_ack_latency=self.latencies.append,
            now=self.clock.time,
        )
        self.outcomes: list[tuple[str, Outcome]] = []

    def record(self, name: str) -> Any:
        return lambda outcome: self.outcomes.append((name, outcome))

    async def sent(self) -> list[LinkFrame]:
        """The frames the gateway has sent since the last call (batched per loop turn)."""
        await asyncio.sleep(0)
        frames = [frame for message in self.writer.messages for frame in codec.decode(message)]
        self.writer.messages.clear()
        return frames


async def test_a_publish_goes_out_and_its_ack_answers_it_once_with_the_latency() -> None:
    f = Fixture()
    f.owner.publish("rooms:1", "msg", b'{"a":1}', False, f.record("p"))
    assert await f.sent() == [LinkPublish(1, 0, "rooms:1", "msg", False, b'{"a":1}')]
    assert f.outcomes == []
    f.clock.advance(0.25)
    f.link.receive(codec.ack(1, 42))
    assert f.outcomes == [("p", Accepted("ts-a", 42))]
    assert f.latencies == [0.25]
    assert f.owner.pending == {}
    f.link.receive(codec.ack(1, 42))  # a duplicate ack is ignored
    assert len(f.outcomes) == 1
    assert f.counters.publish_errors == 0


async def test_a_subscription_is_acked_with_seq_0_and_an_unsubscribe_needs_no_answer() -> None:
    f = Fixture()
    f.owner.subscribe("rooms:1", f.record("s"))
    f.owner.publish("rooms:1", "e", b"\x00", True, f.record("p"))
    f.owner.unsubscribe("rooms:2")
    assert await f.sent() == [
        LinkSubscribe(1, "rooms:1"),
        LinkPublish(2, 0, "rooms:1", "e", True, b"\x00"),  # ids are shared: acks cannot mix up
        LinkUnsubscribe("rooms:2"),
    ]
    f.link.receive(codec.ack(2, 7) + codec.ack(1, 0))
    assert f.outcomes == [("p", Accepted("ts-a", 7)), ("s", Accepted("ts-a", 0))]
    assert len(f.latencies) == 1  # publishes only
    assert (f.owner.pending, f.owner.subscribing) == ({}, {})


async def test_expire_fails_only_what_waited_the_timeout_oldest_first() -> None:
    f = Fixture()
    f.owner.publish("t", "e", b"{}", False, f.record("p1"))  # sent at 0
    f.owner.subscribe("t", f.record("s2"))  # at 0
    f.clock.advance(1.0)
    f.owner.publish("t", "e", b"{}", False, f.record("p3"))  # at 1
    f.owner.subscribe("t", f.record("s4"))  # at 1
    f.clock.advance(1.0)
    f.owner.publish("t", "e", b"{}", False, f.record("p5"))  # at 2
    f.clock.advance(2.75)  # p1 and s2 have waited 4.75 s
    f.owner.expire(TIMEOUT)
    assert f.outcomes == []
    f.clock.advance(1.25)  # p1 and s2 waited 6 s, p3 and s4 exactly 5 s, p5 4 s
    f.owner.expire(TIMEOUT)
    assert f.outcomes == [
        ("p1", TIMED_OUT),
        ("p3", TIMED_OUT),
        ("s2", TIMED_OUT),
        ("s4", TIMED_OUT),
    ]
    assert f.counters.publish_errors == 2  # subscriptions are not publishes
    assert list(f.owner.pending) == [5]
    assert f.owner.subscribing == {}
    f.link.receive(codec.ack(1, 9) + codec.ack(2, 0))  # the owner answers too late: ignored
    assert len(f.outcomes) == 4
    assert f.latencies == []
    f.link.receive(codec.ack(5, 10))
    assert f.outcomes[4:] == [("p5", Accepted("ts-a", 10))]


async def test_when_the_link_goes_down_everything_waiting_fails_once() -> None:
    f = Fixture()
    f.owner.publish("t", "e", b"{}", False, f.record("p1"))
    f.owner.subscribe("t", f.record("s2"))
    f.owner.publish("t", "e", b"{}", False, f.record("p3"))
    f.link.receive(codec.ack(3, 1))
    f.owner.fail_all()
    assert f.outcomes == [("p3", Accepted("ts-a", 1)), ("p1", WENT_DOWN), ("s2", WENT_DOWN)]
    assert f.counters.publish_errors == 1
    f.link.receive(codec.ack(1, 2) + codec.ack(2, 0))
    f.owner.expire(0.0)
    f.owner.fail_all()
    assert len(f.outcomes) == 3
    assert f.counters.publish_errors == 1


async def test_a_closed_link_answers_at_once_and_sends_nothing() -> None:
    f = Fixture()
    f.link.close(1000, "gone")
    f.owner.publish("t", "e", b"{}", False, f.record("p"))
    f.owner.subscribe("t", f.record("s"))
    assert f.outcomes == [("p", UNREACHABLE), ("s", UNREACHABLE)]
    assert f.counters.publish_errors == 1
    assert (f.owner.pending, f.owner.subscribing) == ({}, {})
    assert await f.sent() == []


async def test_presence_goes_out_and_each_query_gets_one_answer() -> None:
    f = Fixture()
    f.owner.track("t", "alice", "r2", b"{}", "r1")
    f.owner.untrack("t", "bob", "r3")
    f.owner.presence("t", f.record("q1"))
    f.owner.presence("u", f.record("q2"))
    f.owner.presence("v", f.record("q3"))
    assert await f.sent() == [
        LinkTrack("t", "alice", "r2", "r1", b"{}"),
        LinkUntrack("t", "bob", "r3"),
        LinkPresenceQuery(1, "t"),
        LinkPresenceQuery(2, "u"),
        LinkPresenceQuery(3, "v"),
    ]
    f.link.receive(codec.presence_state(2, b'{"k":{}}') + codec.presence_state(2, b"{}"))
    assert f.outcomes == [("q2", b'{"k":{}}')]
    f.clock.advance(TIMEOUT)
    f.owner.presence("w", f.record("q4"))
    f.owner.expire(TIMEOUT)
    f.owner.fail_all()
    assert f.outcomes[1:] == [("q1", TIMED_OUT), ("q3", TIMED_OUT), ("q4", WENT_DOWN)]
    assert f.counters.publish_errors == 0
    f.link.close(1000, "gone")
    f.owner.presence("t", f.record("q5"))
    assert f.outcomes[-1] == ("q5", UNREACHABLE)


async def test_deliveries_and_pg_frames_go_to_their_handlers() -> None:
    f = Fixture()
    f.link.receive(
        codec.deliver(3, 12.5, 0, "t", "e", False, b"{}") + codec.pg(["discover", "dps", 1])
    )
    assert f.delivered == [(f.owner, LinkDeliver(3, 12.5, 0, "t", "e", False, b"{}"))]
    assert f.pg == [(f.link, ["discover", "dps", 1])]
    assert (f.owner.owner, f.owner.linked_for) == ("ts-a", 3.0)


async def test_a_frame_only_gateways_send_closes_the_link(caplog: pytest.LogCaptureFixture) -> None:
    f = Fixture()
    with caplog.at_level(logging.ERROR, logger="dps.link"):
        f.link.receive(codec.ack(1, 1) + codec.subscribe(1, "t") + codec.ack(2, 2))
    reason = "unexpected LinkSubscribe from a topic server"
    assert f.writer.closed == (LinkClose.PROTOCOL_ERROR, reason)
    assert caplog.messages == [f"closing link to ts-a: {reason}"]


# Whatever a topic server sends: a real gateway node behind the link, linked to ts-a as its
# only server, with a V2 socket joined to "t" and a V1 socket to "u".

RING = RingConfig({"ts-a": Declared("ts-a", 1, None)}, 160, Path("ring.toml"))
GATEWAY_TAKES = (
    LinkAck,
    LinkDeliver,
    LinkDeliverKept,
    LinkAccepted,
    LinkRefused,
    LinkRecovered,
    LinkPresenceState,
    LinkPg,
)


SETTINGS = Settings(
    app=Role.GATEWAY, node="ws-a", cluster_secret=secrets.token_urlsafe(), handover=0
)


async def linked_gateway() -> tuple[GatewayNode, Writer, list[FakeSocket]]:
    node = GatewayNode(SETTINGS, RING, FakeClock())
    node.pg.start_scope(SCOPE)
    writer = Writer()
    link = LinkConnection(PEER, writer, 1 << 20, node.overflowed)
    node.link_up(link)
    node.router.server_up("ts-a", node.owners["ts-a"], 0.0)
    sockets = [FakeSocket(V2), FakeSocket(V1)]
    joined: list[str | None] = []
    node.gateway.join(sockets[0], "t", "1", joined.append)  # type: ignore[arg-type]
    node.gateway.join(sockets[1], "u", "1", joined.append)  # type: ignore[arg-type]
    link.receive(codec.ack(1, 0) + codec.ack(2, 0))
    assert joined == [None, None]
    return node, writer, sockets


async def test_the_linked_gateway_delivers_to_its_sockets() -> None:
    node, writer, (v2, v1) = await linked_gateway()
    link = node.links[NodeId("ts-a", "inc-1")]
    link.receive(
        codec.deliver(1, 0.0, 0, "t", "e", False, b'{"n":1}')
        + codec.deliver(1, 0.0, 0, "u", "e", False, b'{"n":2}')
    )
    assert v2.payloads() == [["1", None, "t", "e", {"n": 1}]]
    assert v1.payloads() == [{"topic": "u", "event": "e", "payload": {"n": 2}, "ref": None}]
    assert writer.closed is None


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # caplog: cleared
@given(batch=any_batches)
async def test_whatever_a_topic_server_sends_is_taken_or_closes_the_link(
    batch: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    node, writer, _ = await linked_gateway()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        node.links[NodeId("ts-a", "inc-1")].receive(batch)
    closes = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if closes_link(batch, GATEWAY_TAKES):
        assert writer.closed is not None and writer.closed[0] == LinkClose.PROTOCOL_ERROR
        assert len(closes) == 1 and closes[0].startswith("closing link to ts-a: ")
        assert "a frame failed" not in closes[0]  # refused by the protocol, not by a bug
    else:
        assert (writer.closed, closes) == (None, [])
    assert not [r for r in caplog.records if r.exc_info]  # no traceback, whatever came
