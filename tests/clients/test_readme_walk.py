"""The README's first steps, walked as a newcomer would, in a fresh checkout.

`make run` in the background, then every command of the README's Quick start, websocat
and backend sections exactly as the README writes them, each in its own bash that has
first run the Quick start's PATH step (`. .venv/bin/activate`), as another terminal would.
The commands come from README.md itself, so the walk follows whatever the README says.

The checkout holds the repository's tracked files as they are in the working tree, and
nothing else (no .venv). Its `make run` installs from the package index (pip's cache makes
that quick after the first time). The README's commands name port 4000, so the walk needs
it: walks on this machine take turns (a lock file), and a port held by something else
fails the test with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
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

import pytest

from tests.clients.terminal import Terminal, typed_into
from tests.support import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(420)]

PORT = 4000
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
def the_readme_port() -> Iterator[None]:
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
        for _ in range(60):
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", PORT))
                    break
                except OSError:
                    time.sleep(0.5)
        else:
            pytest.fail(
                f"port {PORT}, which the README's commands name, is in use by another process"
            )
        yield


def wait_ready(make: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + INSTALL_S
    while time.monotonic() < deadline:
        if make.poll() is not None:
            pytest.fail(f"`make run` exited with {make.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"`make run` did not serve within {INSTALL_S:.0f} s:\n{log.read_text()}")


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


async def test_the_readme_first_steps_work_as_written(checkout: Path, tmp_path: Path) -> None:
    readme = (checkout / "README.md").read_text()
    quick = blocks(section(readme, "Quick start"), "sh")
    server, path_step = commands(quick[0]), [c for b in quick[1:] for c in commands(b)]
    assert len(server) == 1 and server[0].startswith("make run"), server
    assert path_step, "the Quick start says how to put .venv/bin on PATH"
    talk = section(readme, "Talking to it with websocat")
    sessions = [commands(block) for block in blocks(talk, "sh")]
    expected = blocks(talk, "")[0].strip()
    backend = commands(blocks(section(readme, "Publishing from a backend"), "sh")[0])
    env = newcomer_env()

    def shell(command: str) -> list[str]:
        return ["bash", "-c", "\n".join([*path_step, command])]

    log = tmp_path / "make-run.log"
    with the_readme_port(), open(log, "wb") as out:
        make = subprocess.Popen(
            ["bash", "-c", server[0]],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await asyncio.to_thread(wait_ready, make, log)
            async with contextlib.AsyncExitStack() as stack:
                terminals = []
                printed: list[list[str]] = []
                for i, (command, *typed) in enumerate(sessions):
                    stderr = tmp_path / f"terminal-{i}.stderr"
                    term = await stack.enter_async_context(
                        typed_into(shell(command), stderr, cwd=checkout, env=env)
                    )
                    terminals.append(term)
                    printed.append([])
                    for line in typed:
                        await term.type(line)
                        printed[-1] += await read_until_reply(term, json.loads(line)[1])
                for term, lines in zip(terminals, printed, strict=True):
                    if expected not in lines:
                        lines.append(await term.line())
                    assert expected in lines, term.transcript()

                for command in backend:
                    result = await asyncio.to_thread(
                        subprocess.run,
                        shell(command),
                        cwd=checkout,
                        env=env,
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
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
    assert "serving: clients connect to ws://127.0.0.1:4000/socket/websocket" in log.read_text()
