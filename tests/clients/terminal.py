"""A command run as in a terminal: lines typed into its stdin, the lines it prints read back.

For websocat, a line written to its stdin is one text frame, and every frame the server
sends is one line on its stdout. Closing stdin (EOF) makes websocat close the WebSocket
and exit, so reading its stdout to the end yields everything it printed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import child_process

TIMEOUT = 10.0  # seconds for any one expected line, or for the command to exit


class Terminal:
    """One process, typed into line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.printed: list[str] = []

    def transcript(self) -> str:
        err = self.stderr.read_text(errors="replace")
        return "printed:\n" + "\n".join(self.printed) + f"\nstderr:\n{err}"

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def line(self) -> str:
        """The next line the command prints."""
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"the command printed nothing within {TIMEOUT} s\n{self.transcript()}")
        if not raw:
            pytest.fail(f"the command ended its output early\n{self.transcript()}")
        text = raw.decode().rstrip("\n")
        self.printed.append(text)
        return text

    async def close(self) -> list[str]:
        """End the input (websocat then closes its socket) and wait for the exit; all printed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), TIMEOUT)
            code = await asyncio.wait_for(self.proc.wait(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"the command did not exit after EOF\n{self.transcript()}")
        self.printed += rest.decode().splitlines()
        assert code == 0, f"the command exited with {code}\n{self.transcript()}"
        return self.printed


@contextlib.asynccontextmanager
async def typed_into(
    argv: list[str], stderr: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[Terminal]:
    """`argv` with a stdin to type into; killed by PID if it is still running at the end."""
    async with child_process(argv, stderr, cwd=cwd, stdin=True, env=env) as proc:
        yield Terminal(proc, stderr)
