"""A link's batching, bound and frame dispatch, with a fake writer instead of a socket."""

from __future__ import annotations

import asyncio
import logging
import secrets

import orjson
import pytest

from app.link import codec
from app.link.codec import LinkClose, LinkFrame, LinkSubscribe, LinkUnsubscribe
from app.link.connection import LinkConnection, LinkOptions
from app.link.handshake import Identity
from app.settings import Role, Settings, SettingsError

pytestmark = pytest.mark.anyio

PEER = Identity("ts-a", Role.TOPIC_SERVER, "inc")


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
        link.send(codec.subscribe(1, topic))
    assert writer.messages == []
    await asyncio.sleep(0)
    assert len(writer.messages) == 1
    assert [f.topic for f in codec.decode(writer.messages[0])] == ["a", "b", "c"]  # type: ignore[union-attr]


async def test_a_peer_that_stops_reading_gets_the_link_closed() -> None:
    overflows = []
    writer = Writer(buffered=1000)
    link = LinkConnection(PEER, writer, limit=1024, on_overflow=lambda: overflows.append(1))
    link.send(codec.subscribe(1, "x" * 100))
    await asyncio.sleep(0)
    assert (writer.messages, overflows, writer.closed) == (
        [],
        [1],
        (LinkClose.QUEUE_FULL, "outbound queue full"),
    )
    assert link.closed
    link.send(codec.subscribe(2, "more"))  # ignored once closed
    await asyncio.sleep(0)
    assert writer.messages == []


async def test_received_frames_are_dispatched_in_order_and_garbage_closes_the_link() -> None:
    writer = Writer()
    link = LinkConnection(PEER, writer, limit=1 << 20, on_overflow=lambda: None)
    seen: list[LinkFrame] = []
    link.on_frame = seen.append
    link.receive(codec.subscribe(7, "t") + codec.unsubscribe("t"))
    assert seen == [LinkSubscribe(7, "t"), LinkUnsubscribe("t")]
    link.receive(b"?")
    assert writer.closed == (LinkClose.PROTOCOL_ERROR, "unknown frame kind b'?'")
    link.receive(codec.subscribe(8, "u"))  # the peer broke the protocol: nothing more
    assert seen == [LinkSubscribe(7, "t"), LinkUnsubscribe("t")]


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (RuntimeError("a bug"), "RuntimeError: a bug"),
        (ValueError("a bug\nERROR forged line"), "ValueError: a bug ERROR forged line"),
        # A message that cannot even be made: the repr of data nested too deep.
        (KeyError(orjson.loads(b"[" * 1000 + b"]" * 1000)), "KeyError: (no message)"),
    ],
)
async def test_a_frame_its_handler_fails_on_closes_the_link_with_one_line(
    error: Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer()
    link = LinkConnection(PEER, writer, limit=1 << 20, on_overflow=lambda: None)
    seen: list[LinkFrame] = []

    def handler(frame: LinkFrame) -> None:
        seen.append(frame)
        raise error

    link.on_frame = handler
    with caplog.at_level(logging.DEBUG):
        link.receive(codec.subscribe(1, "t") + codec.subscribe(2, "u"))
    assert seen == [LinkSubscribe(1, "t")]  # nothing more is taken from a failed batch
    assert writer.closed == (LinkClose.PROTOCOL_ERROR, "a frame could not be handled")
    assert caplog.messages == [f"closing link to ts-a: a frame failed: {logged}"]
    assert caplog.records[0].exc_info is None  # one line, no traceback


def test_link_options_need_the_cluster_secret() -> None:
    no_secret = Settings(app=Role.GATEWAY, cluster_secret=None)
    with pytest.raises(SettingsError, match=r"^DPS_CLUSTER_SECRET: required for node links$"):
        LinkOptions.of(no_secret)
    secret = secrets.token_urlsafe()
    assert LinkOptions.of(Settings(app=Role.GATEWAY, cluster_secret=secret)).secret == secret
