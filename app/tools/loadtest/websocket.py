"""A minimal RFC 6455 client protocol for many cheap connections on one event loop.

An `asyncio.Protocol` that does the opening handshake, then splits the byte stream into
frames in place: a complete text or binary message reaches `on_message(buf, start, end)` as
a window on the receive buffer, not copied and not decoded, so a subclass can recognise it
with `bytes.find` alone. Server-to-client frames are unmasked (a masked one is a protocol
error); every frame this client sends is masked with a fresh random key, as the RFC requires.

A frame whose body has not all arrived waits as a list of chunks, joined once it is whole
(`held`), so that a large message (a presence_state of a busy topic) costs one copy, not
one per chunk.

States: CONNECTING (TCP) -> HANDSHAKE (request sent) -> OPEN -> CLOSED. A connection that
never reaches OPEN ends with `on_failed(kind)`; an open one ends with `on_closed(code)`,
where `code` is the server's close code, or None when the TCP connection just dropped.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import os
import random
import struct
from typing import cast

from websockets.speedups import apply_mask

from app.tools.loadtest.options import Target

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 16384
NORMAL_CLOSURE = 1000
PROTOCOL_ERROR = 1002

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class ClientState(enum.Enum):
    CONNECTING = 0
    HANDSHAKE = 1
    OPEN = 2
    CLOSED = 3


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One masked, unfragmented client frame."""
    if key is None:
        key = random.getrandbits(32).to_bytes(4, "big")
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, size)
    return head + key + apply_mask(payload, key)


class WebSocketClient(asyncio.Protocol):
    def __init__(self, target: Target) -> None:
        self.target = target
        self.state = ClientState.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.buf = b""
        self.held: list[bytes] | None = None  # the chunks of an incomplete frame so far
        self.have = 0  # bytes in `held`
        self.need = 0  # bytes the incomplete frame has in all
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.close_sent = False

    # Subclass hooks.
    def on_open(self) -> None:
        """The handshake completed."""

    def on_failed(self, kind: str) -> None:
        """The connection never opened; `kind` names why (e.g. handshake_403)."""

    def on_message(self, buf: bytes, start: int, end: int) -> None:
        """One complete text or binary message: `buf[start:end]`."""

    def on_closed(self, code: int | None) -> None:
        """An open connection ended: the server's close code, or None if it just dropped."""

    # asyncio.Protocol.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.state = ClientState.HANDSHAKE
        host = self.target.host
        host = f"[{host}]" if ":" in host else host
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.target.path.encode(), host.encode(), self.target.port, self.key)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        state, self.state = self.state, ClientState.CLOSED
        if state is ClientState.HANDSHAKE:
            self.on_failed("handshake_eof")
        elif state is ClientState.OPEN:
            self.on_closed(None)

    def data_received(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
            self.have += len(data)
            if self.have < self.need:
                return
            data, self.held = b"".join(self.held), None
        elif self.buf:
            data = self.buf + data
        if self.state is not ClientState.OPEN:
            rest = self._handshake(data)
            if rest is None:
                return
            data = rest
        pos, size = 0, len(data)
        while size - pos >= 2:
            b1 = data[pos + 1]
            if b1 < 126:
                start = pos + 2
                end = start + b1
            elif b1 == 126:
                if size - pos < 4:
                    break
                start = pos + 4
                end = start + ((data[pos + 2] << 8) | data[pos + 3])
            elif b1 == 127:
                if size - pos < 10:
                    break
                start = pos + 10
                end = start + int.from_bytes(data[pos + 2 : pos + 10], "big")
            else:
                self._fail_open(PROTOCOL_ERROR, "masked server frame")
                return
            if end > size:
                self.held, self.have, self.need = [data[pos:]], size - pos, end - pos
                self.buf = b""
                return
            b0 = data[pos]
            if b0 == 0x81 or b0 == 0x82:
                self.on_message(data, start, end)
            elif not self._other_frame(b0, data, start, end):
                return
            pos = end
        self.buf = data[pos:] if pos < size else b""

    # Sending.
    def send_text(self, payload: bytes) -> None:
        transport = self.transport
        if self.state is ClientState.OPEN and transport is not None and not self.close_sent:
            transport.write(mask_frame(OP_TEXT, payload))

    def close(self, code: int = NORMAL_CLOSURE) -> None:
        """Start the closing handshake (or drop a connection that is not open yet)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.state is ClientState.OPEN and not self.close_sent:
            self.close_sent = True
            transport.write(mask_frame(OP_CLOSE, code.to_bytes(2, "big")))
        else:
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def give_up(self, kind: str) -> None:
        """A connection that is not open yet is abandoned and counted as failed (`kind`)."""
        if self.state in (ClientState.CONNECTING, ClientState.HANDSHAKE):
            self.state = ClientState.CLOSED
            self.abort()
            self.on_failed(kind)

    # Internals.
    def _handshake(self, data: bytes) -> bytes | None:
        """Consume the HTTP response: what follows it (the first frames), or None if not open."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HANDSHAKE:
                self._fail_handshake("handshake_too_long")
            else:
                self.buf = data
            return None
        lines = data[:end].split(b"\r\n")
        status = lines[0].split(b" ", 2)
        code = status[1].decode(errors="replace") if len(status) > 1 else "?"
        if code != "101":
            self._fail_handshake(f"handshake_{code}")
            return None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"sec-websocket-accept") != accept_key(self.key):
            self._fail_handshake("handshake_bad_accept")
            return None
        self.state = ClientState.OPEN
        self.buf = b""
        self.on_open()
        return data[end + 4 :]

    def _fail_handshake(self, kind: str) -> None:
        self.state = ClientState.CLOSED
        self.buf = b""
        if self.transport is not None:
            self.transport.close()
        self.on_failed(kind)

    def _fail_open(self, code: int, reason: str) -> None:
        self.buf = b""
        self.close(code)
        self.state = ClientState.CLOSED
        if self.transport is not None:
            self.transport.close()
        self.on_closed(code)

    def _other_frame(self, b0: int, data: bytes, start: int, end: int) -> bool:
        """Fragments and control frames; False when the connection is over."""
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT) and not b0 & 0x70:
            if opcode != OP_CONT:
                self.fragments, self.fragment_opcode = [], opcode
            self.fragments.append(bytes(data[start:end]))
            if fin:
                message = b"".join(self.fragments)
                self.fragments = []
                self.on_message(message, 0, len(message))
            return True
        if opcode == OP_PING:
            if self.transport is not None and not self.close_sent:
                self.transport.write(mask_frame(OP_PONG, bytes(data[start:end])))
            return True
        if opcode == OP_PONG:
            return True
        if opcode == OP_CLOSE:
            code = int.from_bytes(data[start : start + 2], "big") if end - start >= 2 else 1005
            if not self.close_sent and self.transport is not None:
                self.close_sent = True
                self.transport.write(mask_frame(OP_CLOSE, data[start : start + 2]))
            self.state = ClientState.CLOSED
            self.buf = b""
            if self.transport is not None:
                self.transport.close()
            self.on_closed(code)
            return False
        self._fail_open(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        return False
