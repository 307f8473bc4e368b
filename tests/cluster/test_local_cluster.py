"""`dps cluster` (what `make cluster` runs): four nodes and a Redis, stopped by Ctrl-C, by
anything that kills it, or refused when its ports are taken."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import pytest

from tests.support import connect, free_port, http_post, port_base, start_cluster, wait_ready

pytestmark = pytest.mark.anyio


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
async def test_local_cluster_serves_then_stops_everything(
    tmp_path: Path, stop: signal.Signals
) -> None:
    base, redis_port = port_base(), free_port()
    log = tmp_path / "cluster.log"
    proc = start_cluster(log, base, redis_port)
    try:
        gateways = await wait_ready(proc, base, log)
        async with connect(gateways[1].ws()) as client:
            await client.join("topics:matrix")
            message = {"topic": "topics:matrix", "event": "event", "payload": {"m": "hi"}}
            url = gateways[0].http + "/api/broadcast"
            assert (await asyncio.to_thread(http_post, url, message))[0] == 200
            assert await client.recv() == ["1", None, "topics:matrix", "event", {"m": "hi"}]
        proc.send_signal(stop)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        proc.wait(10)
    output = log.read_text()
    for name in ("ts-a", "ts-b", "ws-a", "ws-b"):
        assert f"[{name}] " in output
    urls = [f"ws://127.0.0.1:{port}/socket/websocket" for port in (base, base + 1)]
    assert f"gateways: {urls[0]} and {urls[1]}; Ctrl-C stops the cluster" in output
    # Noise a clean run must not show: Redis's warning about background saves it never
    # makes, and nodes losing a Redis that was stopped before they were.
    assert "overcommit" not in output
    assert "Redis unavailable" not in output
    for port in (base, base + 1, base + 1000, base + 1001, redis_port):
        assert not _listening(port), f"port {port} still served: a process of the cluster survived"


async def test_no_process_outlives_a_killed_cluster(tmp_path: Path) -> None:
    base, redis_port = port_base(), free_port()
    proc = start_cluster(tmp_path / "cluster.log", base, redis_port)
    kids: list[int] = []
    try:
        await wait_ready(proc, base, tmp_path / "cluster.log")
        kids = children(proc.pid)
        assert len(kids) == 5  # Redis and four nodes
        proc.kill()
        proc.wait(10)
        for _ in range(20):
            if not any(running(kid) for kid in kids):
                break
            await asyncio.sleep(0.1)
        survivors = [kid for kid in kids if running(kid)]
        assert not survivors, f"still running 2 s after `dps cluster` was killed: {survivors}"
    finally:
        for pid in [proc.pid, *kids]:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("which", ["--port-base", "--redis-port"])
def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path, which: str) -> None:
    base, redis_port = port_base(), free_port()
    with socket.socket() as taken:
        port = base + 1001 if which == "--port-base" else redis_port
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = start_cluster(tmp_path / "cluster.log", base, redis_port)
        try:
            assert proc.wait(30) == 2
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert (tmp_path / "cluster.log").read_text() == (
        f"port {port} is already in use (another cluster? pick others with {which})\n"
    )
