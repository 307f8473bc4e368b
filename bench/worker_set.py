"""A `dps --workers N` started for a benchmark: waited for until every gateway is ready,
stopped by its PID at the end (its processes die with it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from app.children import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
DPS = str(ROOT / ".venv" / "bin" / "dps")
READY_S = 60.0
# Load tests publish from one socket far beyond the per-socket limit a chat needs.
UNLIMITED = {
    "DPS_PUBLISH_RATE": "1000000",
    "DPS_PUBLISH_BURST": "1000000",
    "DPS_JOIN_RATE": "1000000",
    "DPS_JOIN_BURST": "1000000",
}


class WorkerSet:
    def __init__(self, workers: int, port: int, log: Path, **env: str) -> None:
        self.workers = workers
        self.port = port
        self.log = log
        self.env = {**os.environ, **UNLIMITED, "DPS_PORT": str(port), "DPS_LOG_LEVEL": "warning"}
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cluster(self) -> dict[str, Any]:
        """/cluster of the gateway the kernel picks for this connection."""
        url = f"http://127.0.0.1:{self.port}/cluster"
        with urllib.request.urlopen(url, timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    def __enter__(self) -> WorkerSet:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [DPS, "--workers", str(self.workers)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        seen: set[str] = set()
        deadline = time.monotonic() + READY_S
        while len(seen) < self.workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"dps --workers {self.workers} not ready: see {self.log}")
            try:
                body = self.cluster()
            except OSError:
                time.sleep(0.1)
                continue
            if body["ring"]["settled"] == body["ring"]["declared"]:
                seen.add(body["node"])
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
