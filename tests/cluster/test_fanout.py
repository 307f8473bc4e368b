"""Fan-out across gateways: the project's three-gateway demo and Manifold's property."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from app.ring import Ring, load
from tests.cluster.conftest import Node
from tests.support import ROOT, Client, Server, connect, get_json, http_post

pytestmark = pytest.mark.anyio


def counter(server: Server, name: str) -> int:
    return int(get_json(server.http + "/cluster")["counters"][name])


async def test_three_gateway_demo(node: Node) -> None:
    node("ts", "ts-a")
    node("ts", "ts-b")
    alice, bob, carol = node("ws", "alice"), node("ws", "bob"), node("ws", "carol")
    plan = [(alice, "user_created", 1), (alice, "user_updated", 1), (bob, "user_created", 5)]
    plan.append((carol, "user_updated", 2))
    sockets: dict[str, list[Client]] = {"user_created": [], "user_updated": []}
    async with contextlib.AsyncExitStack() as stack:
        for server, topic, count in plan:
            for _ in range(count):
                client = await stack.enter_async_context(connect(server.ws()))
                await client.join(topic)
                sockets[topic].append(client)
        created = {"topic": "user_created", "event": "created", "payload": {"id": 1}}
        status, _ = await asyncio.to_thread(http_post, alice.http + "/api/broadcast", created)
        assert status == 200
        for client in sockets["user_created"]:
            assert await client.recv() == ["1", None, "user_created", "created", {"id": 1}]
        for client in sockets["user_updated"]:
            await client.expect_silence(0.2)
        updated = {"topic": "user_updated", "event": "updated", "payload": {"id": 2}}
        status, _ = await asyncio.to_thread(http_post, bob.http + "/api/broadcast", updated)
        assert status == 200
        for client in sockets["user_updated"]:
            assert await client.recv() == ["1", None, "user_updated", "updated", {"id": 2}]
        for client in sockets["user_created"] + sockets["user_updated"]:
            await client.expect_silence(0.2)
        received = sum(counter(s, "socket_deliveries") for s in (alice, bob, carol))
        assert received == 1 + 5 + 1 + 2


@pytest.mark.parametrize("subscribers", [3, 30])
async def test_one_publish_is_one_deliver_per_gateway(node: Node, subscribers: int) -> None:
    servers = {"ts-a": node("ts", "ts-a"), "ts-b": node("ts", "ts-b")}
    gateways = [node("ws", f"gw-{i}") for i in range(3)]
    topic = "rooms:manifold"
    owner = servers[Ring(load(ROOT / "ring.toml"), servers).owner(topic) or ""]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i in range(subscribers):
            client = await stack.enter_async_context(connect(gateways[i % len(gateways)].ws()))
            await client.join(topic)
            clients.append(client)
        before = counter(owner, "gateway_deliveries_sent")
        message = {"topic": topic, "event": "e", "payload": {}}
        status, body = await asyncio.to_thread(
            http_post, gateways[0].http + "/api/broadcast", message
        )
        assert (status, body["owner"]) == (200, owner.env["DPS_NODE"])
        for client in clients:
            assert (await client.recv())[3] == "e"
        assert counter(owner, "gateway_deliveries_sent") - before == len(gateways)
        assert [counter(g, "gateway_deliveries_received") for g in gateways] == [1, 1, 1]
