"""`--local-cluster`: the cluster a load test starts for itself, and the only one it kills in.

The README's four nodes (`app.tools.local_cluster.NODES`: topic servers ts-a and ts-b,
gateways ws-a and ws-b) on free loopback ports, linked without Redis through a ring.toml
of their own that declares the topic servers' addresses (as `dps --workers` does), with a
random cluster secret. Each inherits this process's environment but for what makes the
cluster (as a worker set's processes do, `app.roles.workers.NOT_INHERITED`) and client TLS
(the load test speaks ws://), with the per-socket publish limit lifted (a load test
publishes from a few sockets far faster than a chat) and the channel rules of `channels`.

Every node is a child of this process, in a process group of its own (a terminal's Ctrl-C
reaches the load test, which still reports, and not its servers), and dies with it
(`app.children`). `kill` sends SIGKILL to one of them by the PID it got at start;
`stop` ends the others with SIGTERM, then SIGKILL after a grace period. Each node writes
to a log file in a temporary folder, whose last lines explain a node that did not start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app import ring
from app.children import die_with_parent
from app.roles.workers import NOT_INHERITED, free_ports, ring_toml
from app.settings import Role, env_name
from app.tools.local_cluster import NODES

START_S = 30.0  # seconds every node has to become ready
STOP_GRACE = 8.0  # seconds a node may take to stop before it is killed
UNLIMITED = {"DPS_PUBLISH_RATE": "1000000", "DPS_PUBLISH_BURST": "1000000"}
CLIENT_TLS = {env_name("tls_cert"), env_name("tls_key")}
LOG_TAIL = 5  # lines of a failed node's log that are shown
# No proxy, whatever the environment says: the nodes are on loopback.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ClusterError(Exception):
    """The cluster could not start; the message says which node and why."""


@dataclass
class Node:
    name: str
    role: Role
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class LocalCluster:
    """Start it with `with LocalCluster(channels) as cluster:`; it stops on leaving."""

    def __init__(self, channels: Path) -> None:
        self.channels = channels.resolve()
        self.folder = tempfile.TemporaryDirectory(prefix="dps-loadtest-")
        self.nodes: list[Node] = []
        self.ring_path = Path(self.folder.name) / "ring.toml"

    def __enter__(self) -> LocalCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def gateways(self) -> list[str]:
        return [f"ws://127.0.0.1:{n.port}" for n in self.nodes if n.role is Role.GATEWAY]

    @property
    def topic_servers(self) -> list[Node]:
        return [n for n in self.nodes if n.role is Role.TOPIC_SERVER]

    def pids(self) -> dict[str, int]:
        return {n.name: n.proc.pid for n in self.nodes}

    def owner(self, topic: str) -> Node | None:
        """The topic server that owns `topic` now: the ring over those alive, as every
        gateway computes it."""
        config = ring.load(self.ring_path)
        live = [n.name for n in self.topic_servers if n.alive]
        name = ring.Ring(config, live).owner(topic)
        return next((n for n in self.nodes if n.name == name), None)

    def kill(self, node: Node) -> None:
        """SIGKILL, to the process this cluster started (never a name or a group)."""
        if node.alive:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def stop(self) -> None:
        """Stop every node still running (gateways first, so that they close their sockets
        while their topic servers still answer), then remove the logs."""
        for node in reversed(self.nodes):
            if node.alive:
                node.proc.send_signal(signal.SIGTERM)
                try:
                    node.proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
        self.folder.cleanup()

    def _start(self) -> None:
        ports = free_ports(len(NODES))
        named = list(zip(NODES, ports, strict=True))
        servers = [
            (name, f"127.0.0.1:{port}")
            for (role, name, _), port in named
            if role is Role.TOPIC_SERVER
        ]
        self.ring_path.write_text(ring_toml(servers, "dps loadtest --local-cluster"))
        common = {
            **{k: v for k, v in os.environ.items() if k not in NOT_INHERITED | CLIENT_TLS},
            **UNLIMITED,
            "DPS_RING": str(self.ring_path),
            "DPS_CHANNELS": str(self.channels),
            "DPS_CLUSTER_SECRET": secrets.token_urlsafe(24),
            "DPS_HOST": "127.0.0.1",
        }
        for (role, name, _), port in named:  # topic servers first: the gateways dial them
            env = {**common, "DPS_APP": role, "DPS_NODE": name, "DPS_PORT": str(port)}
            log = Path(self.folder.name) / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "app"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(),
                    process_group=0,
                )
            self.nodes.append(Node(name, role, port, log, proc))
        deadline = time.monotonic() + START_S
        for node in self.nodes:
            self._wait_ready(node, deadline)

    def _wait_ready(self, node: Node, deadline: float) -> None:
        """Until `node` answers /readyz with 200 (a gateway: linked to both topic servers,
        the ring settled)."""
        while True:
            if not node.alive:
                raise ClusterError(
                    f"{node.name} exited with status {node.proc.returncode}: {self._tail(node)}"
                )
            with (
                contextlib.suppress(OSError),
                _opener.open(node.http + "/readyz", timeout=1) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{node.name} not ready after {START_S:.0f} s: {self._tail(node)}"
                )
            time.sleep(0.05)

    def _tail(self, node: Node) -> str:
        lines = node.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-LOG_TAIL:]) or "no output"
