"""The dialling end of node links: connect, authenticate, keep alive, redial.

`DialedLink` is one connection: an asyncio protocol around the `websockets` library's
sans-I/O client, so that received batches are handled as they arrive and sent batches
are written without an await, like the listening end (`app.served.detached`). Once the
link is open it reads whole data frames itself (`app.served.reader`) and hands websockets
the rest, and it frames its batches itself: websockets' parser and serializer
cost more per batch than a small batch's frames. It pings the peer every `ping_interval`
and declares it down when nothing at all has been heard for `ping_timeout`: a peer that
hangs (SIGSTOP, a lost network) is noticed, not only one that closes its socket.

`Dialer` keeps one peer linked: it redials with exponential backoff and jitter after a
failure or a lost link, for as long as the peer is wanted (`backoff`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from functools import partial
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame as WebSocketFrame
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import CONNECTING, OPEN
from websockets.uri import parse_uri

from app.clock import Clock, Timer
from app.discovery import NodeRecord
from app.link.codec import LinkClose
from app.link.connection import LinkConnection, LinkOptions
from app.link.handshake import Handshake, HandshakeError, HandshakeState
from app.link.hub import LinkHub
from app.ring import RingConfig
from app.served import frames
from app.served.detached import close_reason
from app.served.reader import FrameReader
from app.settings import Role

log = logging.getLogger("dps.link")

LINK_PATH = "/_dps/link"
CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close reply before aborting
CONNECT_TIMEOUT = 2.0
BACKOFF = (0.05, 2.0)  # base and longest pause between attempts, before jitter
STABLE = 10.0  # a link that lived this long resets the backoff
VERDICT_DELAY = 0.01
END_OF_RESPONSE = b"\r\n\r\n"
MASK_KEYS = 4096  # bytes of randomness drawn at a time for the masks of sent frames


def backoff(failures: int, jitter: float) -> float:
    """Seconds to wait before the next attempt after `failures` (at least 1) in a row: the
    base doubled per failure up to the longest pause, times `jitter` (drawn from [0.5, 1]),
    so that gateways that lost the same peer do not all redial it at the same moment."""
    base, ceiling = BACKOFF
    return min(ceiling, base * 2.0 ** min(failures, 16)) * jitter


class DialedLink(FrameReader):
    def __init__(
        self,
        url: str,
        handshake: Handshake,
        expect: str,
        hub: LinkHub,
        options: LinkOptions,
        clock: Clock,
    ) -> None:
        super().__init__()
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.handshake = handshake
        self.expect = expect
        self.hub = hub
        self.options = options
        self.clock = clock
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.link: LinkConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.last_heard = clock.time()
        self.timer: Timer | None = None
        self.failure: str | None = None
        self.keys = b""  # random bytes for the masks of the frames to send, from `key_at` on
        self.key_at = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ws.send_request(self.ws.connect())
        self._flush()
        self.timer = self.clock.call_later(self.options.ping_interval, self._keepalive)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.clock.time()
        if self.ws.state is not CONNECTING:
            super().data_received(data)
            return
        self._parse(data)
        if self.ws.state is OPEN:  # the frames start after the response
            end = data.find(END_OF_RESPONSE)
            if end >= 0:
                self.unread = b""
                self.follow(data[end + len(END_OF_RESPONSE) :])

    def eof_received(self) -> None:
        self.ws.receive_eof()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.link is not None:
            self.link.closed = True
            self.hub.link_down(self.link)
        if not self.done.done():
            self.done.set_result(None)

    # app.link.connection.Writer
    def write_message(self, data: bytes) -> None:
        if self.ws.state is OPEN and self.transport is not None:  # not once a close went
            at = self.key_at
            if at == len(self.keys):
                self.keys, at = os.urandom(MASK_KEYS), 0
            self.key_at = at + 4
            self.transport.write(frames.masked(data, self.keys[at : at + 4]))

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport else 0

    def close(self, code: int, reason: str) -> None:
        if self.transport is None or self.transport.is_closing() or self.ws.state is not OPEN:
            return  # not connected, or a close went either way already
        self.ws.send_close(code, close_reason(reason))
        self._flush()
        self.clock.call_later(CLOSE_TIMEOUT, self._abort)

    # app.served.reader.FrameReader
    def _reads_whole(self) -> bool:
        return self.link is not None and self.ws.state is OPEN

    def _limits(self) -> tuple[bool, int | None]:
        return False, None

    def _parse(self, data: bytes) -> None:
        """Hand `data` to websockets, and act on what it reads."""
        self.ws.receive_data(data)
        self._flush()
        for event in self.ws.events_received():
            if isinstance(event, WebSocketFrame):
                self._frame(event)
            elif isinstance(event, Response) and event.status_code != 101:
                self._fail(f"refused the link with HTTP {event.status_code}")
                return
        if self.ws.close_expected():
            self.clock.call_later(CLOSE_TIMEOUT, self._abort)

    def _frame(self, frame: WebSocketFrame) -> None:
        if frame.opcode is Opcode.BINARY or frame.opcode is Opcode.TEXT:
            self._message(bytes(frame.data), frame.opcode is Opcode.TEXT)
        elif frame.opcode is Opcode.CLOSE:
            close = self.ws.close_rcvd
            if close is not None and close.code >= 4000:
                self.failure = close.reason

    def _message(self, data: bytes, text: bool) -> None:
        if not text:
            if self.link is not None:
                self.link.receive(data)
        else:
            self._handshake(data)

    def _handshake(self, data: bytes) -> None:
        if self.failure is not None:
            return  # refused already: what the peer says next changes nothing
        try:
            reply = self.handshake.receive(data)
            peer = self.handshake.peer  # known only once it proved the secret
            if peer is not None and (
                peer.name != self.expect or peer.role is not Role.TOPIC_SERVER
            ):
                raise HandshakeError(
                    LinkClose.PROTOCOL_ERROR,
                    f"expected topic server {self.expect}, found {peer.role} node {peer.name}",
                )
        except HandshakeError as exc:
            self.failure = exc.reason
            self.close(exc.code, exc.reason)
            return
        if reply is not None:
            self.ws.send_text(reply.encode())
            self._flush()
        if self.handshake.state is HandshakeState.OPEN and self.link is None:
            assert peer is not None
            self.link = LinkConnection(peer, self, self.options.queue_limit, self.hub.overflowed)
            self.link.peer_linked_for = self.handshake.peer_linked_for
            self.hub.link_up(self.link)

    def _keepalive(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.clock.time() - self.last_heard > self.options.ping_timeout:
            # After a stall of this process, timers can run before the pending input is
            # read: give the input one more chance before judging the peer.
            self.timer = self.clock.call_later(VERDICT_DELAY, self._verdict)
            return
        self.ws.send_ping(b"")
        self._flush()
        self.timer = self.clock.call_later(self.options.ping_interval, self._keepalive)

    def _verdict(self) -> None:
        silent = self.clock.time() - self.last_heard
        if silent <= self.options.ping_timeout:
            self._keepalive()
            return
        peer = self.link.peer.name if self.link else self.expect
        log.warning("link to %s: nothing heard for %.1f s, declaring it down", peer, silent)
        self._abort()

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()


class Dialer:
    """Keeps `hub` linked to the topic server `peer` at `address` until stopped."""

    def __init__(
        self, hub: LinkHub, options: LinkOptions, peer: str, address: str, clock: Clock
    ) -> None:
        self.hub = hub
        self.options = options
        self.peer = peer
        self.address = address
        self.clock = clock
        self.current: DialedLink | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        self._task.cancel()
        if self.current is not None and self.current.link is not None:
            self.current.link.close(1001, "peer left the cluster")

    def _connect(self, url: str) -> DialedLink:
        options = self.options
        self.current = DialedLink(
            url,
            Handshake(self.hub.local, options.secret, listener=False),
            self.peer,
            self.hub,
            options,
            self.clock,
        )
        return self.current

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            host, _, port = self.address.rpartition(":")
            started = self.clock.time()
            try:
                tls = self.options.tls
                url = f"{'ws' if tls is None else 'wss'}://{self.address}{LINK_PATH}"
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        partial(self._connect, url),
                        host.strip("[]"),
                        int(port),
                        ssl=tls,
                        server_hostname=None if tls is None else host.strip("[]"),
                    ),
                    CONNECT_TIMEOUT,
                )
                await protocol.done
                if protocol.failure:
                    log.error("link to %s at %s: %s", self.peer, self.address, protocol.failure)
                elif protocol.link is not None and self.clock.time() - started > STABLE:
                    failures = 0
            except (OSError, TimeoutError) as exc:
                if failures == 0:
                    log.warning("cannot link to %s at %s: %s", self.peer, self.address, exc)
            finally:
                self.current = None
            failures += 1
            await asyncio.sleep(backoff(failures, random.uniform(0.5, 1.0)))


class Dialers:
    """Keeps `hub` linked to every declared topic server it should dial (`wanted`): those
    with a live lease in Redis (`discovered`), or else those with an address in ring.toml
    (`from_ring`). A server whose address changes is redialled; one whose lease expired is
    unlinked."""

    def __init__(
        self,
        hub: LinkHub,
        options: LinkOptions,
        clock: Clock,
        ring: RingConfig,
        wanted: Callable[[str], bool],
    ) -> None:
        self.hub = hub
        self.options = options
        self.clock = clock
        self.ring = ring
        self.wanted = wanted
        self.dialers: dict[str, Dialer] = {}
        self.alive: set[str] = set()  # wanted topic servers with a live lease

    def from_ring(self) -> None:
        for server in self.ring.servers.values():
            if server.address is not None and self.wanted(server.name):
                self._dial(server.name, server.address)

    def discovered(self, nodes: dict[str, NodeRecord], absence_counts: bool) -> None:
        servers = {
            name: record
            for name, record in nodes.items()
            if record.role == Role.TOPIC_SERVER and name in self.ring.servers and self.wanted(name)
        }
        self.alive = set(servers)
        for name, record in servers.items():
            dialer = self.dialers.get(name)
            if dialer is not None and dialer.address != record.address:
                dialer.stop()
                dialer = None
            if dialer is None:
                self._dial(name, record.address)
        if absence_counts:
            for name in set(self.dialers) - set(servers):
                log.warning("the lease of %s expired: unlinking it", name)
                self.dialers.pop(name).stop()

    def stop(self) -> None:
        for dialer in self.dialers.values():
            dialer.stop()

    def _dial(self, name: str, address: str) -> None:
        self.dialers[name] = Dialer(self.hub, self.options, name, address, self.clock)
