"""`dps --workers N` (DPS_WORKERS=N, `auto`: one per core): every core with one command.

A worker set is a cluster on one machine, run by this process, its supervisor:

- N gateways (DPS_APP=ws, named ws-1 ... ws-N) share DPS_PORT: each binds it with
  SO_REUSEPORT and the kernel spreads new connections over their listening sockets, so
  clients keep one URL;
- `topic_servers(N)` topic servers (ts-1 ...) on free loopback ports: two at least, so
  that one that dies costs its topics a failover to the other (milliseconds: the links
  close at once) rather than its restart (a second); one more per four gateways beyond
  that, because a topic server writes every message once per gateway;
- no Redis: the supervisor knows the topology and writes it as a ring.toml with static
  addresses, which gateways dial without REDIS_URL;
- one cluster secret: DPS_CLUSTER_SECRET, or a random one made for the set.

A process that exits while the set is not stopping is restarted and counted, after a
pause that doubles while it keeps dying young (`RESTART_PAUSE`). Its clients lost their
connections with it; they reconnect to DPS_PORT, which the kernel spreads over the
gateways still listening. A process that exits with status 2 (settings it cannot run)
stops the set, with status 2. SIGTERM, SIGINT or SIGHUP drains the set: the gateways
first (they close their sockets with 1001, so clients reconnect elsewhere), then the
topic servers, which have a process group of their own so that a terminal's Ctrl-C does
not take them away from gateways still draining. Every process dies with the supervisor
(`app.children`).

Every process of the set gets DPS_WORKER_SET, the path of a JSON description of the set
(names, roles, PIDs, restarts) that the supervisor rewrites at every change: `/cluster`
on any of them shows the whole set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.children import Child
from app.roles import address, bind
from app.served import tls as client_tls
from app.settings import WORKER_SET_IGNORES, ConfigError, Role, Settings, env_name

log = logging.getLogger("dps.workers")

RESTART_PAUSE = (0.1, 5.0)  # seconds before restarting a process, doubled up to the longest
STABLE = 10.0  # a process that lived this long is restarted after the shortest pause again
STOP_GRACE = 10.0  # seconds a process may take to drain before it is killed
LISTEN_WAIT = 30.0  # seconds a topic server may take to listen before gateways start anyway
CONFIG_ERROR = 2  # a node's exit status for settings it cannot run
GATEWAYS_PER_TOPIC_SERVER = 4


def topic_servers(gateways: int) -> int:
    """How many topic servers a set of `gateways` runs (see the module's docstring)."""
    return max(2, math.ceil(gateways / GATEWAYS_PER_TOPIC_SERVER))


class State(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass
class Member:
    """One process of the set, across its restarts."""

    name: str
    role: Role
    env: dict[str, str]
    address: str
    child: Child | None = None
    state: State = State.RUNNING
    restarts: int = 0
    started: float = 0.0
    young_deaths: int = 0  # exits in a row, each within STABLE of its start

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "pid": self.child.pid if self.child is not None else None,
            "state": self.state,
            "restarts": self.restarts,
            "address": self.address,
        }


class WorkerSet:
    def __init__(
        self, settings: Settings, directory: Path, gateways: int, ports: list[int]
    ) -> None:
        self.settings = settings
        self.described = directory / "workers.json"
        self.ring = directory / "ring.toml"
        self.stop = asyncio.Event()
        self.status = 0
        self.public = address(settings.host, settings.port)
        servers = [(f"ts-{i}", f"127.0.0.1:{port}") for i, port in enumerate(ports, 1)]
        self.ring.write_text(ring_toml(servers, "the worker set's supervisor (dps --workers)"))
        secret = settings.cluster_secret
        common = {
            **{k: v for k, v in os.environ.items() if k not in NOT_INHERITED},
            "DPS_RING": str(self.ring),
            "DPS_WORKER_SET": str(self.described),
            "DPS_CLUSTER_SECRET": (
                secret.get_secret_value() if secret is not None else secrets.token_urlsafe(24)
            ),
        }
        client_only = {env_name("tls_cert"), env_name("tls_key"), env_name("max_sockets")}
        self.topic_servers = [
            Member(
                name,
                Role.TOPIC_SERVER,
                {
                    **{k: v for k, v in common.items() if k not in client_only},
                    "DPS_APP": Role.TOPIC_SERVER,
                    "DPS_NODE": name,
                    "DPS_HOST": "127.0.0.1",
                    "DPS_PORT": where.rpartition(":")[2],
                },
                where,
            )
            for name, where in servers
        ]
        self.gateways = [
            Member(
                f"ws-{i}",
                Role.GATEWAY,
                {**common, "DPS_APP": Role.GATEWAY, "DPS_NODE": f"ws-{i}"},
                self.public,
            )
            for i in range(1, gateways + 1)
        ]
        self.members = self.topic_servers + self.gateways

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop.set)
        watchers = [loop.create_task(self._watch(m)) for m in self.topic_servers]
        await self._listening(self.topic_servers)
        watchers += [loop.create_task(self._watch(m)) for m in self.gateways]
        log.info(
            "worker set: %d gateways sharing %s (ws-1 ... ws-%d) and %d topic servers; "
            "SIGTERM or Ctrl-C drains them",
            len(self.gateways),
            self.public,
            len(self.gateways),
            len(self.topic_servers),
        )
        await self.stop.wait()
        for group in (self.gateways, self.topic_servers):
            await asyncio.gather(*(m.child.stop(STOP_GRACE) for m in group if m.child))
        await asyncio.gather(*watchers)
        return self.status

    async def _watch(self, member: Member) -> None:
        """Run `member` until the set stops, restarting it whenever it exits."""
        while not self.stop.is_set():
            member.child = await Child.start(
                member.name,
                [sys.executable, "-m", "app"],
                member.env,
                own_group=member.role is Role.TOPIC_SERVER,
            )
            member.started, member.state = time.monotonic(), State.RUNNING
            self._describe()
            relay = asyncio.ensure_future(member.child.relay())
            if self.stop.is_set():  # the set began to stop while this one was starting
                await member.child.stop(STOP_GRACE)
            code = await relay
            if self.stop.is_set():
                break
            if code == CONFIG_ERROR:
                log.error("%s exited with status 2 (its settings): stopping", member.name)
                self.status = CONFIG_ERROR
                self.stop.set()
                break
            lived = time.monotonic() - member.started
            member.young_deaths = member.young_deaths + 1 if lived < STABLE else 1
            pause = min(RESTART_PAUSE[1], RESTART_PAUSE[0] * 2 ** (member.young_deaths - 1))
            member.restarts += 1
            member.state = State.RESTARTING
            self._describe()
            log.warning(
                "%s (pid %d) exited with status %d after %.1f s: restarting it in %.1f s "
                "(restart %d of it, %d in the set)",
                member.name,
                member.child.pid,
                code,
                lived,
                pause,
                member.restarts,
                sum(m.restarts for m in self.members),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), pause)
        member.state = State.STOPPED
        self._describe()

    async def _listening(self, members: list[Member]) -> None:
        """Until every one of `members` accepts connections, so that gateways link to them
        at their first try (or LISTEN_WAIT passes: the gateways redial anyway)."""
        deadline = time.monotonic() + LISTEN_WAIT
        for member in members:
            host, _, port = member.address.rpartition(":")
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break

    def _describe(self) -> None:
        """Rewrite the set's description, atomically: readers see the old one or the new."""
        description = {
            "supervisor": os.getpid(),
            "clients": self.public,
            "restarts": sum(m.restarts for m in self.members),
            "processes": [m.describe() for m in self.members],
        }
        draft = self.described.with_suffix(".tmp")
        draft.write_text(json.dumps(description, indent=1))
        draft.replace(self.described)


