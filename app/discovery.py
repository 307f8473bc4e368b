"""Discovery and liveness: every node's lease in Redis, or the addresses in ring.toml.

Each node keeps a key `dps:node:<name>` holding its role, incarnation and link address,
set with an expiry of `ttl` seconds and renewed every `ttl / 6`; the same loop reads every
node's key and hands the live set to the role. A node whose key has expired is gone.

Redis is the control plane only. While it is unreachable nothing is reported, so links
that exist stay up and traffic flows; each node re-registers as soon as Redis answers
again. A Redis that restarted empty must not make every node look dead, so an absent key
only counts once Redis has answered for a whole `ttl`, long enough for every live node to
have renewed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("dps.discovery")

PREFIX = "dps:node:"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    role: str
    incarnation: str
    address: str


# The live nodes by name, and whether an absent node may be taken as gone.
OnNodes = Callable[[dict[str, NodeRecord], bool], None]


class Registry:
    def __init__(self, url: str, me: NodeRecord, ttl: float, on_nodes: OnNodes) -> None:
        self.me = me
        self.ttl = ttl
        self.on_nodes = on_nodes
        self.redis = Redis.from_url(
            url, socket_timeout=ttl / 3, socket_connect_timeout=ttl / 3, health_check_interval=0
        )
        self.reachable_since: float | None = None
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        key, value = PREFIX + self.me.name, orjson.dumps(asdict(self.me))
        while True:
            try:
                await self.redis.set(key, value, px=int(self.ttl * 1000))
                nodes = await self._read()
            except (RedisError, OSError) as exc:
                if self.reachable_since is not None or not self.registered.is_set():
                    log.warning("Redis unavailable (%s); links stay as they are", exc)
                self.reachable_since = None
                self.registered.set()  # serve without Redis rather than wait for it
            else:
                now = loop.time()
                if self.reachable_since is None:
                    log.info("registered in Redis as %s", self.me.name)
                    self.reachable_since = now
                self.registered.set()
                self.on_nodes(nodes, now - self.reachable_since >= self.ttl)
            await asyncio.sleep(self.ttl / 6)

    async def _read(self) -> dict[str, NodeRecord]:
        keys = [key async for key in self.redis.scan_iter(match=PREFIX + "*", count=1000)]
        nodes = {}
        for raw in await self.redis.mget(keys) if keys else []:
            if raw is None:
                continue  # expired between the scan and the read
            try:
                record = NodeRecord(**orjson.loads(raw))
            except (TypeError, orjson.JSONDecodeError):
                log.warning("ignoring a malformed entry under %s*: %r", PREFIX, raw)
                continue
            nodes[record.name] = record
        return nodes

    async def close(self) -> None:
        """Stop renewing and withdraw this node's lease (if it is still this incarnation's)."""
        if self._task is not None:
            self._task.cancel()
        try:
            key = PREFIX + self.me.name
            current = await self.redis.get(key)
            if current is not None and orjson.loads(current).get("incarnation") == (
                self.me.incarnation
            ):
                await self.redis.delete(key)
        except (RedisError, OSError):
            pass
        await self.redis.aclose()
