"""Recovery across a gateway restart, with the official phoenix.js client on a cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.clients.test_phoenix_js import joined, node_client
from tests.cluster.conftest import Node
from tests.support import Server, http_post

pytestmark = pytest.mark.anyio

MESSAGES = 150  # published one every INTERVAL: about 3 s of traffic
INTERVAL = 0.02
RESTART_AFTER = 30  # messages the client has before its gateway stops
RULES = '[[channel]]\ntopic = "kept:*"\nhistory_size = 1000\n'


async def publish_all(gateway: Server, topic: str) -> list[tuple[int, float]]:
    """POST MESSAGES messages {"n": 1, 2, ...}; the offset the owner gave each, and when it
    was acknowledged."""
    acked = []
    for n in range(1, MESSAGES + 1):
        message = {"topic": topic, "event": "m", "payload": {"n": n}}
        status, body = await asyncio.to_thread(http_post, gateway.http + "/api/broadcast", message)
        assert status == 200, body
        acked.append((body["offset"], time.monotonic()))
        await asyncio.sleep(INTERVAL)
    return acked


async def test_phoenix_js_recovers_what_it_missed_while_its_gateway_restarted(
    node: Node, tmp_path: Path
) -> None:
    rules = tmp_path / "channels.toml"
    rules.write_text(RULES)
    env = {"DPS_CHANNELS": str(rules)}
    for name in ("ts-a", "ts-b"):
        await asyncio.to_thread(node, "ts", name)
    gateway = await asyncio.to_thread(node, "ws", "gw-a", **env)
    backend = await asyncio.to_thread(node, "ws", "gw-b", **env)
    topic = "kept:lobby"
    count = str(MESSAGES)
    async with node_client(tmp_path, "recover", gateway, topic=topic, count=count) as run:
        first = await run.expect("the first join", joined)
        publishing = asyncio.create_task(publish_all(backend, topic))
        await run.expect(
            f"message {RESTART_AFTER}",
            lambda line: line.get("event") == "message" and line["payload"] == {"n": RESTART_AFTER},
        )
        assert gateway.stop() == 0, gateway.output()
        stopped = time.monotonic()
        # Long enough that messages are published while no gateway holds the client.
        await asyncio.sleep(0.3)
        await asyncio.to_thread(node, "ws", "gw-a", DPS_PORT=str(gateway.port), **env)
        again = await run.expect("the rejoin", joined)
        rejoined = time.monotonic()
        acked = await publishing
        await run.finish()

    assert first["response"] == {}, run.transcript()
    # The rejoin named the last position seen, and the owner had everything after it.
    assert again["response"]["recovered"] is True, run.transcript()
    messages = run.of("a", "message", name="m")
    assert [m["payload"]["n"] for m in messages] == list(range(1, MESSAGES + 1)), run.transcript()
    epochs = {m["ref"].rsplit(":", 1)[0] for m in messages}
    assert len(epochs) == 1 and again["response"]["epoch"] in epochs
    assert [int(m["ref"].rsplit(":", 1)[1]) for m in messages] == [o for o, _ in acked]
    # Messages were published while the client had no gateway: recovery brought them.
    assert any(stopped < at < rejoined for _, at in acked), (stopped, rejoined)
