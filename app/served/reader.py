"""The reading half of a WebSocket connection's protocol, shared by both ends of every
connection DPS holds: client sockets and the links' listening ends (`app.served.detached`)
and the links' dialling ends (`app.link.dialer`).

websockets' sans-I/O parser reads a connection until it stands at a frame boundary; from
then on the whole, unfragmented data frames that nearly every frame is are read in one
pass (`app.served.frames.split`), and websockets is handed what it must see: control frames
(it answers pings and runs the closing handshake) one at a time, and anything unusual (a
fragment, a reserved bit, a frame over the size limit) with all that follows, after which
it reads the connection again for good, or refuses it as it always did.

While websockets reads, `unread` follows its frame boundaries: the bytes of the frame in
progress at the end of what it was given, or None when they are not known (then
websockets reads on). The switch happens when it is b"" and the connection allows it.
"""

from __future__ import annotations

import asyncio

from app.served import frames


class FrameReader(asyncio.Protocol):
    __slots__ = ("partial", "reading", "unread")

    def __init__(self) -> None:
        self.unread: bytes | None = None
        self.reading = False  # whether this class reads the frames
        self.partial: frames.Partial | None = None  # a frame cut across reads

    # What a connection's protocol provides
    def _parse(self, data: bytes) -> None:
        """Hand `data` to websockets, and act on what it reads."""
        raise NotImplementedError

    def _message(self, data: bytes, text: bool) -> None:
        """A whole message read by either reader."""
        raise NotImplementedError

    def _control(self, data: bytes) -> None:
        """A whole ping, pong or close frame read here: websockets answers it."""
        self._parse(data)

    def _reads_whole(self) -> bool:
        """Whether whole frames may be read here now (the connection is open, and what
        its messages are for is ready)."""
        raise NotImplementedError

    def _limits(self) -> tuple[bool, int | None]:
        """Whether the peer masks its frames (a client does), and the largest message."""
        raise NotImplementedError

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        if self.reading:
            partial = self.partial
            if partial is not None:
                whole = partial.add(data)
                if whole is None:
                    return
                self.partial, data = None, whole
            self._read(data)
            return
        self._parse(data)
        self.follow(data)

    def follow(self, data: bytes) -> None:
        """websockets has been given `data` (after the bytes whose frame boundaries are
        known): follow them, and read whole frames here once it stands at one."""
        if self.unread is None:
            return
        self.unread = unread = frames.follow(self.unread, data)
        if unread == b"" and self._reads_whole():
            self.reading = True

    def _read(self, data: bytes) -> None:
        masked, max_size = self._limits()
        while self._reads_whole():
            messages, end, following = frames.split(data, masked, max_size)
            for message, text in messages:
                self._message(message, text)
            if following == end:
                if end < len(data):
                    self.partial = frames.Partial(data[end:])
                return
            data = data[end:]
            if following < 0:
                break
            self._control(data[: following - end])
            data = data[following - end :]
        self.reading = False  # websockets reads from here on
        self.unread = None
        if data:
            self._parse(data)
