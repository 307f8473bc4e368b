"""The listening end of a link: the handshake, its refusals, then batches, without a socket.

A fake stands in for the served connection (`app.served.detached.DetachedWebSocket`): a
transport that records the frames written, and `close_now`. The dialer is the real
handshake's other side.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.link import codec
from app.link.codec import LinkClose, LinkFrame, LinkSubscribe
from app.link.connection import LinkConnection, LinkOptions
from app.link.handshake import Handshake, HandshakeState, Identity
from app.link.hub import LinkHub
from app.link.listener import Listener
from app.settings import Role
from tests.link.inputs import well_formed_message
from tests.pg.frames import wild_values

pytestmark = pytest.mark.anyio

SERVER = Identity("ts-a", Role.TOPIC_SERVER, "inc-t")
GATEWAY = Identity("ws-a", Role.GATEWAY, "inc-g")
SECRET = secrets.token_urlsafe()
LINKED_FOR = 3.5
OPTIONS = LinkOptions(SECRET, queue_limit=1 << 20, ping_interval=0.3, ping_timeout=1.2)
ADDRESS = "10.0.0.7"


class Hub(LinkHub):
    def __init__(self) -> None:
        super().__init__(SERVER)
        self.events: list[tuple[str, Identity]] = []

    def up(self, link: LinkConnection) -> None:
        self.events.append(("up", link.peer))

    def down(self, link: LinkConnection) -> None:
        self.events.append(("down", link.peer))


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def messages(self) -> list[tuple[bool, bytes]]:
        """The (is_text, payload) of each server frame written since last time."""
        data, self.data = bytes(self.data), bytearray()
        out, pos = [], 0
        while pos < len(data):
            head, size = data[pos], data[pos + 1]
            pos += 2
            if size == 126:
                (size,) = struct.unpack_from("!H", data, pos)
                pos += 2
            elif size == 127:
                (size,) = struct.unpack_from("!Q", data, pos)
                pos += 8
            assert head in (0x81, 0x82), f"not a final text or binary frame: {head:#x}"
            out.append((head == 0x81, data[pos : pos + size]))
            pos += size
        return out


class Served:
    """What a Listener uses of a served connection."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.closed_with: tuple[int, str] | None = None

    @property
    def closing(self) -> bool:
        return self.closed_with is not None

    def close_now(self, code: int, reason: str, hang_up: bool = False) -> None:
        if self.closed_with is None:  # as the real one: the first close is the one sent
            self.closed_with = (code, reason)


class Fixture:
    def __init__(self, dialer: Identity = GATEWAY, secret: str = SECRET) -> None:
        self.hub = Hub()
        self.conn = Served()
        self.listener = Listener(
            self.hub, OPTIONS, frozenset({Role.GATEWAY}), self.conn, ADDRESS, LINKED_FOR
        )  # type: ignore[arg-type]
        self.dialer = Handshake(dialer, secret, listener=False)
        # What link_endpoint sends once the WebSocket is accepted.
        self.hello = self.listener.handshake.hello()
        auth = self.dialer.receive(self.hello.encode())
        assert auth is not None
        self.auth = auth


async def test_a_dialer_with_the_secret_is_welcomed_and_its_link_handed_to_the_hub() -> None:
    f = Fixture()
    f.listener.received(f.auth.encode(), True)
    [(text, welcome)] = f.conn.transport.messages()
    assert text
    assert f.dialer.receive(welcome) is None
    assert f.dialer.state is HandshakeState.OPEN
    assert (f.dialer.peer, f.dialer.peer_linked_for) == (SERVER, LINKED_FOR)
    assert f.hub.events == [("up", GATEWAY)]
    link = f.listener.link
    assert link is not None and link.peer == GATEWAY
    assert f.conn.closed_with is None
    received: list[LinkFrame] = []
    link.on_frame = received.append
    f.listener.received(codec.subscribe(1, "t") + codec.subscribe(2, "u"), False)
    assert received == [LinkSubscribe(1, "t"), LinkSubscribe(2, "u")]
    link.send(codec.ack(1, 0))
    link.send(codec.ack(2, 0))
    await asyncio.sleep(0)  # the batch leaves at the end of the loop's turn
    assert f.conn.transport.messages() == [(False, codec.ack(1, 0) + codec.ack(2, 0))]
    f.listener.closed()
    assert f.hub.events == [("up", GATEWAY), ("down", GATEWAY)]
    assert link.closed


