"""Ring moves with real processes: a third topic server takes its share of the topics, from
every gateway, and gives it back when it leaves (tests/test_router.py asserts the same
over 10,000 topics without processes; bench/ring_moves.py measures it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from app.ring import Ring, load
from tests.cluster.conftest import Node
from tests.support import Server, connect, eventually, get_json, http_post

pytestmark = pytest.mark.anyio

TOPICS = [f"move:{i}" for i in range(90)]  # within one socket's DPS_MAX_CHANNELS (100)
RING = """
[[topic_server]]
name = "ts-a"
[[topic_server]]
name = "ts-b"
[[topic_server]]
name = "ts-c"
"""


def gauge(server: Server, name: str) -> int:
    return int(get_json(server.http + "/cluster")["counters"][name])


def held(servers: dict[str, Server], shares: dict[str, int], gateways: int) -> Callable[[], bool]:
    """Whether each server holds exactly its share of the topics, from every gateway."""

    def check() -> bool:
        return all(
            (gauge(servers[name], "topics"), gauge(servers[name], "subscriptions"))
            == (count, count * gateways)
            for name, count in shares.items()
        )

    return check


async def test_a_third_server_takes_its_share_from_every_gateway_and_gives_it_back(
    node: Node, tmp_path: Path
) -> None:
    ring_file = tmp_path / "ring.toml"
    ring_file.write_text(RING)
    config = load(ring_file)
    two, three = Ring(config, ["ts-a", "ts-b"]), Ring(config, ["ts-a", "ts-b", "ts-c"])
    before = {name: sum(two.owner(t) == name for t in TOPICS) for name in ("ts-a", "ts-b")}
    after = {name: sum(three.owner(t) == name for t in TOPICS) for name in ("ts-a", "ts-b", "ts-c")}
    moved = [t for t in TOPICS if two.owner(t) != three.owner(t)]
    assert {three.owner(t) for t in moved} == {"ts-c"} and after["ts-c"] == len(moved) > 0

    env = {"DPS_RING": str(ring_file), "DPS_HANDOVER": "0.5"}
    servers = {name: node("ts", name, **env) for name in ("ts-a", "ts-b")}
    gateways = [node("ws", f"gw-{i}", **env) for i in (0, 1)]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(gw.ws())) for gw in gateways]
        for client in clients:
            for i, topic in enumerate(TOPICS, 1):
                await client.join(topic, join_ref=str(i))
        await eventually(held(servers, before, 2), "two servers hold every topic")

        servers["ts-c"] = node("ts", "ts-c", **env)
        await eventually(held(servers, after, 2), "ts-c took its share, the others gave it")
        message = {"topic": moved[0], "event": "e", "payload": {"via": "ts-c"}}
        status, body = await asyncio.to_thread(
            http_post, gateways[0].http + "/api/broadcast", message
        )
        assert (status, body["owner"]) == (200, "ts-c")
        index = str(TOPICS.index(moved[0]) + 1)
        for client in clients:
            assert await client.recv() == [index, None, moved[0], "e", {"via": "ts-c"}]

        servers.pop("ts-c").stop()
        await eventually(held(servers, before, 2), "ts-c's topics went back, nothing else moved")
