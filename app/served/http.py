"""A served HTTP connection: uvicorn's httptools protocol, with a deadline and a cap.

uvicorn holds a connection that never finishes its request for as long as the client
likes: a slow (or silent) client can hold descriptors until none is left for anyone else.
Here every request's head (an upgrade's included) must arrive within `handshake_timeout`
of the connection or of the request's first byte, else the connection gets a 408 and is
closed. A body is the application's to time (`read_body`). And beyond `max_connections`
open connections, a new one is answered 503 and closed before anything else is done, so
that the descriptors kept in reserve stay free for node links and the operations
endpoints. Both are counted, and logged at most once a second.

A response that never ends by itself (a stream of server-sent events) would hold a server
shutdown for uvicorn's whole graceful timeout: uvicorn waits for every response in
progress. This protocol is in each request's ASGI scope extensions, so such a response
can set `on_shutdown` and end when the server starts to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import Enum
from typing import ClassVar

from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.counters import Counters
from app.throttled_log import ThrottledLog

log = logging.getLogger("dps.served")

EXTENSION = "dps.http"

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class ServedHttp(HttpToolsProtocol):
    # Set on the subclass `configured` makes, one per node.
    handshake_timeout: ClassVar[float]
    max_connections: ClassVar[int]
    counters: ClassVar[Counters]
    refused: ClassVar[ThrottledLog]

    deadline: asyncio.TimerHandle | None = None
    on_shutdown: Callable[[], None] | None = None  # the request in progress's, if it set one

    @classmethod
    def configured(
        cls, handshake_timeout: float, max_connections: int, counters: Counters
    ) -> type[ServedHttp]:
        attributes = {
            "handshake_timeout": handshake_timeout,
            "max_connections": max_connections,
            "counters": counters,
            "refused": ThrottledLog(log, logging.WARNING),
        }
        return type("ConfiguredHttp", (cls,), attributes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.counters.connections_refused += 1
            self.refused(
                "refused a connection from %s: %d connections open (the cap keeps descriptors "
                "for node links and health checks; see DPS_MAX_SOCKETS)",
                self.client[0] if self.client else "?",
                len(self.connections) - 1,
            )
            transport.write(BUSY)
            transport.close()
            return
        self._start_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.on_shutdown = None
        # The protocol itself, as `app.served.websocket` puts its own in a WebSocket's scope.
        self.scope["extensions"] = {EXTENSION: self}  # type: ignore[dict-item]
        if self.deadline is None:
            self._start_deadline()

    def on_headers_complete(self) -> None:
        self._stop_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        on_shutdown, self.on_shutdown = self.on_shutdown, None
        if on_shutdown is not None:
            on_shutdown()
        super().shutdown()

    def _start_deadline(self) -> None:
        self.deadline = self.loop.call_later(self.handshake_timeout, self._too_slow)

    def _stop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        self.counters.handshake_timeouts += 1
        self.refused(
            "closed a connection from %s: no complete request within DPS_HANDSHAKE_TIMEOUT (%g s)",
            self.client[0] if self.client else "?",
            self.handshake_timeout,
        )
        self.transport.write(TIMED_OUT)
        self.transport.close()


class BodyRefused(Enum):
    """Why a request's body was not read."""

    TOO_LARGE = "too large"
    TOO_SLOW = "too slow"


async def read_body(request: Request, limit: int, timeout: float) -> bytes | BodyRefused:
    """The request's body, at most `limit` bytes (a larger Content-Length is refused before
    anything is read) that arrive within `timeout` seconds; else why not. A client that goes
    away meanwhile raises Starlette's `ClientDisconnect`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return BodyRefused.TOO_LARGE
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    return BodyRefused.TOO_LARGE
    except TimeoutError:
        return BodyRefused.TOO_SLOW
    return bytes(data)
