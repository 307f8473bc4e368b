"""The dialling end of a link: handshake, keep-alive and backoff, without a socket.

A `DialedLink` is driven as asyncio would drive it (connection_made, data_received), over a
transport that records what it writes, on a manual clock. The topic server at the other
end is websockets' own sans-I/O server and the listener's side of the real handshake.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from app.link import codec
from app.link.codec import LinkClose, LinkFrame, LinkSubscribe
from app.link.connection import LinkConnection, LinkOptions
from app.link.dialer import CLOSE_TIMEOUT, DialedLink, backoff
from app.link.handshake import VERSION, Handshake, Identity, _mac
from app.link.hub import LinkHub
from app.served.detached import close_reason
from app.settings import Role
from tests.clock import FakeClock
from tests.pg.frames import wild_values

pytestmark = pytest.mark.anyio

GATEWAY = Identity("ws-a", Role.GATEWAY, "inc-g")
SERVER = Identity("ts-a", Role.TOPIC_SERVER, "inc-t")
SECRET = secrets.token_urlsafe()
LINKED_FOR = 12.5
KEEPALIVE = LinkOptions(SECRET, queue_limit=1 << 20, ping_interval=0.25, ping_timeout=1.0)
# For the handshake tests: no ping or verdict within the seconds they cover.
QUIET = LinkOptions(SECRET, queue_limit=1 << 20, ping_interval=60.0, ping_timeout=240.0)


class Hub(LinkHub):
    def __init__(self) -> None:
        super().__init__(GATEWAY)
        self.events: list[tuple[str, Identity]] = []

    def up(self, link: LinkConnection) -> None:
        self.events.append(("up", link.peer))

    def down(self, link: LinkConnection) -> None:
        self.events.append(("down", link.peer))


class Transport:
    """Records what the link writes. An abort ends the connection as asyncio's transports
    do: `connection_lost` on the next turn of the loop."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.data = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


class Connection:
    """A gateway's DialedLink to ts-a, and the topic server's end of it."""

    def __init__(
        self,
        options: LinkOptions,
        peer: Identity = SERVER,
        peer_secret: str = SECRET,
    ) -> None:
        self.clock = FakeClock()
        self.hub = Hub()
        handshake = Handshake(GATEWAY, SECRET, listener=False)
        self.link = DialedLink(
            "ws://127.0.0.1:5000/_dps/link", handshake, "ts-a", self.hub, options, self.clock
        )
        self.transport = Transport(self.link)
        self.server = ServerProtocol(max_size=None)
        self.listener = Handshake(peer, peer_secret, listener=True, linked_for=LINKED_FOR)
        self.link.connection_made(self.transport)  # type: ignore[arg-type]

    def to_server(self) -> list[Any]:
        """What the dialer wrote since last time, as the server's events."""
        self.server.receive_data(bytes(self.transport.data))
        self.transport.data.clear()
        return self.server.events_received()

    def frames_to_server(self, opcode: Opcode) -> list[Frame]:
        return [e for e in self.to_server() if isinstance(e, Frame) and e.opcode is opcode]

    def to_dialer(self) -> None:
        """What the server has to send, received by the dialer."""
        data = b"".join(self.server.data_to_send())
        if data:
            self.link.data_received(data)

    def upgrade(self) -> None:
        [request] = self.to_server()
        assert isinstance(request, Request) and request.path == "/_dps/link"
        self.server.send_response(self.server.accept(request))
        self.to_dialer()

    def hello(self) -> bytes:
        """Upgrade, send the listener's hello; the dialer's answer (its auth)."""
        self.upgrade()
        self.server.send_text(self.listener.hello().encode())
        self.to_dialer()
        [auth] = self.frames_to_server(Opcode.TEXT)
        return bytes(auth.data)

    def welcome(self) -> None:
        """The rest of the handshake: the listener's welcome, received by the dialer."""
        welcome = self.listener.receive(self.hello())
        assert welcome is not None
        self.server.send_text(welcome.encode())
        self.to_dialer()

    def open(self) -> LinkConnection:
        self.welcome()
        assert self.link.link is not None
        return self.link.link

    async def ended(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.link.done), 1.0)


def close_received(conn: Connection) -> tuple[int, str]:
    conn.to_server()
    close = conn.server.close_rcvd
    assert close is not None
    return close.code, close.reason


# The handshake


