"""`app.served.frames`, without sockets: the frames it reads and where it stops. That a
connection reading with it reads exactly what websockets' own parser does, however the
bytes are cut, is `test_reader.py`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol

from app.served.frames import Partial, complete, masked, split

MAX = 1000


def wire(opcode: Opcode, data: bytes, fin: bool = True, masked: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=masked)


def test_whole_text_and_binary_frames_are_messages() -> None:
    data = wire(Opcode.TEXT, b"[1]") + wire(Opcode.BINARY, b"\x00\x01") + wire(Opcode.TEXT, b"")
    assert split(data, True, MAX) == ([(b"[1]", True), (b"\x00\x01", False), (b"", True)], 23, 23)


def test_unmasked_frames_when_the_peer_is_a_server() -> None:
    data = wire(Opcode.BINARY, b"x" * 300, masked=False)  # a 16-bit length
    assert split(data, False, None) == ([(b"x" * 300, False)], len(data), len(data))
    big = wire(Opcode.BINARY, b"y" * 70_000, masked=False)  # a 64-bit length
    assert split(big, False, None)[0] == [(b"y" * 70_000, False)]


def test_an_incomplete_frame_waits_for_the_rest() -> None:
    first, second = wire(Opcode.TEXT, b"a" * 200), wire(Opcode.TEXT, b"b")
    for cut in range(1, len(second)):
        assert split(first + second[:cut], True, MAX) == ([(b"a" * 200, True)], 208, 208)


def test_a_control_frame_is_given_back_whole() -> None:
    ping = wire(Opcode.PING, b"p")
    data = wire(Opcode.TEXT, b"a") + ping + wire(Opcode.TEXT, b"b")
    assert split(data, True, MAX) == ([(b"a", True)], 7, 7 + len(ping))
    assert split(data[: 7 + len(ping) - 1], True, MAX) == ([(b"a", True)], 7, 7)  # not whole


@pytest.mark.parametrize(
    "frame",
    [
        wire(Opcode.TEXT, b"a", fin=False),  # a fragment
        wire(Opcode.CONT, b"a"),
        wire(Opcode.TEXT, b"a", masked=False),  # a client must mask
        bytes([0x83, 0x81]) + bytes(5),  # a reserved opcode
        bytes([0xC1, 0x81]) + bytes(5),  # a reserved bit (no extension was negotiated)
        wire(Opcode.TEXT, b"a" * (MAX + 1))[:20],  # over the limit, refused before the rest
        bytes([0x89, 0xFE, 0x00, 0x7E]),  # a ping over 125 bytes, refused at its header
        bytes([0x09, 0x80]) + bytes(4),  # a fragmented ping
    ],
)
def test_frames_left_to_websockets_with_all_that_follows(frame: bytes) -> None:
    data = wire(Opcode.TEXT, b"a") + frame + wire(Opcode.TEXT, b"b")
    assert split(data, True, MAX) == ([(b"a", True)], 7, -1)


def test_complete_is_the_end_of_the_last_whole_frame_of_any_kind() -> None:
    data = wire(Opcode.TEXT, b"a", fin=False) + wire(Opcode.PING, b"") + wire(Opcode.CONT, b"b")
    assert complete(data) == len(data)
    assert complete(data + wire(Opcode.TEXT, b"c")[:3]) == len(data)
    assert complete(b"\x81") == 0


@given(st.binary(max_size=70_000), st.binary(min_size=4, max_size=4))
def test_masked_is_a_frame_websockets_reads_from_a_client(payload: bytes, key: bytes) -> None:
    server = Protocol(SERVER, state=OPEN, max_size=None)
    server.receive_data(masked(payload, key))
    [frame] = server.events_received()
    assert (frame.opcode, frame.data, frame.fin) == (Opcode.BINARY, payload, True)


def test_a_frame_cut_across_many_reads_is_joined_once_whole() -> None:
    data = wire(Opcode.BINARY, b"z" * 100_000)
    cut = Partial(data[:1])  # not even its header yet
    assert cut.add(data[1:3]) == data[:3]  # the header may be whole: try
    cut = Partial(data[:20])  # its header (14 bytes) whole: the frame's size is known
    pieces = [data[i : i + 1000] for i in range(20, len(data), 1000)]
    assert [cut.add(piece) for piece in pieces[:-1]] == [None] * (len(pieces) - 1)
    assert cut.add(pieces[-1]) == data
