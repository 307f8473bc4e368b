"""A link's batching, bound and frame dispatch, with a fake writer instead of a socket."""

from __future__ import annotations

import asyncio

import pytest

from app import link_codec
from app.link_codec import Frame, Subscribe, Unsubscribe
from app.link_connection import BROKEN_FRAME, QUEUE_FULL, LinkConnection
from app.link_handshake import Identity

pytestmark = pytest.mark.anyio

PEER = Identity("ts-a", "ts", "inc")


class Writer:
    def __init__(self, buffered: int = 0) -> None:
        self.messages: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.pending = buffered

    def write_message(self, data: bytes) -> None:
        self.messages.append(data)

    def buffered(self) -> int:
        return self.pending

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_frames_sent_in_one_turn_leave_in_one_message() -> None:
    writer = Writer()
    link = LinkConnection(PEER, writer, limit=1 << 20, on_overflow=lambda: None)
    for topic in ("a", "b", "c"):
        link.send(link_codec.subscribe(1, topic))
    assert writer.messages == []
    await asyncio.sleep(0)
    assert len(writer.messages) == 1
    assert [f.topic for f in link_codec.decode(writer.messages[0])] == ["a", "b", "c"]  # type: ignore[union-attr]


async def test_a_peer_that_stops_reading_gets_the_link_closed() -> None:
    overflows = []
    writer = Writer(buffered=1000)
    link = LinkConnection(PEER, writer, limit=1024, on_overflow=lambda: overflows.append(1))
    link.send(link_codec.subscribe(1, "x" * 100))
    await asyncio.sleep(0)
    assert (writer.messages, overflows, writer.closed) == (
        [],
        [1],
        (QUEUE_FULL, "outbound queue full"),
    )
    assert link.closed
    link.send(link_codec.subscribe(2, "more"))  # ignored once closed
    await asyncio.sleep(0)
    assert writer.messages == []


async def test_received_frames_are_dispatched_in_order_and_garbage_closes_the_link() -> None:
    writer = Writer()
    link = LinkConnection(PEER, writer, limit=1 << 20, on_overflow=lambda: None)
    seen: list[Frame] = []
    link.on_frame = seen.append
    link.receive(link_codec.subscribe(7, "t") + link_codec.unsubscribe("t"))
    assert seen == [Subscribe(7, "t"), Unsubscribe("t")]
    link.receive(b"?")
    assert writer.closed == (BROKEN_FRAME, "unknown frame kind b'?'")
