"""bench/: the comparison's table, and a peer driven by `dps loadtest` as compare.sh does.

Only the ceiling peer runs here: it needs nothing beyond DPS's own dependencies (Starlette,
uvicorn, orjson). The others need their own virtualenv (bench/.venv-peers), which
bench/compare.sh makes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import ROOT, free_port, wait_port


def compare(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/compare.py, which is a script, not a module of a package."""
    spec = importlib.util.spec_from_file_location("compare", ROOT / "bench" / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "compare", module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def report(per_s: float, cpu_us: float, p99: float, **problems: Any) -> dict[str, Any]:
    return {
        "deliveries_per_s": per_s,
        "server_cpu_us_per_delivery": cpu_us,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "lost": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "errors": {},
        **problems,
    }


def test_the_table_has_a_column_per_server_and_ratios_against_dps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = {
        "dps": {"W1": report(300_000, 3.6, 1), "W2s": report(10_000, 20, 18)},
        "socketio": {"W1": report(40_000, 36, 1, out_of_order=4), "W2s": report(10_000, 70, 360)},
    }
    lines = compare(monkeypatch).table(results, 10).splitlines()
    assert lines[0] == "| workload | DPS | python-socketio + Redis |"
    assert lines[2] == "| W1: deliveries/s, 2,000 subscribers, 10 s | **300k** | 40k (DPS 7.5x) |"
    assert lines[3] == (
        "| W1: server CPU per delivery, all processes | **3.6 µs** | 36.0 µs (DPS 0.1x) |"
    )
    assert lines[5] == (
        "| W2s: delivery latency p99, 5 msg/s to 2,000 | **18.0 ms** | 360.0 ms (DPS 0.05x) |"
    )
    assert lines[-1] == "note: python-socketio + Redis, W1: {'out_of_order': 4}"


def test_the_ceiling_peer_is_driven_by_the_load_test(tmp_path: Path) -> None:
    port = free_port()
    peer = ROOT / "bench" / "peers" / "starlette_ceiling.py"
    with open(tmp_path / "peer.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(peer), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_port(port, proc)
        out = tmp_path / "report.json"
        argv = [
            sys.executable, "-m", "app.tools.loadtest", "--url", f"ws://127.0.0.1:{port}",
            "--subscribers", "50", "--messages", "100", "--window-until", "echo",
            "--server-pid", str(proc.pid), "--json", str(out),
        ]  # fmt: skip
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(out.read_text())
        assert result["delivered"] == result["expected"] == 100 * 51
        assert result["server_cpu_us_per_delivery"] > 0
    finally:
        proc.kill()
        proc.wait(10)
