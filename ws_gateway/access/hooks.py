"""Application hooks: the gateway asks the application's backend over HTTP.

For rules that say "hook" (and for every new socket when DPS_HOOK_CONNECT=1) the gateway
POSTs JSON to `{DPS_HOOK_URL}/connect`, `/join` or `/publish` and reads the verdict:

    200 {"allow": true}                         allowed
    200 {"allow": true, "payload": {...}}       allowed, with this payload (publish only)
    200 {"allow": false, "reason": "..."}       refused; the reason reaches the client

Anything else (a refused connection, a timeout, another status, a body of another shape)
fails closed: the verdict is "hook unavailable", counted and logged at most once a second.
One pooled client serves every call; at most DPS_HOOK_CONCURRENCY calls are in flight, and
DPS_HOOK_TIMEOUT bounds each call, its wait for a free slot included.

The client is aiohttp's: measured against the same hook on this project's benchmark
machine, a call cost the gateway 90 to 160 µs of CPU with aiohttp and 870 to 2,500 µs with
httpx (whose pool slows down as calls in flight grow), which capped a gateway at about
400 hook calls a second.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

import aiohttp
import orjson

from app.counters import Counters
from app.throttled_log import ThrottledLog
from ws_gateway import payloads

log = logging.getLogger("dps.hooks")

UNAVAILABLE = "hook unavailable"


class Verdict(NamedTuple):
    allow: bool
    reason: str | None = None  # why it was refused
    payload: bytes | None = None  # a publish's replacement payload (a JSON object), if any


REFUSED = Verdict(False, UNAVAILABLE)


def parse(status: int, body: bytes, replaceable: bool, max_depth: int) -> Verdict | None:
    """The verdict an answer carries, or None when the answer is not one. A replacement
    payload is kept as the hook's own bytes, bounded in depth as clients' payloads are."""
    if status != 200:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("allow"), bool):
        return None
    reason, payload = value.get("reason"), value.get("payload")
    if reason is not None and not isinstance(reason, str):
        return None
    if payload is None:
        return Verdict(value["allow"], reason)
    if not (replaceable and isinstance(payload, dict)):
        return None
    raw = payloads.member(body, "payload")
    if payloads.too_deep(raw, payload, max_depth):
        return None
    return Verdict(value["allow"], reason, raw)


class Hooks:
    def __init__(
        self, url: str, timeout: float, concurrency: int, max_depth: int, counters: Counters
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_depth = max_depth
        self.concurrency = concurrency
        self.counters = counters
        self.slots = asyncio.Semaphore(concurrency)
        self.session: aiohttp.ClientSession | None = None  # made on first use, in the loop
        self.failed = ThrottledLog(log, logging.WARNING)

    async def ask(self, kind: str, body: dict[str, Any]) -> Verdict:
        """POST `body` to the `kind` hook; never raises."""
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency)
            self.session = aiohttp.ClientSession(connector=connector, json_serialize=_json)
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.slots,
                self.session.post(f"{self.url}/{kind}", json=body) as response,
            ):
                status, content = response.status, await response.read()
            verdict = parse(status, content, kind == "publish", self.max_depth)
            problem = f"answered {status} {content[:100]!r}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            verdict, problem = None, f"{type(exc).__name__} {exc}".strip()
        if verdict is None:
            self.counters.hook_failures += 1
            self.failed("%s hook at %s failed closed: %s", kind, self.url, problem)
            return REFUSED
        return verdict

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
