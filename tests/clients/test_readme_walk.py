"""The README's first steps, walked as a newcomer would, in a fresh checkout.

`make run` in the background, then every command of the README's Quick start, websocat
and backend sections exactly as the README writes them, each in its own bash that has
first run the Quick start's PATH step (`. .venv/bin/activate`), as another terminal would.
Then, `make run` stopped, the manual cluster recipe of "Running a cluster" in one bash,
a websocat on each gateway, and the README's way to stop the recipe's jobs. The commands
come from README.md itself, so the walk follows whatever the README says.

The checkout holds the repository's tracked files as they are in the working tree, and
nothing else (no .venv). Its `make run` installs from the package index (pip's cache makes
that quick after the first time). The README's commands name ports 4000, 4001, 5000, 5001
and 6379, so the walk needs them: walks on this machine take turns (a lock file), and a
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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.terminal import Terminal, typed_into
from tests.support import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(420)]

PORTS = (4000, 4001, 5000, 5001, 6379)
GATEWAYS = ("http://127.0.0.1:4000", "http://127.0.0.1:4001")
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


@contextlib.contextmanager
def the_readme_ports() -> Iterator[None]:
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
        taken = [port for port in PORTS if not free(port, 30)]
        if taken:
            pytest.fail(f"ports {taken}, which the README's commands name, are in use")
        yield


def free(port: int, wait_s: float = 0.0) -> bool:
    """Whether nothing listens on `port`, waiting up to `wait_s` for it to be freed."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.5)


def wait_ready(proc: subprocess.Popen[bytes], log: Path, urls: tuple[str, ...]) -> None:
    deadline = time.monotonic() + INSTALL_S
    for url in urls:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{url} not ready within {INSTALL_S:.0f} s:\n{log.read_text()}")
                time.sleep(0.2)


@contextlib.contextmanager
def in_background(script: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[Any]:
    """`bash -c script` in a session of its own; its whole group killed at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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

    def __init__(self, checkout: Path, tmp_path: Path) -> None:
        self.checkout = checkout
        self.tmp_path = tmp_path
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

    def shell(self, *lines: str) -> str:
        """A bash script: the Quick start's PATH step, then `lines`."""
        return "\n".join([*self.path_step, *lines])

    async def terminals(
        self, stack: contextlib.AsyncExitStack, sessions: list[list[str]]
    ) -> list[Terminal]:
        """A terminal per session: its command run, its lines typed, each reply awaited;
        then every terminal has printed the README's expected line."""
        terminals = []
        printed: list[list[str]] = []
        for command, *typed in sessions:
            stderr = self.tmp_path / f"terminal-{len(terminals)}.stderr"
            argv = ["bash", "-c", self.shell(command)]
            term = await stack.enter_async_context(
                typed_into(argv, stderr, cwd=self.checkout, env=self.env)
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
    walk = Walk(checkout, tmp_path)
    with the_readme_ports():
        make_log = tmp_path / "make-run.log"
        with in_background(walk.server[0], checkout, walk.env, make_log) as make:
            await asyncio.to_thread(wait_ready, make, make_log, GATEWAYS[:1])
            async with contextlib.AsyncExitStack() as stack:
                terminals = await walk.terminals(stack, walk.sessions)
                for command in walk.backend:
                    result = await asyncio.to_thread(
                        subprocess.run,
                        ["bash", "-c", walk.shell(command)],
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
        served = "serving: clients connect to ws://127.0.0.1:4000/socket/websocket"
        assert served in make_log.read_text()
        assert free(4000, 10), "`make run` still serves after Ctrl-C"

        # The recipe's jobs, stopped the README's way when the test sends SIGTERM.
        recipe = walk.shell(*walk.recipe, f"trap '{walk.stop_recipe}; wait' TERM", "wait")
        cluster_log = tmp_path / "cluster.log"
        with in_background(recipe, checkout, walk.env, cluster_log) as cluster:
            await asyncio.to_thread(wait_ready, cluster, cluster_log, GATEWAYS)
            # A websocat on each gateway, the README's sessions: each gets what the other
            # publishes.
            on_each = [walk.sessions[0], [walk.sessions[1][0].replace(":4000/", ":4001/")]]
            on_each[1] += walk.sessions[1][1:]
            async with contextlib.AsyncExitStack() as stack:
                for term in await walk.terminals(stack, on_each):
                    await term.close()
            cluster.send_signal(signal.SIGTERM)  # bash runs the trap, then ends (status 143)
            await asyncio.to_thread(cluster.wait, 30)
        still = [port for port in PORTS if not free(port, 10)]
        assert not still, f"ports still served after `{walk.stop_recipe}`: {still}"
