"""Helpers for tests that run real DPS processes on loopback ports and talk to them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trustme
import websockets

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0  # seconds any single expected frame or event may take
PATIENCE = 10.0  # seconds a cluster may take to reach an expected state
POLL = 0.05  # seconds between two looks at it
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")  # "low high"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A DPS process started by a test, stopped by PID when the test ends."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        """A node with TLS for client sockets serves its port over TLS, and so does a topic
        server with TLS links."""
        return "DPS_TLS_CERT" in self.env or (
            self.env.get("DPS_APP") == "ts" and "DPS_LINK_TLS_CA" in self.env
        )

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ws(self, vsn: str | None = "2.0.0") -> str:
        query = "" if vsn is None else f"?vsn={vsn}"
        scheme = "wss" if "DPS_TLS_CERT" in self.env else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/socket/websocket{query}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process and wait for it; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def port_base() -> int:
    """A base port for `dps cluster`: base, base+1, base+1000 and base+1001 are all free.

    Drawn below the kernel's range of ephemeral ports, where the client ends of closed
    connections never sit: after a load test thousands of them wait out TIME_WAIT for a
    minute, and a port held so cannot be listened on, SO_REUSEADDR or not."""
    low = int(EPHEMERAL_PORTS.read_text().split()[0])
    for _ in range(200):
        base = random.randrange(10_000, low - 1001)
        if all(_free(base + d) for d in (0, 1, 1000, 1001)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_cluster(log: Path, base: int, redis_port: int) -> subprocess.Popen[bytes]:
    """`dps cluster` on the given ports, without DPS_CLUSTER_SECRET (it makes one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPS_") and k != "REDIS_URL"}
    with open(log, "wb") as out:
        ports = ["--port-base", str(base), "--redis-port", str(redis_port)]
        return subprocess.Popen(
            [sys.executable, "-m", "app", "cluster", *ports],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, with every node it starts
        )


async def wait_ready(proc: subprocess.Popen[bytes], base: int, log: Path) -> list[Server]:
    """The two gateways of a `dps cluster`, once both are ready."""
    gateways = [Server(proc, base, log), Server(proc, base + 1, log)]
    for gateway in gateways:
        await asyncio.to_thread(wait_http, gateway, "/readyz")
    return gateways


@contextlib.asynccontextmanager
async def local_cluster(log: Path) -> AsyncIterator[list[Server]]:
    """A ready `dps cluster` on free ports, its two gateways; stopped as Ctrl-C stops it,
    and whatever is left of its process group killed."""
    base = port_base()
    proc = start_cluster(log, base, free_port())
    try:
        yield await wait_ready(proc, base, log)
    finally:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something listens on `port`, failing early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


async def eventually(check: Callable[[], bool], what: str, timeout: float = PATIENCE) -> float:
    """Wait until `check()` holds, looking every POLL seconds; when it was seen to hold
    (time.monotonic). `check` runs in a thread, so that a blocking HTTP request in it does
    not stall the test's own sockets. Fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout} s)")
        await asyncio.sleep(POLL)
    return time.monotonic()


def get_json(url: str, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
        return orjson.loads(response.read())


def start_server(
    log_dir: Path, env: dict[str, str] | None = None, ready: str = "/healthz"
) -> Server:
    port = int((env or {}).get("DPS_PORT", free_port()))
    full_env = {**os.environ, "DPS_HOST": "127.0.0.1", "DPS_PORT": str(port), **(env or {})}
    log = log_dir / f"dps-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, port, log, env or {})
    try:
        wait_http(server, ready)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def server_context(server: Server) -> ssl.SSLContext | None:
    """A client context that trusts the server's CA, for a TLS server. For client sockets,
    the tests' DPS_TLS_CERT files end with their CA's certificate (a chain may)."""
    if not server.tls:
        return None
    return ssl.create_default_context(
        cafile=server.env.get("DPS_TLS_CERT") or server.env["DPS_LINK_TLS_CA"]
    )


def client_tls(ca: trustme.CA, folder: Path) -> dict[str, str]:
    """DPS_TLS_* for a certificate of 127.0.0.1 from `ca`; the chain ends with the CA's own
    certificate, which `tests.support.server_context` trusts."""
    folder.mkdir(exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems) + ca.cert_pem.bytes()
    (folder / "cert.pem").write_bytes(chain)
    return {"DPS_TLS_CERT": str(folder / "cert.pem"), "DPS_TLS_KEY": str(folder / "key.pem")}


def wait_http(server: Server, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"DPS exited with {server.proc.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(
                server.http + path, timeout=1, context=server_context(server)
            ) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{server.http}{path} not ready:\n{server.output()}")


def http_post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST JSON (or raw bytes) and return (status, decoded JSON body)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return http_json(urllib.request.Request(url, data=data, headers=headers or {}, method="POST"))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET and return (status, decoded JSON body)."""
    return http_json(urllib.request.Request(url, headers=headers or {}))


def http_json(request: urllib.request.Request) -> tuple[int, Any]:
    """Send `request`; (status, decoded JSON body), for an error status too."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


class Client:
    """A Phoenix V2 (or V1) client over a `websockets` connection, one frame at a time."""

    def __init__(self, conn: websockets.ClientConnection, v1: bool = False) -> None:
        self.conn = conn
        self.v1 = v1
        self.ref = 0

    async def send(self, frame: Any) -> None:
        await self.conn.send(
            frame if isinstance(frame, (str, bytes)) else orjson.dumps(frame).decode()
        )

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        data = await asyncio.wait_for(self.conn.recv(), timeout)
        return data if isinstance(data, bytes) else orjson.loads(data)

    async def expect_silence(self, seconds: float = 0.3) -> None:
        """Nothing arrives for `seconds` (used only to show that something is NOT sent)."""
        with contextlib.suppress(TimeoutError):
            frame = await asyncio.wait_for(self.conn.recv(), seconds)
            raise AssertionError(f"unexpected frame {frame!r}")

    async def join(self, topic: str, join_ref: str = "1") -> Any:
        await self.send([join_ref, join_ref, topic, "phx_join", {}])
        reply = await self.recv()
        assert reply == [join_ref, join_ref, topic, "phx_reply", {"status": "ok", "response": {}}]
        return reply

    async def publish(self, topic: str, event: str, body: Any, join_ref: str = "1") -> str:
        self.ref += 1
        ref = f"p{self.ref}"
        await self.send([join_ref, ref, topic, "publish", [event, body]])
        return ref

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        """Wait for the server to close the socket; (code, reason) it sent."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(self.conn.recv(), timeout)
        await asyncio.wait_for(self.conn.wait_closed(), timeout)
        rcvd = self.conn.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, None)


@contextlib.asynccontextmanager
async def child_process(
    argv: list[str],
    stderr: Path,
    cwd: Path | None = None,
    stdin: bool = False,
    env: dict[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess with piped stdout (and stdin if asked), in a process group of its own;
    killed at the end if still running, with the group (a shell's children) by its ID."""
    with open(stderr, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@contextlib.asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with websockets.connect(url, open_timeout=TIMEOUT, **kwargs) as conn:
        yield Client(conn)
