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
from enum import Enum
from typing import NamedTuple

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


class RedisState(Enum):
    STARTING = "starting"  # no round has ended yet
    ANSWERING = "answering"  # every round since `Liveness.since` has had an answer
    UNREACHABLE = "unreachable"


class Round(NamedTuple):
    """What one round of the registry loop leads to."""

    report: tuple[dict[str, NodeRecord], bool] | None  # for the role's OnNodes, if anything
    news: bool  # Redis started or stopped answering: worth one log line


class Liveness:
    """What this node may conclude from Redis's answers, round after round (pure: the time
    of each answer is an input).

        STARTING, UNREACHABLE --answered(now)--> ANSWERING since now    (news)
        ANSWERING             --answered(now)--> ANSWERING
        STARTING, ANSWERING   --unreachable()--> UNREACHABLE            (news)
        UNREACHABLE           --unreachable()--> UNREACHABLE

    - An answer is reported with the nodes read; an absent node counts as gone only once
      Redis has answered for a whole `ttl`, long enough for every live node to renew.
    - An unreachable Redis reports nothing: links that exist stay as they are.
    - The node is registered once its first round has ended, either way: it serves
      without Redis rather than wait for it.
    """

    __slots__ = ("since", "state", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.state = RedisState.STARTING
        self.since = 0.0

    @property
    def registered(self) -> bool:
        return self.state is not RedisState.STARTING

    def answered(self, now: float, nodes: dict[str, NodeRecord]) -> Round:
        news = self.state is not RedisState.ANSWERING
        if news:
            self.state = RedisState.ANSWERING
            self.since = now
        return Round((nodes, now - self.since >= self.ttl), news)

    def unreachable(self) -> Round:
        news = self.state is not RedisState.UNREACHABLE
        self.state = RedisState.UNREACHABLE
        return Round(None, news)


class Registry:
    """Renews this node's lease and reads everyone's, every `ttl / 6`; `Liveness` decides
    what each round means."""

    def __init__(self, url: str, me: NodeRecord, ttl: float, on_nodes: OnNodes) -> None:
        self.me = me
        self.ttl = ttl
        self.on_nodes = on_nodes
        self.redis = Redis.from_url(
            url, socket_timeout=ttl / 3, socket_connect_timeout=ttl / 3, health_check_interval=0
        )
        self.liveness = Liveness(ttl)
        self._task: asyncio.Task[None] | None = None

    @property
    def registered(self) -> bool:
        return self.liveness.registered

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        key, value = PREFIX + self.me.name, orjson.dumps(asdict(self.me))
        while True:
            try:
                await self.redis.set(key, value, px=int(self.ttl * 1000))
                nodes = await leases(self.redis)
            except (RedisError, OSError) as exc:
                outcome = self.liveness.unreachable()
                if outcome.news:
                    log.warning("Redis unavailable (%s); links stay as they are", exc)
            else:
                outcome = self.liveness.answered(loop.time(), nodes)
                if outcome.news:
                    log.info("registered in Redis as %s", self.me.name)
            if outcome.report is not None:
                self.on_nodes(*outcome.report)
            await asyncio.sleep(self.ttl / 6)

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


async def leases(redis: Redis) -> dict[str, NodeRecord]:
    """Every node's lease that Redis holds now, by name (malformed entries logged, skipped)."""
    keys = [key async for key in redis.scan_iter(match=PREFIX + "*", count=1000)]
    nodes = {}
    for raw in await redis.mget(keys) if keys else []:
        if raw is None:
            continue  # expired between the scan and the read
        try:
            record = NodeRecord(**orjson.loads(raw))
        except (TypeError, orjson.JSONDecodeError):
            log.warning("ignoring a malformed entry under %s*: %r", PREFIX, raw)
            continue
        nodes[record.name] = record
    return nodes