# What the processes of a set do not inherit from the supervisor's environment: the
# set's own settings (given to each), and those of a cluster spanning machines.
NOT_INHERITED = {
    env_name(name) for name in ("workers", "app", "node", "cluster_secret", *WORKER_SET_IGNORES)
}


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now (each held until all are picked)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def ring_toml(servers: list[tuple[str, str]], writer: str) -> str:
    """A ring.toml declaring `servers` (name, host:port), written by `writer`."""
    lines = [f"# The ring of a cluster on this machine, written by {writer}.", ""]
    for name, where in servers:
        lines += ["[[topic_server]]", f'name = "{name}"', f'address = "{where}"', ""]
    return "\n".join(lines)


def supervise(settings: Settings) -> int:
    """Run the worker set that `settings` describe until it is stopped; the exit status."""
    gateways = settings.worker_count
    assert gateways is not None
    try:
        client_tls.server_options(settings)  # files that cannot be loaded: one line, now
        # DPS_PORT taken by anything (another worker set too): one line, before starting.
        # Held while the topic servers' ports are picked, so that none of them is it.
        probe = bind(settings, share=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return CONFIG_ERROR
    try:
        ports = free_ports(topic_servers(gateways))
    finally:
        for sock in probe:
            sock.close()
    with tempfile.TemporaryDirectory(prefix="dps-workers-") as directory:
        return asyncio.run(WorkerSet(settings, Path(directory), gateways, ports).run())
