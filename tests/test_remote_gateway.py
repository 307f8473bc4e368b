"""A topic server's end of its links to gateways, over real `LinkConnection`s that record
what they write, with the real `TopicServer` behind them."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from app.counters import Counters
from app.link import codec
from app.link.codec import (
    LinkAck,
    LinkClose,
    LinkDeliver,
    LinkFrame,
    LinkPg,
    LinkPresenceQuery,
    LinkPresenceState,
    LinkPublish,
    LinkPublishKept,
    LinkRecover,
    LinkResubscribe,
    LinkSubscribe,
    LinkTrack,
    LinkUnsubscribe,
    LinkUntrack,
)
from app.link.connection import LinkConnection
from app.link.handshake import Identity
from app.link.hub import SCOPE
from app.ring import Declared, RingConfig
from app.settings import Role, Settings
from tests.clock import FakeClock
from tests.link.inputs import any_batches, closes_link
from topic_server.node import TopicServerNode
from topic_server.remote_gateway import RemoteGateway
from topic_server.server import TopicServer

pytestmark = pytest.mark.anyio


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


class Gateway:
    """One linked gateway: the server's RemoteGateway for it, and what it was sent."""

    def __init__(self, name: str, server: TopicServer, counters: Counters, pg: list[Any]):
        self.writer = Writer()
        peer = Identity(name, Role.GATEWAY, "inc")
        self.link = LinkConnection(peer, self.writer, 1 << 20, on_overflow=lambda: None)
        self.remote = RemoteGateway(
            self.link, server, counters, lambda link, frame: pg.append((link, frame))
        )

    def receive(self, *frames: bytes) -> None:
        """Frames from the gateway, in one batch."""
        self.link.receive(b"".join(frames))

    async def sent(self) -> bytes:
        """Everything written to the gateway since last time."""
        await asyncio.sleep(0)  # a batch leaves at the end of the loop's turn
        data = b"".join(self.writer.messages)
        self.writer.messages.clear()
        return data


def frames(data: bytes) -> list[LinkFrame]:
    return list(codec.decode(data))


