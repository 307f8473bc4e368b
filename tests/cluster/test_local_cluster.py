"""`dps cluster` (what `make cluster` runs): four nodes and a Redis, stopped by Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, Server, connect, free_port, http_post, wait_http

pytestmark = pytest.mark.anyio


def port_base() -> int:
    """A base port such that base, base+1, base+1000 and base+1001 are all free."""
    for _ in range(50):
        base = free_port()
        if base + 1001 < 65536 and all(_free(base + d) for d in (1, 1000, 1001)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def test_local_cluster_serves_then_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    base, redis_port = port_base(), free_port()
    log = tmp_path / "cluster.log"
    with open(log, "wb") as out:
        ports = ["--port-base", str(base), "--redis-port", str(redis_port)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "cluster", *ports],
            cwd=ROOT,
            # Its nodes inherit the environment, and a cluster node needs a secret.
            env={**os.environ, "DPS_CLUSTER_SECRET": secrets.token_urlsafe()},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, with every node it starts
        )
    try:
        gateways = [Server(proc, base, log), Server(proc, base + 1, log)]
        for gateway in gateways:
            await asyncio.to_thread(wait_http, gateway, "/readyz")
        async with connect(gateways[1].ws()) as client:
            await client.join("topics:matrix")
            message = {"topic": "topics:matrix", "event": "event", "payload": {"m": "hi"}}
            url = gateways[0].http + "/api/broadcast"
            assert (await asyncio.to_thread(http_post, url, message))[0] == 200
            assert await client.recv() == ["1", None, "topics:matrix", "event", {"m": "hi"}]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        proc.wait(10)
    output = log.read_text()
    for name in ("ts-a", "ts-b", "ws-a", "ws-b"):
        assert f"[{name}] " in output
    for port in (base, base + 1, base + 1000, base + 1001, redis_port):
        assert not _listening(port), f"port {port} still served: a process of the cluster survived"
