"""Presence across a cluster, as the official phoenix.js `Presence` shows it: clients on two
gateways see each other in list(), leave, update, open a second tab; a kill -9 of the
topic's owner changes nobody's list(); a kill -9 of a gateway takes its users out of the
others' lists within 2 s, in one diff.

Each client is its own phoenix_client.js process (scenario "presence"), on one gateway,
driven over its stdin; it prints its list() at every onSync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.test_phoenix_js import Line, NodeClient, node_client
from tests.cluster.conftest import Node
from tests.cluster.test_failover import topic_owned_by
from tests.support import Server, eventually, get_json

pytestmark = pytest.mark.anyio

CHANNELS = '[[channel]]\ntopic = "rooms:*"\npresence = true\n'
GONE_WITHIN = 2.0  # seconds: a dead gateway's users leave everyone's list by then
SERVER_KEYS = ("phx_ref", "online_at", "phx_ref_prev")

# A list() as the test compares it: key -> the metas without the server's keys, sorted.
Seen = dict[str, list[dict[str, Any]]]


def seen(line: Line) -> Seen:
    return {
        entry["key"]: sorted(
            ({k: v for k, v in meta.items() if k not in SERVER_KEYS} for meta in entry["metas"]),
            key=json.dumps,
        )
        for entry in line["list"]
    }


def refs(line: Line) -> dict[str, set[str]]:
    return {entry["key"]: {meta["phx_ref"] for meta in entry["metas"]} for entry in line["list"]}


def syncs(run: NodeClient) -> list[Line]:
    return [line for line in run.lines if line.get("event") == "sync"]


async def sees(run: NodeClient, expected: Seen) -> Line:
    """The client's list() is `expected` now, or becomes it."""
    done = syncs(run)
    if done and seen(done[-1]) == expected:
        return done[-1]
    return await run.expect(
        f"the list {expected}", lambda line: line.get("event") == "sync" and seen(line) == expected
    )


class Cluster:
    def __init__(self, node: Node, tmp_path: Path) -> None:
        self.node = node
        self.tmp_path = tmp_path
        self.channels = tmp_path / "channels.toml"
        self.channels.write_text(CHANNELS)
        self.servers: dict[str, Server] = {}
        self.gateways: list[Server] = []
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        for name in ("ts-a", "ts-b"):
            self.servers[name] = await asyncio.to_thread(self.node, "ts", name)
        for i in range(2):
            gateway = await asyncio.to_thread(
                self.node, "ws", f"gw-{i}", DPS_CHANNELS=str(self.channels)
            )
            self.gateways.append(gateway)

    async def client(
        self, gateway: int, name: str, key: str, topic: str, **meta: Any
    ) -> NodeClient:
        """A phoenix.js client joined to `topic` on gateway `gateway`."""
        run = await self.stack.enter_async_context(
            node_client(
                self.tmp_path,
                "presence",
                self.gateways[gateway],
                stdin=True,
                name=name,
                key=key,
                meta=json.dumps(meta),
                topic=topic,
                timeout="90000",
            )
        )
        await run.expect(f"{name} joined", lambda line: line.get("event") == "join")
        return run

    def presence(self, gateway: int, topic: str) -> Any:
        return get_json(f"{self.gateways[gateway].http}/api/presence?topic={topic}")


@contextlib.asynccontextmanager
async def cluster(node: Node, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(node, tmp_path)
    await c.start()
    async with c.stack:
        yield c


async def test_clients_on_two_gateways_see_each_other_then_a_gateway_dies(
    node: Node, tmp_path: Path
) -> None:
    topic = "rooms:lobby"
    async with cluster(node, tmp_path) as c:
        alice = await c.client(0, "alice", "alice", topic, tab=1)
        bob = await c.client(1, "bob", "bob", topic)
        carol = await c.client(0, "carol", "carol", topic)
        everyone = {"alice": [{"tab": 1}], "bob": [{}], "carol": [{}]}
        for run in (alice, bob, carol):
            await sees(run, everyone)

        await carol.command(do="leave")
        for run in (alice, bob):
            await sees(run, {"alice": [{"tab": 1}], "bob": [{}]})

        await bob.command(do="update", meta={"status": "away"})
        away = {"alice": [{"tab": 1}], "bob": [{"status": "away"}]}
        for run in (alice, bob):
            line = await sees(run, away)
            [meta] = next(e["metas"] for e in line["list"] if e["key"] == "bob")
            assert meta["phx_ref_prev"] != meta["phx_ref"]

        # A second tab of alice's, on the other gateway: one key, two metas.
        tab2 = await c.client(1, "alice-2", "alice", topic, tab=2)
        two_tabs = {"alice": [{"tab": 1}, {"tab": 2}], "bob": [{"status": "away"}]}
        for run in (alice, bob, tab2):
            await sees(run, two_tabs)
        for gateway in (0, 1):  # every gateway answers the owner's view
            state = await asyncio.to_thread(c.presence, gateway, topic)
            assert {key: len(p["metas"]) for key, p in state.items()} == {"alice": 2, "bob": 1}

        # gw-1 dies with bob and alice's second tab: one diff takes both out.
        before = len(syncs(alice))
        killed = time.monotonic()
        c.gateways[1].stop(signal.SIGKILL)
        await sees(alice, {"alice": [{"tab": 1}]})
        took = time.monotonic() - killed
        print(f"\na dead gateway's users left the others' lists in {took * 1000:.0f} ms")
        assert took < GONE_WITHIN
        assert [seen(line) for line in syncs(alice)[before:]] == [{"alice": [{"tab": 1}]}]


async def test_a_kill_9_of_the_owner_changes_no_clients_list(node: Node, tmp_path: Path) -> None:
    topic = topic_owned_by("ts-a")
    async with cluster(node, tmp_path) as c:
        runs = [
            await c.client(0, "a", "a", topic, n=1),
            await c.client(1, "b", "b", topic, n=2),
            await c.client(1, "c", "c", topic, n=3),
        ]
        three = {"a": [{"n": 1}], "b": [{"n": 2}], "c": [{"n": 3}]}
        lists = [refs(await sees(run, three)) for run in runs]
        before = [len(syncs(run)) for run in runs]

        c.servers["ts-a"].stop(signal.SIGKILL)

        def moved() -> bool:
            ring = get_json(c.gateways[0].http + "/cluster")["ring"]["settled"]
            state = c.presence(0, topic)
            return ring == ["ts-b"] and {key: len(p["metas"]) for key, p in state.items()} == {
                "a": 1,
                "b": 1,
                "c": 1,
            }

        await eventually(moved, "ts-b never had the topic's presence")
        # Presence goes on at the new owner: a newcomer is seen by everyone.
        newcomer = await c.client(0, "d", "d", topic, n=4)
        four = {**three, "d": [{"n": 4}]}
        for run in [*runs, newcomer]:
            await sees(run, four)
        # Until then, every list() each client showed after the kill was the one before it:
        # no leave, no join, the same phx_refs.
        for run, mine, start in zip(runs, lists, before, strict=True):
            after = [refs(line) for line in syncs(run)[start:]]
            assert after[-1].keys() == {"a", "b", "c", "d"}
            assert all(shown == mine for shown in after[:-1]), run.transcript()
