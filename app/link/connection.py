"""One open node link, whichever end dialled it: batching, a bound, frame dispatch.

Frames sent during one turn of the event loop are joined and written as one WebSocket
message at the end of it, so a burst of publishes or deliveries costs one write per link,
not one per frame. The outbound queue of a link (the batch plus what the transport has not
written yet) is bounded by `limit` bytes: a peer that stops reading does not grow this
node's memory. At the bound the link is closed (and counted): the peer is declared down,
everything it held is purged on both sides and re-established when it redials, which is
what pg requires of a link (never drop a frame silently, drop the whole link instead).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.link import tls
from app.link.codec import LinkClose, LinkFrame, LinkFrameError, decode
from app.link.handshake import Identity
from app.settings import Settings, SettingsError

log = logging.getLogger("dps.link")


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How every link of a node behaves (from the DPS_CLUSTER_* and DPS_LINK_* settings)."""

    secret: str  # never empty: links are always authenticated
    queue_limit: int
    ping_interval: float
    ping_timeout: float
    tls: ssl.SSLContext | None = None  # a dialer's TLS context; set: links need TLS
    handshake_timeout: float = 10.0  # seconds a dialer has to prove the secret

    @classmethod
    def of(cls, settings: Settings) -> LinkOptions:
        """Raises `SettingsError` without a cluster secret, or for TLS files that cannot be
        loaded."""
        secret = settings.cluster_secret
        if secret is None:
            raise SettingsError("DPS_CLUSTER_SECRET: required for node links")
        return cls(
            secret=secret.get_secret_value(),
            queue_limit=settings.link_queue,
            ping_interval=settings.link_timeout / 4,
            ping_timeout=settings.link_timeout,
            tls=tls.client_context(settings),
            handshake_timeout=settings.handshake_timeout,
        )


class Writer(Protocol):
    """The I/O end of a link: one WebSocket connection."""

    def write_message(self, data: bytes) -> None:
        """Write one binary message now (no await)."""
        ...

    def buffered(self) -> int:
        """Bytes written but not yet sent."""
        ...

    def close(self, code: int, reason: str) -> None: ...


class LinkConnection:
    __slots__ = (
        "_batch",
        "_loop",
        "_scheduled",
        "closed",
        "limit",
        "on_frame",
        "on_overflow",
        "peer",
        "peer_linked_for",
        "writer",
    )

    def __init__(
        self,
        peer: Identity,
        writer: Writer,
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self.peer = peer
        self.peer_linked_for = 0.0  # from the listener's hello, seen by the dialer
        self.writer = writer
        self.limit = limit
        self.on_overflow = on_overflow
        self.on_frame: Callable[[LinkFrame], None] = lambda frame: None
        self.closed = False
        self._batch: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        self._batch.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def queued(self) -> int:
        """Bytes waiting to leave: the pending batch and the transport's buffer."""
        return sum(map(len, self._batch)) + (0 if self.closed else self.writer.buffered())

    def _flush(self) -> None:
        self._scheduled = False
        if self.closed or not self._batch:
            return
        data = b"".join(self._batch)
        self._batch.clear()
        if self.writer.buffered() + len(data) > self.limit:
            log.warning(
                "closing link to %s: more than %d bytes queued, the peer is not reading",
                self.peer.name,
                self.limit,
            )
            self.on_overflow()
            self.close(LinkClose.QUEUE_FULL, "outbound queue full")
            return
        self.writer.write_message(data)

    def receive(self, data: bytes) -> None:
        """Dispatch every frame of one received batch, in order. A batch that does not
        decode, a frame its handler refuses (`LinkFrameError`: a frame this role never
        receives) or one its handler fails on (a bug, or a shape nothing else caught)
        closes the link with PROTOCOL_ERROR and one log line: pg needs the link down
        rather than a frame lost, and the peer relinks to a clean state. A link closed
        takes nothing more: what a peer sends after it broke the protocol, or after this
        end gave up on it, is not acted upon (it is reported down before long)."""
        if self.closed:
            return
        on_frame = self.on_frame
        try:
            for frame in decode(data):
                on_frame(frame)
        except LinkFrameError as exc:
            log.error("closing link to %s: %s", self.peer.name, exc)
            self.close(LinkClose.PROTOCOL_ERROR, str(exc))
        except Exception as exc:
            log.error("closing link to %s: a frame failed: %s", self.peer.name, _describe(exc))
            self.close(LinkClose.PROTOCOL_ERROR, "a frame could not be handled")

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._batch.clear()
        self.writer.close(code, reason)


def _describe(exc: Exception) -> str:
    """`exc` in one bounded line, whatever it holds (it may quote the peer's data)."""
    try:
        text = str(exc)
    except Exception:  # a message that cannot even be made, e.g. of data nested too deep
        text = "(no message)"
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text[:200]}"
