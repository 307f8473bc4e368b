"""A node's dashboard at work: the viewers of its page and, while there are any, the
collector that sends each of them a frame every TICK.

Nothing runs while nobody watches. The first viewer starts the collector. Each tick it
takes this node's snapshot, asks every other known node for its own (`GET /dashboard/node`,
all at once, each within POLL_TIMEOUT), hands them all to the view, and writes the one
encoded frame to every viewer; the last viewer to leave stops it. So dashboards open on
a node cost one request per other node per second however many they are, plus a small
write to each, and a node that stops answering shows as down within TICK + POLL_TIMEOUT.

The other nodes are those with a lease in Redis (with REDIS_URL), else the topic servers
ring.toml gives an address, and any node the view still lists: one that went down is
asked again every tick until it answers or the view forgets it.

A viewer whose browser stops reading is not waited for: once VIEWER_QUEUE frames wait
for it, its stream ends (and its browser's EventSource reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.dashboard.access import PEER_HEADER, peer_token
from app.dashboard.snapshot import snapshot
from app.dashboard.view import TICK, ClusterView, Missing, Snapshot, Status, readable
from app.discovery import leases
from app.link import tls
from app.ops import Node
from app.ring import RingConfig
from app.settings import Role, Settings

log = logging.getLogger("dps.dashboard")

NODE_PATH = "/dashboard/node"
POLL_TIMEOUT = 0.8  # seconds another node has to answer, each tick
MAX_VIEWERS = 16  # dashboards one node streams to at once
VIEWER_QUEUE = 8  # frames that may wait for one viewer
RETRY_MS = 1000  # how soon a browser reconnects a stream that ended


def event(name: str, data: Any) -> bytes:
    """One server-sent event (orjson writes no newline, so the data is one line)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass(frozen=True, slots=True)
class Peer:
    role: str
    address: str  # host:port, where it serves HTTP (and links)


class Viewer:
    """One open dashboard: the frames waiting to be written to its stream; None ends it."""

    __slots__ = ("ended", "frames")

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue(VIEWER_QUEUE)
        self.ended = False

    def send(self, data: bytes) -> None:
        if self.ended:
            return
        try:
            self.frames.put_nowait(data)
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        while not self.frames.empty():
            self.frames.get_nowait()
        self.frames.put_nowait(None)


class Dashboard:
    def __init__(self, node: Node, settings: Settings, ring: RingConfig | None) -> None:
        self.node = node
        self.settings = settings
        self.ring = ring
        self.view = ClusterView(node.name, ring)
        self.viewers: set[Viewer] = set()
        self.peers: dict[str, Peer] = {}
        self.latest: bytes | None = None  # the last frame, for a viewer that just came
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> Snapshot:
        return snapshot(self.node, time.time())

    def join(self) -> Viewer | None:
        """A new viewer, sent the history and the latest frame; None when MAX_VIEWERS are
        open already."""
        if len(self.viewers) >= MAX_VIEWERS:
            return None
        viewer = Viewer()
        viewer.send(b"retry: %d\n" % RETRY_MS + event("history", self.view.history()))
        if self.latest is not None:
            viewer.send(self.latest)
        self.viewers.add(viewer)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers and self._task is not None:
            self._task.cancel()
            self._task = None
            self.latest = None

    def end_all(self) -> None:
        """End every viewer's stream (the server is stopping)."""
        for viewer in self.viewers:
            viewer.end()

    async def _run(self) -> None:
        secret = self.settings.cluster_secret
        headers = {PEER_HEADER: peer_token(secret)} if secret is not None else {}
        context = tls.client_context(self.settings)
        url = self.settings.redis_url
        redis = (
            None
            if url is None
            else Redis.from_url(
                url, socket_timeout=POLL_TIMEOUT, socket_connect_timeout=POLL_TIMEOUT
            )
        )
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
                while True:
                    started = loop.time()
                    await self._tick(session, redis, context)
                    await asyncio.sleep(max(0.0, TICK - (loop.time() - started)))
        except Exception:
            log.exception("the dashboard's collector failed; its viewers are disconnected")
            self._task = None  # the next viewer starts a new one
            self.end_all()
        finally:
            if redis is not None:
                await redis.aclose()

    async def _tick(
        self, session: aiohttp.ClientSession, redis: Redis | None, context: ssl.SSLContext | None
    ) -> None:
        asked = {name: peer for name, peer in self.peers.items() if name != self.node.name}
        discovery = asyncio.ensure_future(self._discover(redis))
        answers = await asyncio.gather(
            *(self._poll(session, name, peer, context) for name, peer in asked.items())
        )
        found = await discovery
        now = time.time()
        view = self.view
        view.observe(self.node.name, self.node.role, self.snapshot(), now)
        for (name, peer), seen in zip(asked.items(), answers, strict=True):
            view.observe(name, peer.role, seen, now)
        view.prune(now)
        known = {name: peer for name, peer in self.peers.items() if name in view.nodes}
        self.peers = {**known, **found}
        self.latest = event("frame", view.frame(now))
        for viewer in self.viewers:
            viewer.send(self.latest)

    async def _discover(self, redis: Redis | None) -> dict[str, Peer]:
        if redis is not None:
            try:
                records = await leases(redis)
            except (RedisError, OSError):
                return {}  # Redis away: the nodes known already are still asked
            return {name: Peer(r.role, r.address) for name, r in records.items()}
        if self.ring is None:
            return {}
        return {
            name: Peer(Role.TOPIC_SERVER, server.address)
            for name, server in self.ring.servers.items()
            if server.address is not None
        }

    async def _poll(
        self,
        session: aiohttp.ClientSession,
        name: str,
        peer: Peer,
        context: ssl.SSLContext | None,
    ) -> Snapshot | Missing:
        # With TLS links, a topic server serves its whole port over TLS; gateways never do.
        secure: ssl.SSLContext | bool = True
        if context is not None and peer.role == Role.TOPIC_SERVER:
            secure = context
        url = f"{'http' if secure is True else 'https'}://{peer.address}{NODE_PATH}"
        try:
            async with session.get(url, ssl=secure) as response:
                if response.status == 401:
                    return Missing(Status.REFUSED, "refused: it has another DPS_CLUSTER_SECRET")
                if response.status != 200:
                    return Missing(Status.DOWN, f"{NODE_PATH} answered {response.status}")
                seen = orjson.loads(await response.read())
        except TimeoutError:
            return Missing(Status.DOWN, f"no answer within {POLL_TIMEOUT:g} s")
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno
            return Missing(Status.DOWN, f"cannot connect: {os.strerror(errno) if errno else exc}")
        except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            return Missing(Status.DOWN, f"no snapshot: {exc.__class__.__name__}")
        if not readable(seen) or seen["node"] != name:
            return Missing(Status.DOWN, f"{peer.address} did not answer as {name}")
        answer: Snapshot = seen
        return answer
