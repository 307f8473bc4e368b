"""Child processes that a DPS process runs and answers for: `dps --workers`, `dps cluster`.

A child dies with its parent, whatever ends the parent, even SIGKILL: it gets SIGTERM from
the kernel when its parent dies (Linux's parent-death signal, armed before it runs), so
no node outlives the command that started it. Every line it prints is shown prefixed with
its name. `stop` asks it to stop with SIGTERM (a node drains on it) and kills it when it
does not stop within the grace period.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send SIGTERM to the child when this process dies."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class Child:
    """One child process, its output relayed as `[name] line`."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    @classmethod
    async def start(
        cls, name: str, argv: list[str], env: dict[str, str], own_group: bool = False
    ) -> Child:
        """Start `argv` with `env` (the whole environment). In this process's group, so
        that a terminal's Ctrl-C reaches it at once, unless `own_group`."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent(),
            process_group=0 if own_group else None,
        )
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def relay(self, noise: bytes | None = None) -> int:
        """Print every line the child prints (but those containing `noise`) until it exits;
        its exit status."""
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            if noise is None or noise not in line:
                print(f"[{self.name}] {line.decode(errors='replace').rstrip()}", flush=True)
        return await self.proc.wait()

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            print(f"[{self.name}] did not stop in {grace:.0f} s: killed", flush=True)
            self.proc.kill()
            await self.proc.wait()
