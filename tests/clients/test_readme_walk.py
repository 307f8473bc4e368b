"""The README's first steps, walked as a newcomer would, in a fresh checkout.

`make run` in the background, then every command of the README's Quick start, websocat
and backend sections exactly as the README writes them, each in its own bash that has
first run the Quick start's PATH step (`. .venv/bin/activate`), as another terminal would.
Then, `make run` stopped, the manual cluster recipe of "Running a cluster" in one bash,
a websocat on each gateway, and the README's way to stop the recipe's jobs. The commands
come from README.md itself, so the walk follows whatever the README says.

The checkout holds the repository's tracked files as they are in the working tree, and
nothing else (no .venv). The README's commands name ports 4000, 4001, 5000, 5001 and 6379,
which anything else on this machine may hold at any moment (a benchmark, someone's `make
run`). So they run in a network namespace of their own when the machine allows one (root:
unshare and nsenter), with a loopback no other process shares; the install that `make run`
starts with needs the package index, so it runs first, outside it, as the Makefile's own
target (`make .venv/.run-deps`), and `make run` itself then only serves. Without a
namespace the walk uses this machine's loopback, walks take turns (a lock file), and a
port held by something else fails the test with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.terminal import Terminal, typed_into
from tests.support import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(420)]

PORTS = (4000, 4001, 5000, 5001, 6379)
LOCK = Path(tempfile.gettempdir()) / "dps-readme-walk.lock"
INSTALL_S = 300.0  # `make run` on a cold pip cache and a busy machine
COMMAND_S = 60.0  # any one README command


def section(readme: str, title: str) -> str:
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end >= 0 else None]


def blocks(text: str, info: str) -> list[str]:
    """The fenced code blocks whose info string is `info` ("" for plain blocks)."""
    found: list[str] = []
    opened: str | None = None  # the info string of the block we are in
    lines: list[str] = []
    for line in text.splitlines():
        if not line.startswith("```"):
            lines.append(line)
        elif opened is None:
            opened, lines = line[3:].strip(), []
        else:
            if opened == info:
                found.append("\n".join(lines) + "\n")
            opened = None
    return found


def commands(block: str) -> list[str]:
    """The block's commands, a line ending in a backslash joined with the next."""
    return [c for c in block.replace("\\\n", "").splitlines() if c.strip()]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    target = tmp_path / "dps"
    for name in filter(None, tracked.split("\0")):
        source = ROOT / name
        if source.is_file():  # not a file deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def newcomer_env() -> dict[str, str]:
    """This environment without DPS settings nor this checkout's virtualenv on PATH."""
    venvs = {str(ROOT / ".venv" / "bin"), str(Path(sys.executable).parent)}
    path = [entry for entry in os.environ["PATH"].split(os.pathsep) if entry not in venvs]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DPS_") and name not in ("REDIS_URL", "VIRTUAL_ENV")
    }
    return {**env, "PATH": os.pathsep.join(path)}


class Loopback:
    """Where the walk's processes run: `argv` wraps a command to run there."""

    def __init__(self, namespace: int | None) -> None:
        self.namespace = namespace  # the PID of a process holding the namespace, or None

    def argv(self, argv: list[str]) -> list[str]:
        if self.namespace is None:
            return argv
        return ["nsenter", f"--net=/proc/{self.namespace}/ns/net", "--", *argv]

    def check(self, code: str) -> bool:
        """Whether a Python snippet run there succeeds."""
        argv = self.argv([sys.executable, "-c", code])
        return subprocess.run(argv, capture_output=True, timeout=COMMAND_S).returncode == 0

    def ready(self, url: str) -> bool:
        return self.check(f"import urllib.request as u; u.urlopen('{url}/readyz', timeout=1)")

    def free(self, port: int, wait_s: float = 0.0) -> bool:
        """Whether nothing listens on `port`, waiting up to `wait_s` for it to be freed."""
        deadline = time.monotonic() + wait_s
        code = (  # what a server binding the port does: connections in TIME_WAIT do not count
            "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
            f"socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port}))"
        )
        while not self.check(code):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True


@contextlib.contextmanager
def loopback() -> Iterator[Loopback]:
    """A network namespace with its loopback up, if the machine allows; else this machine's
    loopback, once the README's ports are free and no other walk uses them."""
    holder = None
    with contextlib.suppress(OSError):  # no unshare here
        holder = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    if holder is not None and holder.stdout is not None and holder.stdout.readline() == b"up\n":
        try:
            yield Loopback(holder.pid)
        finally:
            holder.kill()
            holder.wait(10)
        return
    if holder is not None:
        holder.wait(10)  # it could not make the namespace, and has exited
    with open(LOCK, "w") as lock:
        deadline = time.monotonic() + INSTALL_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another README walk has held {LOCK} for {INSTALL_S:.0f} s")
                time.sleep(0.5)
        here = Loopback(None)
        taken = [port for port in PORTS if not here.free(port, 30)]
        if taken:
            pytest.fail(f"ports {taken}, which the README's commands name, are in use")
        yield here


def wait_ready(
    net: Loopback, proc: subprocess.Popen[bytes], log: Path, ports: tuple[int, ...]
) -> None:
    """Until each gateway is ready, and is the one `proc` started (its log says it serves)."""
    deadline = time.monotonic() + INSTALL_S
    for port in ports:
        served = f"serving: clients connect to ws://127.0.0.1:{port}/socket/websocket"
        while not (served in log.read_text() and net.ready(f"http://127.0.0.1:{port}")):
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"port {port} not served within {INSTALL_S:.0f} s:\n{log.read_text()}")
            time.sleep(0.2)