async def test_the_handshake_opens_the_link_and_hands_it_to_the_hub() -> None:
    conn = Connection(QUIET)
    link = conn.open()
    assert conn.hub.events == [("up", SERVER)]
    assert (link.peer, link.peer_linked_for) == (SERVER, LINKED_FOR)
    assert conn.link.failure is None
    received: list[LinkFrame] = []
    link.on_frame = received.append
    conn.server.send_binary(codec.subscribe(1, "t"))
    conn.to_dialer()
    assert received == [LinkSubscribe(1, "t")]
    link.send(codec.ack(1, 0))
    await asyncio.sleep(0)  # the batch leaves at the end of the loop's turn
    assert [f.data for f in conn.frames_to_server(Opcode.BINARY)] == [codec.ack(1, 0)]


async def test_an_open_link_reads_its_frames_however_they_are_cut() -> None:
    conn = Connection(QUIET)
    link = conn.open()
    assert conn.link.reading  # whole data frames are read here, not by websockets
    received: list[LinkFrame] = []
    link.on_frame = received.append
    conn.server.send_binary(codec.subscribe(1, "a"))
    conn.server.send_ping(b"p")
    conn.server.send_binary(codec.subscribe(2, "b" * 200))
    data = b"".join(conn.server.data_to_send())
    for byte in range(len(data)):
        conn.link.data_received(data[byte : byte + 1])
    assert received == [LinkSubscribe(1, "a"), LinkSubscribe(2, "b" * 200)]
    assert [f.data for f in conn.frames_to_server(Opcode.PONG)] == [b"p"]  # websockets'
    conn.server.send_frame(Frame(Opcode.BINARY, codec.subscribe(3, "c"), fin=False))
    conn.server.send_frame(Frame(Opcode.CONT, b""))
    conn.to_dialer()  # a fragmented message: websockets reads the link from then on
    assert not conn.link.reading
    assert received[-1] == LinkSubscribe(3, "c")


async def test_an_upgrade_refused_over_http_fails_the_attempt() -> None:
    conn = Connection(QUIET)
    assert len(conn.to_server()) == 1  # the upgrade request
    conn.server.send_response(conn.server.reject(403, "Forbidden"))
    conn.to_dialer()
    assert conn.link.failure == "refused the link with HTTP 403"
    assert conn.transport.aborted
    await conn.ended()
    assert conn.hub.events == []


@pytest.mark.parametrize(
    "peer",
    [
        Identity("ts-b", Role.TOPIC_SERVER, "inc-t"),
        Identity("ts-a", Role.GATEWAY, "inc-t"),
        Identity("é" * 255, Role.TOPIC_SERVER, "inc-t"),
    ],
    ids=["another topic server", "not a topic server", "a name too long for a close frame"],
)
async def test_a_peer_that_is_not_the_expected_topic_server_is_closed(peer: Identity) -> None:
    conn = Connection(QUIET, peer=peer)
    conn.welcome()  # who it is, the dialer learns from the welcome, once it proved the secret
    code, reason = close_received(conn)
    assert code == LinkClose.PROTOCOL_ERROR
    failure = f"expected topic server ts-a, found {peer.role} node {peer.name}"
    assert conn.link.failure == failure
    assert reason == close_reason(failure)  # the whole of it, when it fits
    assert conn.link.link is None
    conn.clock.advance(CLOSE_TIMEOUT - 0.5)
    assert not conn.transport.aborted
    conn.clock.advance(0.5)  # the peer never answered the close
    assert conn.transport.aborted
    await conn.ended()
    assert conn.hub.events == []


async def test_a_listener_that_does_not_know_the_secret_is_closed() -> None:
    conn = Connection(QUIET)
    nonce_l = orjson.loads(conn.listener.hello())["nonce"]
    nonce_d = orjson.loads(conn.hello())["nonce"]
    # An impostor cannot check the auth; it signs a welcome with the secret it has.
    mac = _mac(b"another secret", "welcome", nonce_l, nonce_d, *SERVER, LINKED_FOR)
    forged = {"welcome": VERSION, "identity": list(SERVER), "linked_for": LINKED_FOR, "mac": mac}
    conn.server.send_text(orjson.dumps(forged))
    conn.to_dialer()
    refusal = "the listener does not know the cluster secret"
    assert close_received(conn) == (LinkClose.AUTH_FAILED, refusal)
    assert conn.link.failure == refusal
    assert conn.hub.events == []
    assert conn.link.link is None


async def test_a_listener_that_refuses_the_dialer_ends_the_attempt_with_its_reason() -> None:
    conn = Connection(QUIET, peer_secret="another secret")
    conn.hello()
    conn.server.send_close(LinkClose.AUTH_FAILED, "ws-a does not know the cluster secret")
    conn.to_dialer()
    assert conn.link.failure == "ws-a does not know the cluster secret"
    assert close_received(conn)[0] == LinkClose.AUTH_FAILED  # the dialer answered the close
    conn.clock.advance(CLOSE_TIMEOUT)  # the server never closed the TCP connection
    assert conn.transport.aborted
    await conn.ended()
    assert conn.hub.events == []


