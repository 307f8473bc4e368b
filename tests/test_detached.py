"""`app.served.detached.DetachedWebSocket` without a socket: a transport that records what is
written, websockets' client protocol on the other side, and a manual clock for the
keep-alive. The handover from uvicorn is tested on a real server in `test_websocket.py`.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from app.counters import Counters
from app.served.detached import GOING_AWAY, HANG_UP_GRACE, DetachedWebSocket
from app.served.keepalive import KeepAlive
from tests.clock import FakeClock

INTERVAL, TIMEOUT, IDLE, CLOSE_TIMEOUT = 20.0, 10.0, 60.0, 5.0
MAX_SIZE = 1000


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Receiver:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.ends = 0

    def received(self, data: bytes, text: bool) -> None:
        self.messages.append((data, text))

    def closed(self) -> None:
        self.ends += 1


@pytest.fixture(params=[b"", None], ids=["whole-frames", "websockets"])
def unread(request: pytest.FixtureRequest) -> bytes | None:
    """What the socket knows of websockets' frame boundaries at the handover: b"" (at one:
    the socket reads whole frames itself, `app.served.reader`) or None (not known: websockets
    reads every frame)."""
    value: bytes | None = request.param
    return value


class Fixture:
    def __init__(
        self,
        unread: bytes | None,
        idle: float | None = IDLE,
        queued: tuple[tuple[bytes, bool], ...] = (),
    ):
        self.clock = FakeClock(1000.0)
        self.counters = Counters()
        self.keepalive: KeepAlive[DetachedWebSocket] = KeepAlive(
            self.clock, self.counters, INTERVAL, TIMEOUT, idle, CLOSE_TIMEOUT
        )
        self.transport = Transport()
        self.connections: set[asyncio.Protocol] = set()
        self.sock = DetachedWebSocket(
            self.keepalive,
            self.transport,  # type: ignore[arg-type]
            ServerProtocol(state=OPEN),
            ("10.0.0.1", 5000),
            self.connections,
            MAX_SIZE,
            unread,
        )
        self.connections.add(self.sock)
        self.receiver = Receiver()
        self.sock.start(self.receiver, list(queued))
        self.client = ClientProtocol(parse_uri("ws://dps/socket"), state=OPEN)

    def send(self, *frames: Frame) -> None:
        """The client sends `frames`, all at once."""
        for frame in frames:
            self.client.send_frame(frame)
        self.sock.data_received(b"".join(self.client.data_to_send()))

    def frames(self) -> list[Frame]:
        """What the server wrote since last time, as the client reads it."""
        data, self.transport.written = bytes(self.transport.written), bytearray()
        self.client.receive_data(data)
        return [e for e in self.client.events_received() if isinstance(e, Frame)]

    def close_frame(self) -> Close:
        [frame] = self.frames()
        assert frame.opcode is Opcode.CLOSE
        return Close.parse(frame.data)

    def lost(self) -> None:
        self.sock.connection_lost(None)


def test_messages_go_to_the_receiver_queued_first_fragments_joined(unread: bytes | None) -> None:
    f = Fixture(unread, queued=((b"early", True),))
    f.send(
        Frame(Opcode.TEXT, b"hello"),
        Frame(Opcode.BINARY, b"\x00\x01"),
        Frame(Opcode.TEXT, b"frag", fin=False),
        Frame(Opcode.CONT, b"men", fin=False),
        Frame(Opcode.CONT, b"ted"),
    )
    assert f.receiver.messages == [
        (b"early", True),
        (b"hello", True),
        (b"\x00\x01", False),
        (b"fragmented", True),
    ]
    f.send(Frame(Opcode.BINARY, b"bi", fin=False))
    f.send(Frame(Opcode.CONT, b"nary"))
    assert f.receiver.messages[-1] == (b"binary", False)


def test_websockets_protocol_is_dropped_while_whole_frames_are_read(
    unread: bytes | None,
) -> None:
    """An idle socket reading whole frames keeps no websockets protocol: pings and pongs
    are answered without it, and it is made again for a frame it must read."""
    f = Fixture(unread)
    assert (f.sock.conn is None) is (unread == b"")
    f.send(Frame(Opcode.PING, b"ping"), Frame(Opcode.TEXT, b"hello"))
    f.clock.advance(INTERVAL + INTERVAL / 8)
    [pong, ping] = f.frames()
    f.send(Frame(Opcode.PONG, ping.data))
    assert (pong.opcode, pong.data, ping.opcode) == (Opcode.PONG, b"ping", Opcode.PING)
    assert (f.sock.conn is None) is (unread == b"")
    f.send(Frame(Opcode.TEXT, b"frag", fin=False), Frame(Opcode.CONT, b"ment"))
    assert f.sock.conn is not None and not f.sock.reading  # websockets reads on
    assert f.receiver.messages == [(b"hello", True), (b"fragment", True)]
    f.clock.advance(INTERVAL * 2)  # pinged, the pong never comes: closed with 1011
    assert [frame.opcode for frame in f.frames()] == [Opcode.PING, Opcode.CLOSE]


def test_a_ping_is_answered(unread: bytes | None) -> None:
    f = Fixture(unread)
    f.send(Frame(Opcode.PING, b"are you there"))
    [pong] = f.frames()
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"are you there")


def test_pinged_every_interval_after_the_pong(unread: bytes | None) -> None:
    f = Fixture(unread, idle=None)
    for _ in range(3):
        f.clock.advance(INTERVAL - 0.01)
        assert f.frames() == []
        f.clock.advance(INTERVAL / 8)  # a ping is at most an eighth of the interval late
        [ping] = f.frames()
        assert ping.opcode is Opcode.PING
        f.clock.advance(1.0)
        f.send(Frame(Opcode.PONG, b"not the ping's"))  # ignored
        f.send(Frame(Opcode.PONG, ping.data))
    f.clock.advance(TIMEOUT * 3)
    assert not f.transport.closed


def test_no_pong_in_time_closes_with_1011(unread: bytes | None) -> None:
    f = Fixture(unread, idle=None)
    f.clock.advance(INTERVAL + INTERVAL / 8)
    assert [frame.opcode for frame in f.frames()] == [Opcode.PING]
    f.clock.advance(TIMEOUT - 0.01 - INTERVAL / 8)
    assert f.frames() == [] and not f.transport.closed
    f.clock.advance(TIMEOUT / 8)
    assert f.close_frame() == Close(1011, "keepalive ping timeout")
    assert f.transport.closed
    f.lost()
    assert f.receiver.ends == 1 and f.connections == set()


def test_a_socket_that_sends_nothing_is_closed_at_the_ping_after_the_idle_timeout(
    unread: bytes | None,
) -> None:
    f = Fixture(unread)

    def answer_pings(seconds: float) -> None:
        for _ in range(int(seconds)):
            f.clock.advance(1.0)
            for ping in f.frames():
                f.send(Frame(Opcode.PONG, ping.data))

    answer_pings(IDLE - 10.0)  # pongs do not count
    f.send(Frame(Opcode.TEXT, b"heartbeat"))  # a message does
    answer_pings(IDLE - 1.0)
    assert not f.transport.closed
    f.clock.advance(INTERVAL + INTERVAL / 8)
    assert f.close_frame() == Close(1000, "idle: no message for 60 s")
    assert f.counters.sockets_idle_closed == 1


def test_close_now_sends_one_close_and_aborts_a_client_that_never_answers(
    unread: bytes | None,
) -> None:
    f = Fixture(unread)
    f.transport.pause_reading()  # as a held session would have it
    f.sock.close_now(1013, "slow consumer")
    f.sock.close_now(1013, "twice")  # a second call does nothing
    assert f.sock.closing and f.transport.reading  # reads the client's close reply
    f.send(Frame(Opcode.TEXT, b"too late"))  # sent before the client saw the close
    assert f.receiver.messages == []
    assert f.close_frame() == Close(1013, "slow consumer")  # and its answer never sent
    f.clock.advance(CLOSE_TIMEOUT + 1.0)
    assert f.transport.aborted
    assert f.frames() == []  # no ping after the close


def test_a_close_answered_ends_the_closing_handshake(unread: bytes | None) -> None:
    f = Fixture(unread)
    f.sock.close_now(1000, "bye")
    f.send(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
    assert f.transport.closed and not f.transport.aborted
    f.lost()
    f.clock.advance(CLOSE_TIMEOUT + 1.0)
    assert not f.transport.aborted
    assert f.receiver.ends == 1


def test_hang_up_stops_reading_and_aborts_after_the_grace(unread: bytes | None) -> None:
    f = Fixture(unread)
    f.sock.close_now(1008, "flood", hang_up=True)
    assert f.close_frame() == Close(1008, "flood")
    assert not f.transport.reading
    f.clock.advance(HANG_UP_GRACE)
    assert f.transport.aborted


def test_the_client_closing_gets_its_close_answered(unread: bytes | None) -> None:
    f = Fixture(unread)
    f.send(Frame(Opcode.CLOSE, Close(1001, "leaving").serialize()))
    assert f.close_frame() == Close(1001, "leaving")
    assert f.transport.closed
    f.lost()
    f.lost()  # the end is told once
    assert f.receiver.ends == 1


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        (Close(1000, "bye").serialize(), Close(1000, "bye")),  # echoed
        (b"", Close(1005, "")),  # no code: the answer carries none either
        (Close(3999, "").serialize(), Close(3999, "")),
        (b"\x03\xe7", 1002),  # code 999: a protocol error, in websockets' words
        (b"\x03\xe8\xff", 1007),  # a reason that is not UTF-8
    ],
)
def test_a_close_is_answered_as_websockets_answers_it(
    unread: bytes | None, payload: bytes, answer: Close | int
) -> None:
    f = Fixture(unread)
    f.send(Frame(Opcode.CLOSE, payload), Frame(Opcode.TEXT, b"after"), Frame(Opcode.PING, b""))
    close = f.close_frame()  # and nothing for what came after the close
    assert close == answer if isinstance(answer, Close) else close.code == answer
    assert f.transport.closed and f.receiver.messages == []


def test_a_frame_that_breaks_the_protocol_closes_with_the_reason(unread: bytes | None) -> None:
    f = Fixture(unread)
    f.sock.data_received(b"\x81\x05hello")  # unmasked, from a client
    assert f.close_frame().code == 1002
    assert f.transport.closed and f.receiver.messages == []


def test_shutdown_closes_with_going_away(unread: bytes | None) -> None:
    f = Fixture(unread)
    f.sock.shutdown()
    assert f.close_frame() == Close(GOING_AWAY, "server shutting down")
    assert f.transport.closed


@pytest.mark.parametrize("closed_first", [False, True])
def test_a_lost_connection_has_nothing_more_to_do(unread: bytes | None, closed_first: bool) -> None:
    f = Fixture(unread)
    if closed_first:
        f.sock.close_now(1000, "bye")
        f.frames()
    f.lost()
    assert f.sock.due is None and f.keepalive.deadlines.slots == {}
    f.clock.advance(INTERVAL * 10)
    assert f.frames() == [] and not f.transport.aborted