@contextlib.contextmanager
def in_background(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[Any]:
    """`argv` in a session of its own; its whole group killed at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def read_until_reply(terminal: Terminal, ref: str) -> list[str]:
    """Lines until the ok reply to `ref`; the other lines printed meanwhile."""
    others = []
    while True:
        line = await terminal.line()
        frame = json.loads(line)
        if frame[3] == "phx_reply" and frame[1] == ref:
            assert frame[4]["status"] == "ok", line
            return others
        others.append(line)


class Walk:
    """The README's commands, and a way to run each as a newcomer's terminal would."""

    def __init__(self, checkout: Path, tmp_path: Path, net: Loopback) -> None:
        self.checkout = checkout
        self.tmp_path = tmp_path
        self.net = net
        self.env = newcomer_env()
        readme = (checkout / "README.md").read_text()
        quick = blocks(section(readme, "Quick start"), "sh")
        self.server = commands(quick[0])
        self.path_step = [c for b in quick[1:] for c in commands(b)]
        assert len(self.server) == 1 and self.server[0].startswith("make run"), self.server
        assert self.path_step, "the Quick start says how to put .venv/bin on PATH"
        talk = section(readme, "Talking to it with websocat")
        self.sessions = [commands(block) for block in blocks(talk, "sh")]
        self.expected = blocks(talk, "")[0].strip()
        self.backend = commands(blocks(section(readme, "Publishing from a backend"), "sh")[0])
        cluster = section(readme, "Running a cluster")
        self.recipe = commands(blocks(cluster, "sh")[0])
        stop = re.search(r"\(`([^`]+)` stops them\.\)", cluster)
        assert stop, "the README says how to stop the recipe's jobs"
        self.stop_recipe = stop.group(1)

    def shell(self, *lines: str) -> list[str]:
        """A bash running the Quick start's PATH step, then `lines`, on the walk's loopback."""
        return self.net.argv(["bash", "-c", "\n".join([*self.path_step, *lines])])

    async def terminals(
        self, stack: contextlib.AsyncExitStack, sessions: list[list[str]]
    ) -> list[Terminal]:
        """A terminal per session: its command run, its lines typed, each reply awaited;
        then every terminal has printed the README's expected line."""
        terminals = []
        printed: list[list[str]] = []
        for command, *typed in sessions:
            stderr = self.tmp_path / f"terminal-{len(terminals)}.stderr"
            term = await stack.enter_async_context(
                typed_into(self.shell(command), stderr, cwd=self.checkout, env=self.env)
            )
            terminals.append(term)
            printed.append([])
            for line in typed:
                await term.type(line)
                printed[-1] += await read_until_reply(term, json.loads(line)[1])
        for term, lines in zip(terminals, printed, strict=True):
            if self.expected not in lines:
                lines.append(await term.line())
            assert self.expected in lines, term.transcript()
        return terminals


async def test_the_readme_first_steps_work_as_written(checkout: Path, tmp_path: Path) -> None:
    install = subprocess.run(
        ["make", ".venv/.run-deps"],
        cwd=checkout,
        env=newcomer_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_S,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    with loopback() as net:
        walk = Walk(checkout, tmp_path, net)
        make_log = tmp_path / "make-run.log"
        make_run = net.argv(["bash", "-c", walk.server[0]])
        with in_background(make_run, checkout, walk.env, make_log) as make:
            await asyncio.to_thread(wait_ready, net, make, make_log, (4000,))
            async with contextlib.AsyncExitStack() as stack:
                terminals = await walk.terminals(stack, walk.sessions)
                for command in walk.backend:
                    result = await asyncio.to_thread(
                        subprocess.run,
                        walk.shell(command),
                        cwd=checkout,
                        env=walk.env,
                        capture_output=True,
                        text=True,
                        timeout=COMMAND_S,
                    )
                    assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
                    assert json.loads(result.stdout)["status"] == "ok", result.stdout
                    for term in terminals:
                        frame = json.loads(await term.line())
                        assert frame[2:4] == ["topics:matrix", "event"], term.transcript()
                for term in terminals:
                    await term.close()
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in make's terminal
            await asyncio.to_thread(make.wait, 30)
        assert net.free(4000, 10), "`make run` still serves after Ctrl-C"

        # The recipe's jobs, stopped the README's way when the test sends SIGTERM.
        recipe = walk.shell(*walk.recipe, f"trap '{walk.stop_recipe}; wait' TERM", "wait")
        cluster_log = tmp_path / "cluster.log"
        with in_background(recipe, checkout, walk.env, cluster_log) as cluster:
            await asyncio.to_thread(wait_ready, net, cluster, cluster_log, (4000, 4001))
            # A websocat on each gateway, the README's sessions: each gets what the other
            # publishes.
            on_each = [walk.sessions[0], [walk.sessions[1][0].replace(":4000/", ":4001/")]]
            on_each[1] += walk.sessions[1][1:]
            async with contextlib.AsyncExitStack() as stack:
                for term in await walk.terminals(stack, on_each):
                    await term.close()
            cluster.send_signal(signal.SIGTERM)  # bash runs the trap, then ends (status 143)
            await asyncio.to_thread(cluster.wait, 30)
        still = [port for port in PORTS if not net.free(port, 10)]
        assert not still, f"ports still served after `{walk.stop_recipe}`: {still}"