AUTH = None  # the dialer's own auth message


@pytest.mark.parametrize(
    ("dialer", "secret", "message", "close"),
    [
        pytest.param(
            GATEWAY,
            "wrong!!!",
            AUTH,
            (LinkClose.AUTH_FAILED, "ws-a does not know the cluster secret"),
            id="wrong secret",
        ),
        pytest.param(
            Identity("ts-b", Role.TOPIC_SERVER, "inc"),
            SECRET,
            AUTH,
            (LinkClose.PROTOCOL_ERROR, "ts-b is a ts node, not ws"),
            id="wrong role",
        ),
        pytest.param(
            GATEWAY,
            SECRET,
            (codec.subscribe(1, "t"), False),
            (LinkClose.PROTOCOL_ERROR, "unexpected message"),
            id="binary before the handshake",
        ),
        pytest.param(
            GATEWAY,
            SECRET,
            (b'{"auth": 3, "identity": "\xff"}', True),
            (LinkClose.PROTOCOL_ERROR, "malformed handshake: not UTF-8 JSON"),
            id="bad UTF-8",
        ),
        pytest.param(
            GATEWAY,
            SECRET,
            (b"[1, 2]", True),
            (LinkClose.PROTOCOL_ERROR, "malformed handshake: not an object"),
            id="not a handshake message",
        ),
    ],
)
async def test_a_refused_dialer_is_closed_with_the_reason_and_logged(
    dialer: Identity,
    secret: str,
    message: tuple[bytes, bool] | None,
    close: tuple[int, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Fixture(dialer, secret)
    data, text = (f.auth.encode(), True) if message is AUTH else message
    with caplog.at_level(logging.WARNING, logger="dps.link"):
        f.listener.received(data, text)
    assert f.conn.closed_with == close
    assert f"refused link from {ADDRESS}: {close[1]}" in caplog.text
    assert f.conn.transport.messages() == []
    assert f.listener.link is None
    # All the dialer got: the hello and the close. Neither says who listens.
    for told in (f.hello, close[1]):
        assert SERVER.name not in told and SERVER.incarnation not in told
    f.listener.closed()
    assert f.hub.events == []


async def test_a_text_message_once_open_closes_the_link(caplog: pytest.LogCaptureFixture) -> None:
    f = Fixture()
    f.listener.received(f.auth.encode(), True)
    with caplog.at_level(logging.WARNING, logger="dps.link"):
        f.listener.received(f.auth.encode(), True)  # a replayed auth, or any text
    assert f.conn.closed_with == (LinkClose.PROTOCOL_ERROR, "unexpected message")
    assert f"refused link from {ADDRESS}: unexpected message" in caplog.text


# Whatever a dialer without the secret sends, in any order.

messages = st.one_of(
    st.tuples(st.binary(max_size=100), st.booleans()),
    st.tuples(wild_values.map(orjson.dumps), st.just(True)),
    st.tuples(st.just(AUTH), st.just(True)),  # its own auth, with a MAC under another secret
)


@given(st.lists(messages, min_size=1, max_size=4))
def test_a_dialer_without_the_secret_is_refused_once_whatever_it_sends(
    sent: list[tuple[bytes | None, bool]],
) -> None:
    f = Fixture(secret=secrets.token_urlsafe())
    for data, text in sent:
        f.listener.received(f.auth.encode() if data is AUTH else data, text)
    first, text = sent[0]
    if first is AUTH or (text and well_formed_message("auth", first)):
        code = LinkClose.AUTH_FAILED
    else:
        code = LinkClose.PROTOCOL_ERROR
    assert f.conn.closed_with is not None and f.conn.closed_with[0] == code
    assert f.conn.transport.messages() == []  # no welcome, nothing else
    assert (f.listener.link, f.hub.events) == (None, [])


async def test_a_dialer_that_never_proves_the_secret_is_closed_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Fixture()
    with caplog.at_level(logging.WARNING, logger="dps.link"):
        f.listener.too_slow()  # what the endpoint's timer calls after DPS_HANDSHAKE_TIMEOUT
    assert f.conn.closed_with == (LinkClose.PROTOCOL_ERROR, "no handshake in time")
    assert f.hub.events == []
    assert f"refused link from {ADDRESS}: no handshake in time" in caplog.text
    # Once the link is open, the timer does nothing.
    f = Fixture()
    f.listener.received(f.auth.encode(), True)
    f.listener.too_slow()
    assert f.conn.closed_with is None