class Cluster:
    """A topic server and two linked gateways."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.clock = FakeClock()
        self.server = TopicServer("ts-a", self.counters, clock=self.clock)
        self.pg: list[Any] = []
        self.a = Gateway("gw-a", self.server, self.counters, self.pg)
        self.b = Gateway("gw-b", self.server, self.counters, self.pg)


async def test_a_subscription_is_acked_with_seq_0() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(7, "t"), codec.subscribe(8, "u"))
    assert frames(await c.a.sent()) == [LinkAck(7, 0), LinkAck(8, 0)]
    assert c.server.topics.gateways("t") == (c.a.remote,)
    assert c.server.topics.gateways("u") == (c.a.remote,)


async def test_a_publish_is_sequenced_acked_and_delivered_once_per_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    encoded: list[int] = []
    deliver = codec.deliver

    def counted(seq: int, *rest: Any) -> bytes:
        encoded.append(seq)
        return deliver(seq, *rest)

    monkeypatch.setattr(codec, "deliver", counted)
    c.b.receive(
        codec.publish(2, 0, "t", "e", False, b'{"n":1}'),
        codec.publish(3, 0, "t", "e", True, b"\x01"),
    )
    to_a, to_b = await c.a.sent(), await c.b.sent()
    assert encoded == [1, 2]  # each message's deliver frame is encoded once, for both gateways
    first, second = frames(to_a)
    assert isinstance(first, LinkDeliver) and isinstance(second, LinkDeliver)
    one = deliver(1, first.sent_at, 0, "t", "e", False, b'{"n":1}')
    two = deliver(2, second.sent_at, 0, "t", "e", True, b"\x01")
    assert to_a == one + two
    # The publisher's link also carries the acks, after each message's deliver frame.
    assert to_b == one + codec.ack(2, 1) + two + codec.ack(3, 2)
    assert (c.counters.publishes, c.counters.gateway_deliveries_sent) == (2, 4)


async def test_a_publish_without_subscribers_is_acked_and_delivered_nowhere() -> None:
    c = Cluster()
    c.a.receive(codec.publish(5, 0, "nobody", "e", False, b"{}"))
    assert frames(await c.a.sent()) == [LinkAck(5, 1)]
    assert await c.b.sent() == b""
    assert (c.counters.publishes, c.counters.gateway_deliveries_sent) == (1, 0)


async def test_after_an_unsubscribe_a_gateway_gets_nothing_more() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    c.a.receive(codec.unsubscribe("t"))
    await c.a.sent(), await c.b.sent()
    assert c.server.topics.gateways("t") == (c.b.remote,)
    c.b.receive(codec.publish(2, 0, "t", "e", False, b"{}"))
    assert await c.a.sent() == b""
    assert [type(f) for f in frames(await c.b.sent())] == [LinkDeliver, LinkAck]


async def test_a_delivery_to_a_closed_link_is_counted_as_dropped() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    c.a.link.close(1001, "going away")
    c.b.receive(codec.publish(2, 0, "t", "e", False, b"{}"))
    assert await c.a.sent() == b""
    assert [type(f) for f in frames(await c.b.sent())] == [LinkDeliver, LinkAck]
    assert c.counters.gateway_deliveries_dropped == 1


async def test_pg_frames_go_to_pg_with_their_link() -> None:
    c = Cluster()
    c.a.receive(codec.pg(["discover", "dps", 1]))
    assert c.pg == [(c.a.link, ["discover", "dps", 1])]
    assert c.a.remote.gateway == "gw-a"


async def test_the_socket_to_skip_is_named_to_the_publishing_gateway_alone() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    c.b.receive(codec.publish(2, 77, "t", "e", False, b"{}"))
    [to_a] = frames(await c.a.sent())
    to_b, ack = frames(await c.b.sent())
    assert isinstance(to_a, LinkDeliver) and isinstance(to_b, LinkDeliver)
    assert (to_a.exclude, to_b.exclude) == (0, 77)
    assert to_a._replace(exclude=77) == to_b and ack == LinkAck(2, 1)


async def test_a_frame_only_topic_servers_send_closes_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Cluster()
    with caplog.at_level(logging.ERROR, logger="dps.link"):
        c.a.receive(codec.subscribe(1, "t"), codec.deliver(1, 0.0, 0, "t", "e", False, b"{}"))
    reason = "unexpected LinkDeliver from a gateway"
    assert c.a.writer.closed == (LinkClose.PROTOCOL_ERROR, reason)
    assert caplog.messages == [f"closing link to gw-a: {reason}"]


async def test_presence_tracks_are_merged_and_each_turn_is_one_diff_per_topic() -> None:
    c = Cluster()
    c.a.receive(codec.subscribe(1, "t"))
    c.b.receive(codec.subscribe(1, "t"))
    await c.a.sent(), await c.b.sent()
    c.a.receive(
        codec.track("t", "alice", "a1", None, b'{"phx_ref":"a1"}'),
        codec.presence_query(2, "t"),
    )
    c.b.receive(codec.track("t", "bob", "b1", None, b'{"phx_ref":"b1"}'))
    state = b'{"alice":{"metas":[{"phx_ref":"a1"}]}}'  # what gw-a had sent before it asked
    assert frames(await c.a.sent()) == [LinkPresenceState(2, state)]
    c.clock.advance(0)  # the end of the turn
    to_a, to_b = frames(await c.a.sent()), frames(await c.b.sent())
    assert to_a == to_b
    [diff] = to_a
    assert isinstance(diff, LinkDeliver) and diff.presence and diff.event == "presence_diff"
    assert orjson.loads(diff.payload) == {
        "joins": {"alice": {"metas": [{"phx_ref": "a1"}]}, "bob": {"metas": [{"phx_ref": "b1"}]}},
        "leaves": {},
    }
    assert c.counters.presence_diff_bytes == 2 * len(diff.payload)
    c.a.receive(codec.untrack("t", "alice", "a1"), codec.presence_query(3, "t"))
    [answer] = frames(await c.a.sent())
    assert answer == LinkPresenceState(3, b'{"bob":{"metas":[{"phx_ref":"b1"}]}}')
    assert c.counters.presence_changes == 3


async def test_presence_changes_gather_for_the_interval_into_one_diff() -> None:
    c = Cluster()
    c.server.interval = 0.05
    c.a.receive(codec.subscribe(1, "t"))
    await c.a.sent()
    c.a.receive(codec.track("t", "k", "r1", None, b"{}"))
    c.clock.advance(0.03)
    c.a.receive(codec.track("t", "k", "r2", None, b"{}"), codec.untrack("t", "k", "r1"))
    c.clock.advance(0.01)
    assert await c.a.sent() == b""
    c.clock.advance(0.01)  # 0.05 s after the first change
    [diff] = frames(await c.a.sent())
    assert isinstance(diff, LinkDeliver)
    assert orjson.loads(diff.payload) == {
        "joins": {"k": {"metas": [{}, {}]}},
        "leaves": {"k": {"metas": [{}]}},
    }
    c.a.receive(codec.untrack("t", "k", "r2"))
    c.clock.advance(0.05)
    assert len(frames(await c.a.sent())) == 1


async def test_a_gateway_link_that_goes_down_takes_its_presence_with_it() -> None:
    node = TopicServerNode(SETTINGS, RING, FakeClock())
    node.pg.start_scope(SCOPE)
    writer = Writer()
    link = LinkConnection(GATEWAY, writer, 1 << 20, node.overflowed)
    node.link_up(link)
    link.receive(codec.subscribe(1, "t") + codec.track("t", "k", "r", None, b"{}"))
    assert node.gauges()["presences"][0] == 1
    node.link_down(link)
    assert node.server.presence_state("t") == b"{}" and node.gauges()["presences"][0] == 0


# Whatever a gateway sends: a real topic server node behind the link.

RING = RingConfig({"ts-a": Declared("ts-a", 1, None)}, 160, Path("ring.toml"))
GATEWAY = Identity("gw-a", Role.GATEWAY, "inc-g")
SERVER_TAKES = (
    LinkPublish,
    LinkPublishKept,
    LinkSubscribe,
    LinkResubscribe,
    LinkRecover,
    LinkUnsubscribe,
    LinkTrack,
    LinkUntrack,
    LinkPresenceQuery,
    LinkPg,
)


SETTINGS = Settings(app=Role.TOPIC_SERVER, node="ts-a", cluster_secret=secrets.token_urlsafe())


def linked_topic_server() -> tuple[LinkConnection, Writer]:
    node = TopicServerNode(SETTINGS, RING, FakeClock())
    node.pg.start_scope(SCOPE)
    writer = Writer()
    link = LinkConnection(GATEWAY, writer, 1 << 20, node.overflowed)
    node.link_up(link)
    return link, writer


async def test_a_pg_frame_deeper_than_python_recurses_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link, writer = linked_topic_server()
    deep = b"[" * 1000 + b"]" * 1000
    with caplog.at_level(logging.WARNING):
        link.receive(codec.pg(["join", "dps", 1, "g", orjson.Fragment(deep)]))
    assert writer.closed is None
    assert caplog.messages == [
        "pg: dropped a frame from NodeId(name='gw-a', incarnation='inc-g'): "
        "bad member ids: (a list, nested too deep or not JSON)"
    ]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # caplog: cleared
@given(batch=any_batches)
async def test_whatever_a_gateway_sends_is_taken_or_closes_the_link(
    batch: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    link, writer = linked_topic_server()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        link.receive(batch)
    closes = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if closes_link(batch, SERVER_TAKES):
        assert writer.closed is not None and writer.closed[0] == LinkClose.PROTOCOL_ERROR
        assert len(closes) == 1 and closes[0].startswith("closing link to gw-a: ")
        assert "a frame failed" not in closes[0]  # refused by the protocol, not by a bug
    else:
        assert (writer.closed, closes) == (None, [])
    assert not [r for r in caplog.records if r.exc_info]  # no traceback, whatever came
