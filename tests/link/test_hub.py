"""A node's links by peer, and pg over them: two hubs joined by in-memory links.

Each link end is a real `LinkConnection`; its writer hands every batch to the other end's
`receive`, so pg frames cross exactly as they would over a socket, batched per loop turn.
"""

from __future__ import annotations

import asyncio

import pytest

from app.link.codec import LinkFrame, LinkPg
from app.link.connection import LinkConnection
from app.link.handshake import Identity
from app.link.hub import GATEWAYS, SCOPE, TOPIC_SERVERS, LinkHub
from app.pg import Member, NodeId
from app.settings import Role

pytestmark = pytest.mark.anyio

GW = Identity("ws-a", Role.GATEWAY, "inc-g")
TS = Identity("ts-a", Role.TOPIC_SERVER, "inc-t")


class Hub(LinkHub):
    """A hub that records its role's calls and feeds pg frames to pg, as roles do."""

    def __init__(self, local: Identity, group: str) -> None:
        super().__init__(local)
        self.events: list[tuple[str, LinkConnection]] = []
        self.pg.start_scope(SCOPE)
        self.member = self.pg.spawn_member().member
        self.pg.join(SCOPE, group, self.member)

    def up(self, link: LinkConnection) -> None:
        self.events.append(("up", link))

        def on_frame(frame: LinkFrame) -> None:
            if isinstance(frame, LinkPg):
                self.pg_frame(link, frame.frame)

        link.on_frame = on_frame

    def down(self, link: LinkConnection) -> None:
        self.events.append(("down", link))

    def members(self, group: str) -> tuple[Member, ...]:
        return self.pg.get_members(SCOPE, group)


class Pipe:
    """One direction of an in-memory connection."""

    def __init__(self) -> None:
        self.to: LinkConnection | None = None
        self.closed: tuple[int, str] | None = None

    def write_message(self, data: bytes) -> None:
        assert self.to is not None
        self.to.receive(data)

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def connection(gw: Hub, ts: Hub) -> tuple[LinkConnection, LinkConnection]:
    """Both ends of one connection: (the gateway's link to ts, the server's link to gw)."""
    to_ts, to_gw = Pipe(), Pipe()
    at_gw = LinkConnection(ts.local, to_ts, 1 << 20, gw.overflowed)
    at_ts = LinkConnection(gw.local, to_gw, 1 << 20, ts.overflowed)
    to_ts.to, to_gw.to = at_ts, at_gw
    return at_gw, at_ts


async def turns(n: int = 5) -> None:
    """Let batches cross: each hop of pg's exchange leaves at the end of a loop turn."""
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
def hubs() -> tuple[Hub, Hub]:
    return Hub(GW, GATEWAYS), Hub(TS, TOPIC_SERVERS)


async def test_pg_runs_over_the_links_and_a_link_down_purges_the_peer(
    hubs: tuple[Hub, Hub],
) -> None:
    gw, ts = hubs
    at_gw, at_ts = connection(gw, ts)
    gw.link_up(at_gw)
    ts.link_up(at_ts)
    await turns()
    assert gw.members(TOPIC_SERVERS) == (ts.member,)  # peer_up reached pg: it synced
    assert ts.members(GATEWAYS) == (gw.member,)
    assert gw.links == {NodeId("ts-a", "inc-t"): at_gw}
    gw.link_down(at_gw)
    assert at_gw.closed
    assert gw.links == {}
    assert gw.members(TOPIC_SERVERS) == ()  # peer_down reached pg: the peer is purged
    assert gw.events == [("up", at_gw), ("down", at_gw)]


async def test_a_second_connection_of_one_incarnation_replaces_the_first(
    hubs: tuple[Hub, Hub],
) -> None:
    gw, ts = hubs
    old_gw, old_ts = connection(gw, ts)
    gw.link_up(old_gw)
    ts.link_up(old_ts)
    await turns()
    new_gw, new_ts = connection(gw, ts)
    gw.link_up(new_gw)
    assert old_gw.closed
    assert old_gw.writer.closed == (1000, "replaced by a newer connection")  # type: ignore[attr-defined]
    assert gw.events == [("up", old_gw), ("down", old_gw), ("up", new_gw)]
    assert gw.links == {NodeId("ts-a", "inc-t"): new_gw}
    assert gw.members(TOPIC_SERVERS) == ()  # purged with the old connection
    # The server sees the old connection close, then the new one open.
    ts.link_down(old_ts)
    ts.link_up(new_ts)
    await turns()
    assert gw.members(TOPIC_SERVERS) == (ts.member,)  # synced again over the new one
    assert ts.members(GATEWAYS) == (gw.member,)


async def test_the_end_of_a_connection_that_is_not_current_is_ignored(
    hubs: tuple[Hub, Hub],
) -> None:
    gw, ts = hubs
    old_gw, old_ts = connection(gw, ts)
    gw.link_up(old_gw)
    ts.link_up(old_ts)
    new_gw, new_ts = connection(gw, ts)
    gw.link_up(new_gw)
    ts.link_down(old_ts)
    ts.link_up(new_ts)
    await turns()
    events = list(gw.events)
    gw.link_down(old_gw)  # its connection_lost comes late
    never_up, _ = connection(gw, ts)
    gw.link_down(never_up)
    assert gw.events == events
    assert gw.links == {NodeId("ts-a", "inc-t"): new_gw}
    assert not new_gw.closed
    assert gw.members(TOPIC_SERVERS) == (ts.member,)
