"""`app.served.reader.FrameReader` without sockets: whatever the frames (fragments, pings,
closes, frames websockets refuses), however the bytes are cut across reads, and wherever
the handover from websockets happens, a connection reads what websockets alone would read,
and websockets is left in the state it alone would be in."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import CLIENT, OPEN, SERVER, Protocol

from app.served import frames
from app.served.reader import FrameReader

MAX = 1000

Event = tuple[Opcode, bytes, bool]


class Reading(FrameReader):
    """A connection's protocol over websockets' own, recording what it reads."""

    def __init__(self, masked: bool, unread: bytes | None) -> None:
        super().__init__()
        self.unread = unread
        self.masked = masked
        self.ws = Protocol(SERVER if masked else CLIENT, state=OPEN, max_size=MAX)
        self.read: list[Event] = []
        self.whole = 0  # messages this class read itself

    def _parse(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self.read.extend(events(self.ws))

    def _message(self, data: bytes, text: bool) -> None:
        self.whole += 1
        self.read.append((Opcode.TEXT if text else Opcode.BINARY, data, True))

    def _reads_whole(self) -> bool:
        return self.ws.state is OPEN

    def _limits(self) -> tuple[bool, int | None]:
        return self.masked, MAX


def events(ws: Protocol) -> list[Event]:
    return [(e.opcode, bytes(e.data), e.fin) for e in ws.events_received() if isinstance(e, Frame)]


def written(ws: Protocol) -> list[Event]:
    """The frames `ws` would send (their masks differ), as the peer reads them."""
    peer = Protocol(CLIENT if ws.side is SERVER else SERVER, state=OPEN, max_size=None)
    peer.receive_data(b"".join(ws.data_to_send()))
    return events(peer)


def wire(opcode: Opcode, data: bytes, fin: bool, masked: bool) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=masked)


data_frames = st.tuples(
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]), st.binary(max_size=300), st.just(True)
)
fragmented = st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), st.binary(max_size=50)).map(
    lambda f: [(f[0], f[1], False), (Opcode.CONT, f[1], True)]
)
controls = st.tuples(
    st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125), st.just(True)
)
sent_frames = st.lists(
    st.one_of(data_frames.map(lambda f: [f]), controls.map(lambda f: [f]), fragmented),
    max_size=8,
).map(lambda groups: [f for group in groups for f in group])
# What may end the stream: nothing, a close, or a frame websockets refuses (too large, a
# reserved bit, the wrong side's masking).
endings = st.sampled_from(["none", "close", "too large", "reserved bit", "wrong mask"])


def ending(kind: str, masked: bool) -> bytes:
    if kind == "close":
        return wire(Opcode.CLOSE, Close(1000, "bye").serialize(), True, masked)
    if kind == "too large":
        return wire(Opcode.BINARY, b"x" * (MAX + 1), True, masked)
    if kind == "reserved bit":
        return bytes([0xC1]) + wire(Opcode.TEXT, b"rsv1", True, masked)[1:]
    if kind == "wrong mask":
        return wire(Opcode.TEXT, b"mask", True, not masked)
    return b""


@given(
    sent_frames,
    endings,
    st.lists(st.integers(0, 4000), max_size=6),
    st.integers(0, 4000),
    st.booleans(),
)
def test_a_connection_reads_what_websockets_alone_reads(
    sent: list[Event], end: str, cuts: list[int], handover: int, masked: bool
) -> None:
    data = b"".join(wire(op, payload, fin, masked) for op, payload, fin in sent)
    data += ending(end, masked)

    alone = Protocol(SERVER if masked else CLIENT, state=OPEN, max_size=MAX)
    alone.receive_data(data)
    expected = events(alone)

    # websockets was given the first `handover` bytes before the reader took over (as
    # uvicorn gives it what follows the request), the reader following its boundaries.
    handover = min(handover, len(data))
    reading = Reading(masked, None)
    reading._parse(data[:handover])
    reading.unread = frames.follow(b"", data[:handover])
    reading.follow(b"")
    points = sorted({handover, len(data), *(c for c in cuts if handover < c < len(data))})
    for begin, stop in itertools.pairwise(points):
        reading.data_received(data[begin:stop])

    assert reading.read == expected
    assert reading.ws.state is alone.state
    assert reading.ws.parser_exc.__class__ is alone.parser_exc.__class__
    assert written(reading.ws) == written(alone)  # pongs, close replies
    assert reading.partial is None  # nothing left half-read
    if handover == 0 and sent and sent[0][0] is not Opcode.PING and sent[0][0] is not Opcode.PONG:
        assert reading.whole > 0 or not sent[0][2]  # read here, unless it was a fragment


def test_whole_frames_are_read_here_from_the_first_boundary() -> None:
    text = wire(Opcode.TEXT, b"hello", True, True)
    reading = Reading(True, b"")
    reading.follow(b"")
    assert reading.reading
    reading.data_received(text + text[:3])  # a frame, and the start of the next
    reading.data_received(text[3:])
    assert reading.whole == 2 and reading.read == [(Opcode.TEXT, b"hello", True)] * 2


def test_unknown_boundaries_leave_every_frame_to_websockets() -> None:
    reading = Reading(True, None)
    reading.data_received(wire(Opcode.TEXT, b"hello", True, True))
    assert not reading.reading and reading.whole == 0
    assert reading.read == [(Opcode.TEXT, b"hello", True)]
