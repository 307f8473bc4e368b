"""`--plot FILE.png`: the end-to-end latency histogram and the delivery rate over time.

matplotlib is an optional extra (`pip install -e '.[plot]'` in the DPS checkout), imported
only here, and this module only when a plot was asked for; the options check that it is
installed first. The figure's title names the scenario and its parameters, so a PNG read
later says what was measured.
"""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.tools.loadtest.options import Phase, Run
from app.tools.loadtest.stats import WorkerResult, merge_timelines
from app.tools.loadtest.tally import BUCKET_NS


def title(run: Run) -> str:
    """The scenario and its parameters, one line per phase (a scenario file's name first)."""
    lines = [describe(phase) for phase in run.phases]
    if len(run.phases) > 1 or run.source.endswith(".toml"):
        lines.insert(0, run.source)
    return "\n".join(lines)


def describe(phase: Phase) -> str:
    def n(count: int, noun: str, plural: str = "s") -> str:
        return f"{count:,} {noun}{'' if count == 1 else plural}"

    parts = [n(phase.subscribers, "subscriber")]
    if phase.scenario != "connect":
        parts.insert(0, n(phase.topics, "topic"))
        if phase.scenario == "fanout":
            parts.append(n(phase.publishers, "publisher"))
        rate = f"{phase.rate:g} msg/s" if phase.rate else f"max rate (window {phase.window})"
        amount = n(phase.messages, "message") if phase.messages is not None else ""
        parts += [rate, amount or f"{phase.duration:g} s", f"{phase.payload_bytes}-byte payloads"]
    else:
        parts.append(f"held {phase.duration:g} s")
    parts.append(n(phase.procs, "client process", "es"))
    name = f"{phase.name}: " if phase.name != "phase 1" else ""
    return f"{name}{phase.scenario}, " + ", ".join(parts)


def write(
    path: Path, run: Run, results: Sequence[WorkerResult], latency_ms: dict[str, float]
) -> None:
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    samples = [v / 1e6 for r in results for v in r.latencies]
    timeline = merge_timelines(r.timeline for r in results)
    step = BUCKET_NS / 1e9
    fig, (hist, rate) = plt.subplots(2, 1, figsize=(10, 8))
    wrapped = [part for line in title(run).splitlines() for part in textwrap.wrap(line, 100)]
    fig.suptitle("\n".join(wrapped), fontsize="medium")
    if samples:
        low, high = max(min(samples), 1e-3), max(max(samples), 1e-2)
        bins = [low * (high / low) ** (i / 80) for i in range(81)]
        hist.hist(samples, bins=bins)
        hist.set_xscale("log")
        for name in ("p50", "p99", "p999"):
            if latency_ms.get(name):
                hist.axvline(latency_ms[name], linestyle="--", color="gray")
                hist.annotate(name, (latency_ms[name], 0), rotation=90, va="bottom")
    hist.set_title("end-to-end delivery latency")
    hist.set_xlabel("ms")
    hist.set_ylabel("deliveries")
    first = next((i for i, v in enumerate(timeline) if v), 0)
    rate.plot([i * step for i in range(first, len(timeline))], [v / step for v in timeline[first:]])
    rate.set_title("deliveries per second")
    rate.set_xlabel("s since the run started")
    rate.set_ylabel("deliveries/s")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
