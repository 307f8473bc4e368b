"""`dps --workers N`: gateways sharing one port, topic servers, one supervisor, no Redis.

Which gateway serves a client is the kernel's choice (SO_REUSEPORT), so the tests find
out from /proc: the server end of the client's connection is a descriptor of one
gateway process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from app.roles.workers import topic_servers
from tests.support import (
    ROOT,
    TIMEOUT,
    Client,
    connect,
    eventually,
    free_port,
    get_json,
    http_post,
)

pytestmark = pytest.mark.anyio


class WorkerSet:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.pids: set[int] = set()  # every process of the set seen, for the clean-up

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket/websocket?vsn=2.0.0"

    def cluster(self) -> dict[str, Any]:
        """/cluster of whichever gateway the kernel picks for this connection."""
        body: dict[str, Any] = get_json(self.http + "/cluster")
        self.pids.update(p["pid"] for p in body["workers"]["processes"] if p["pid"])
        return body

    def processes(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.cluster()["workers"]["processes"]}

    async def ready(self, gateways: list[str]) -> None:
        """Until each of `gateways` answered /cluster with the whole ring settled."""
        seen: set[str] = set()

        def all_ready() -> bool:
            try:
                body = self.cluster()
            except OSError:  # no gateway listens yet
                return False
            if body["ring"]["settled"] == body["ring"]["declared"]:
                seen.add(body["node"])
            return seen >= set(gateways)

        await eventually(all_ready, f"gateways {gateways} ready (seen: {seen})", timeout=30)


@contextlib.asynccontextmanager
async def worker_set(tmp_path: Path, *args: str) -> AsyncIterator[WorkerSet]:
    """`dps --workers ...` without DPS_CLUSTER_SECRET (it makes one); every process it
    started is killed by its PID at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPS_")}
    env |= {"DPS_PORT": str(port), "DPS_HANDOVER": "0.3"}
    log = tmp_path / "workers.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers = WorkerSet(proc, port, log)
    try:
        yield workers
    finally:
        for pid in [proc.pid, *workers.pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def serving_pid(client: Client, pids: list[int]) -> int:
    """The one of `pids` that holds the server end of `client`'s connection."""
    host, port = client.conn.local_address[:2]
    wanted = f"{_hex_address(host, port)}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == wanted:  # the remote end of a server socket is the client
            inodes.add(fields[9])
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return pid
    raise AssertionError(f"no process of {pids} serves the client at {host}:{port}")


def _hex_address(host: str, port: int) -> str:
    octets = [int(part) for part in host.split(".")]
    return "".join(f"{octet:02X}" for octet in reversed(octets)) + f":{port:04X}"


@contextlib.asynccontextmanager
async def client_on(workers: WorkerSet, pid: int) -> AsyncIterator[Client]:
    """A client that the kernel gave to gateway `pid` (others are closed and retried)."""
    for _ in range(60):
        async with connect(workers.ws) as client:
            if serving_pid(client, [pid, *workers.pids - {pid}]) == pid:
                yield client
                return
    raise AssertionError(f"60 connections and none reached gateway {pid}")


@contextlib.asynccontextmanager
async def reconnect(url: str, attempts: int = 5) -> AsyncIterator[Client]:
    for attempt in range(attempts):
        try:
            conn = await websockets.connect(url, open_timeout=TIMEOUT)
        except (OSError, websockets.InvalidHandshake):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
            continue
        async with conn:
            yield Client(conn)
        return


def test_topic_servers_grow_with_the_gateways_from_two() -> None:
    assert [topic_servers(n) for n in (1, 2, 4, 8, 9, 16, 64)] == [2, 2, 2, 2, 3, 4, 16]


async def test_gateways_share_the_port_a_dead_one_is_restarted_and_sigterm_drains_all(
    tmp_path: Path,
) -> None:
    async with worker_set(tmp_path, "--workers", "2") as workers:
        await workers.ready(["ws-1", "ws-2"])
        processes = workers.processes()
        assert sorted(processes) == ["ts-1", "ts-2", "ws-1", "ws-2"]
        assert {p["state"] for p in processes.values()} == {"running"}
        ws1, ws2 = processes["ws-1"]["pid"], processes["ws-2"]["pid"]

        async with client_on(workers, ws1) as alice, client_on(workers, ws2) as bob:
            await alice.join("room:1")
            await bob.join("room:1")
            await alice.publish("room:1", "said", {"text": "across gateways"})
            for client in (alice, bob):
                assert await _next_push(client) == [
                    "1",
                    None,
                    "room:1",
                    "said",
                    {"text": "across gateways"},
                ]

            os.kill(ws1, signal.SIGKILL)
            assert await alice.closed() == (None, None)  # dropped, no close frame
            # Reconnecting to the same URL reaches a gateway that listens: the other
            # one, or ws-1 again once restarted. A handshake that the kernel had queued
            # for ws-1 as it died is reset: clients retry, as phoenix.js does.
            async with reconnect(workers.ws) as again:
                await again.join("room:1")
                await bob.publish("room:1", "said", {"text": "still here"})
                assert await _next_push(again) == [
                    "1",
                    None,
                    "room:1",
                    "said",
                    {"text": "still here"},
                ]

            def restarted() -> bool:
                restarted = workers.processes()["ws-1"]
                return restarted["state"] == "running" and restarted["pid"] not in (ws1, None)

            await eventually(restarted, "ws-1 restarted", timeout=30)
            body = workers.cluster()
            assert body["workers"]["restarts"] == 1
            assert workers.processes()["ws-1"]["restarts"] == 1
            assert f"ws-1 (pid {ws1}) exited with status -9" in workers.log.read_text()

            await workers.ready(["ws-1", "ws-2"])
            workers.proc.send_signal(signal.SIGTERM)
            assert await bob.closed() == (1001, "server shutting down")
        assert await asyncio.to_thread(workers.proc.wait, 30) == 0
        await eventually(lambda: not any(_running(pid) for pid in workers.pids), "set gone")


async def _next_push(client: Client) -> Any:
    """The next frame that is not a reply to this client's own requests."""
    while True:
        frame = await client.recv()
        if frame[3] != "phx_reply":
            return frame


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_broadcast_reaches_clients_of_every_gateway_and_cluster_lists_the_set(
    tmp_path: Path,
) -> None:
    async with worker_set(tmp_path, "serve", "--workers", "3") as workers:
        await workers.ready(["ws-1", "ws-2", "ws-3"])
        pids = [workers.processes()[f"ws-{i}"]["pid"] for i in (1, 2, 3)]
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(client_on(workers, pid)) for pid in pids]
            for client in clients:
                await client.join("news")
            message = {"topic": "news", "event": "flash", "payload": {"n": 1}}
            status, body = await asyncio.to_thread(
                http_post, workers.http + "/api/broadcast", message
            )
            assert status == 200, body
            for client in clients:
                assert await client.recv(TIMEOUT) == ["1", None, "news", "flash", {"n": 1}]
        description = workers.cluster()["workers"]
        assert description["clients"] == f"127.0.0.1:{workers.port}"
        roles = sorted((p["name"], p["role"]) for p in description["processes"])
        assert roles == [
            ("ts-1", "ts"),
            ("ts-2", "ts"),
            ("ws-1", "ws"),
            ("ws-2", "ws"),
            ("ws-3", "ws"),
        ]


async def test_without_workers_dps_stays_one_process(tmp_path: Path) -> None:
    async with worker_set(tmp_path) as embedded:

        def up() -> bool:
            with contextlib.suppress(OSError):
                return bool(get_json(embedded.http + "/healthz"))
            return False

        await eventually(up, "embedded server up")
        assert (
            Path(f"/proc/{embedded.proc.pid}/task/{embedded.proc.pid}/children").read_text() == ""
        )
        assert "workers" not in get_json(embedded.http + "/cluster")


def test_a_port_already_taken_stops_a_worker_set_before_it_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DPS_")}
        done = subprocess.run(
            [sys.executable, "-m", "app", "--workers", "2"],
            cwd=ROOT,
            env={**env, "DPS_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr == (
        f"DPS_PORT: 127.0.0.1:{port} is already in use "
        "(another DPS? pick another port with DPS_PORT=...)\n"
    )
