"""WebSocket frames read in one pass: the whole, unfragmented messages that nearly every
received frame is. Pure: bytes in, messages and offsets out.

websockets' sans-I/O parser reads each frame through a chain of generators (header, length,
mask, payload, each one a `yield from`), which costs more than the rest of a small
message's way through a gateway. `split` reads the common case directly: complete text and
binary frames with FIN set, masked when the peer is a client (`masked`), no larger than
`max_size`, without reserved bits (DPS negotiates no extension). It stops at any other
frame, and the caller hands that one to websockets:

- a control frame (ping, pong, close) alone, once it is complete: websockets answers it
  (or the connection does, `app.served.detached`), and this reader goes on after it;
- anything else (a fragment, a reserved opcode or bit, a wrong mask bit, a frame over
  `max_size` or a control frame over 125 bytes) with all that follows: websockets reads it,
  or refuses it as it always did, and reads the connection from then on.

The two readers share one stream, so websockets must stand at a frame boundary whenever
this one takes over. `complete` and `follow` follow the boundaries of what websockets
reads: the end of the last whole frame of any kind. `Partial` keeps a frame cut across
reads until it is whole. `payload` unmasks a whole frame's payload; `masked` frames a
message as a client sends it, for a link's dialling end.
"""

from __future__ import annotations

try:
    from websockets.speedups import apply_mask
except ImportError:  # a websockets built without its C extension
    from websockets.utils import apply_mask

TEXT = 0x1
BINARY = 0x2
FIN = 0x80
MASK = 0x80
CONTROL = 0x8  # opcodes from 8 on (close 8, ping 9, pong 10) are control frames
MAX_CONTROL = 125  # bytes of a control frame's payload (RFC 6455, 5.5)
PINGS_AND_CLOSES = frozenset((0x8, 0x9, 0xA))
# Bytes of a frame in progress followed while websockets reads (beyond: not followed, and
# websockets goes on reading the connection).
MAX_UNREAD = 65536

Messages = list[tuple[bytes, bool]]  # (payload, whether it is text)


def _bounds(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """The frame at `pos`: where its payload starts and ends, and its mask's offset (0 if
    unmasked); None while its header is incomplete."""
    size = len(data)
    if pos + 2 > size:
        return None
    second = data[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        start += 2
        if start > size:
            return None
        length = int.from_bytes(data[pos + 2 : start], "big")
    elif length == 127:
        start += 8
        if start > size:
            return None
        length = int.from_bytes(data[pos + 2 : start], "big")
    mask = 0
    if second & MASK:
        mask = start
        start += 4
    return start, start + length, mask


def split(data: bytes, masked: bool, max_size: int | None) -> tuple[Messages, int, int]:
    """The whole messages at the start of `data`, where they end (`end`), and what comes
    there: `end` again when the data ends (with nothing, or with the start of a frame
    this reader takes, to read once it is whole); the end of a complete control frame that
    starts at `end`, for websockets; or -1 for a frame left to websockets with all that
    follows."""
    messages: Messages = []
    size = len(data)
    pos = 0
    while pos < size:
        first = data[pos]
        opcode = first & 0x0F
        if first & 0x70 or (pos + 1 < size and bool(data[pos + 1] & MASK) is not masked):
            return messages, pos, -1  # reserved bits, or the wrong side's masking
        if opcode & CONTROL:
            if opcode not in PINGS_AND_CLOSES:
                return messages, pos, -1
        elif opcode not in (TEXT, BINARY) or not first & FIN:
            return messages, pos, -1  # a fragment, or a reserved opcode
        bounds = _bounds(data, pos)
        if bounds is None:
            return messages, pos, pos
        start, end, mask = bounds
        length = end - start
        if opcode & CONTROL:
            if length > MAX_CONTROL or not first & FIN:
                return messages, pos, -1
            if end > size:
                return messages, pos, pos
            return messages, pos, end
        if max_size is not None and length > max_size:
            return messages, pos, -1
        if end > size:
            return messages, pos, pos
        payload = data[start:end]
        if mask:
            payload = apply_mask(payload, data[mask:start])
        messages.append((payload, opcode == TEXT))
        pos = end
    return messages, pos, pos


class Partial:
    """The start of a frame cut across reads, and the reads after it, joined once the frame
    is whole: joined at every read, a large frame would be copied over and over."""

    __slots__ = ("chunks", "missing")

    def __init__(self, start: bytes) -> None:
        self.chunks = [start]
        bounds = _bounds(start, 0)
        # Bytes until the frame is whole; while its header is not, until the next read.
        self.missing = 1 if bounds is None else bounds[1] - len(start)

    def add(self, data: bytes) -> bytes | None:
        """All that was read since the frame started, once it may be whole (else None)."""
        self.chunks.append(data)
        self.missing -= len(data)
        return b"".join(self.chunks) if self.missing <= 0 else None


def payload(data: bytes) -> bytes:
    """The payload of the whole frame `data`, unmasked."""
    bounds = _bounds(data, 0)
    assert bounds is not None, "a whole frame"
    start, end, mask = bounds
    return apply_mask(data[start:end], data[mask:start]) if mask else data[start:end]


def masked(payload: bytes, key: bytes) -> bytes:
    """A binary frame with FIN set, masked with the 4 bytes of `key`, as a client sends it."""
    size = len(payload)
    if size < 126:
        head = bytes((FIN | BINARY, MASK | size))
    elif size < 65536:
        head = bytes((FIN | BINARY, MASK | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((FIN | BINARY, MASK | 127)) + size.to_bytes(8, "big")
    return head + key + apply_mask(payload, key)


def follow(unread: bytes, data: bytes) -> bytes | None:
    """What of a frame in progress is at the end of `unread` + `data`, given that `unread`
    starts a frame; None once that is more than MAX_UNREAD bytes (no longer followed)."""
    unread += data
    unread = unread[complete(unread) :]
    return unread if len(unread) <= MAX_UNREAD else None


def complete(data: bytes) -> int:
    """Where the last whole frame of `data`, of any kind, ends (0 if none is whole)."""
    pos = 0
    while True:
        bounds = _bounds(data, pos)
        if bounds is None or bounds[1] > len(data):
            return pos
        pos = bounds[1]