async def test_closing_an_open_link_sends_the_code_and_aborts_if_never_answered() -> None:
    conn = Connection(QUIET)
    link = conn.open()
    link.close(LinkClose.QUEUE_FULL, "outbound queue full")
    assert close_received(conn) == (LinkClose.QUEUE_FULL, "outbound queue full")
    conn.clock.advance(CLOSE_TIMEOUT)
    assert conn.transport.aborted
    await conn.ended()
    assert conn.hub.events == [("up", SERVER), ("down", SERVER)]
    assert link.closed


# Whatever a listener without the secret sends, in any order.

HELLO = b"the listener's own hello"
server_messages = st.one_of(
    st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), st.binary(max_size=100)),
    st.tuples(st.just(Opcode.TEXT), wild_values.map(orjson.dumps)),
    st.tuples(st.just(Opcode.TEXT), st.just(HELLO)),
)


@given(st.lists(server_messages, min_size=1, max_size=4))
async def test_a_listener_without_the_secret_never_gets_linked_whatever_it_sends(
    sent: list[tuple[Opcode, bytes]],
) -> None:
    conn = Connection(QUIET, peer_secret=secrets.token_urlsafe())
    conn.upgrade()
    for opcode, data in sent:
        if data is HELLO:
            data = conn.listener.hello().encode()
        conn.server.send_frame(Frame(opcode, data))
        conn.to_dialer()
    assert (conn.link.link, conn.link.handshake.peer, conn.hub.events) == (None, None, [])
    closes = conn.frames_to_server(Opcode.CLOSE)
    assert len(closes) <= 1  # refused once, whatever came after
    if closes and Close.parse(closes[0].data).code >= 4000:
        close = Close.parse(closes[0].data)
        assert close.code in (LinkClose.AUTH_FAILED, LinkClose.PROTOCOL_ERROR)
        assert conn.link.failure is not None and close.reason == close_reason(conn.link.failure)


# Keep-alive


async def test_a_peer_that_answers_is_pinged_every_interval_and_kept() -> None:
    conn = Connection(KEEPALIVE)
    conn.open()
    for _ in range(40):  # 10 s, ten times the timeout
        conn.clock.advance(0.25)
        assert len(conn.frames_to_server(Opcode.PING)) == 1
        conn.to_dialer()  # the server's pong
    assert not conn.transport.aborted


async def test_a_silent_peer_is_declared_down_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = Connection(KEEPALIVE)
    conn.open()  # the last sound from the peer, at 0
    pings = 0
    for _ in range(4):
        conn.clock.advance(0.25)
        pings += len(conn.frames_to_server(Opcode.PING))
    assert pings == 4  # at 0.25, 0.5, 0.75 and 1.0: silent for the timeout, not more
    conn.clock.advance(0.25)  # 1.25: silent for longer; the verdict comes 10 ms later
    assert conn.frames_to_server(Opcode.PING) == []
    assert not conn.transport.aborted
    with caplog.at_level(logging.WARNING, logger="dps.link"):
        conn.clock.advance(0.01)
    assert conn.transport.aborted
    assert "link to ts-a: nothing heard for 1.3 s, declaring it down" in caplog.text
    await conn.ended()
    assert conn.hub.events == [("up", SERVER), ("down", SERVER)]
    assert conn.clock.pending == []  # no keep-alive left behind


async def test_after_a_stall_input_that_waited_is_heard_before_the_verdict() -> None:
    conn = Connection(KEEPALIVE)
    conn.open()
    conn.clock.stall(3.0)  # this process was frozen; the peer kept talking
    conn.clock.advance(0)  # on waking, the overdue keep-alive runs before the input
    assert conn.frames_to_server(Opcode.PING) == []
    conn.server.send_ping(b"")  # what the peer sent meanwhile
    conn.to_dialer()
    conn.clock.advance(0.01)
    assert not conn.transport.aborted
    assert len(conn.frames_to_server(Opcode.PING)) == 1  # the keep-alive carries on
    conn.clock.advance(0.25)
    assert len(conn.frames_to_server(Opcode.PING)) == 1


# Redialling


def test_backoff_doubles_per_failure_up_to_the_longest_pause_times_the_jitter() -> None:
    assert [backoff(n, 1.0) for n in range(1, 8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    )
    assert backoff(10_000, 1.0) == 2.0
    assert backoff(1, 0.5) == pytest.approx(0.05)
    assert backoff(4, 0.75) == pytest.approx(0.6)
    assert backoff(50, 0.5) == 1.0
