"""The parent process: forks the workers of each phase, steps them together, reports.

Each phase forks `--procs` workers (see `worker` for the steps and messages), reads the
nodes' counters once every worker is connected and again once all have finished (churn:
once they have stopped churning, before they close), and merges the workers' results into
the phase's report. Every wait is bounded; a worker that does not
answer in time is stopped by its PID and counted as `worker_lost`. Ctrl-C stops every worker
and still reports what was measured until then (exit status 130).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from rich.console import Console

from app.tools.loadtest import cluster, report, scenarios, stats, worker
from app.tools.loadtest.options import Phase, Run
from app.tools.loadtest.stats import WorkerResult

START_DELAY_NS = 100_000_000  # "go" names a start time this far ahead, the same for all
GRACE_S = 15.0  # added to every step's own time limit before a worker counts as lost
INTERRUPTED = 130


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PhaseRun:
    """One phase's workers, driven step by step."""

    def __init__(
        self, phase: Phase, pids: tuple[int, ...], epoch_ns: int, line: report.ProgressLine
    ) -> None:
        self.phase = phase
        self.pids = pids
        self.line = line
        self.step = "connect"
        self.pipes: dict[int, Connection] = {}
        self.procs: list[BaseProcess] = []
        self.progress: dict[int, tuple[int, int, int]] = {}
        self.lost = 0
        context = multiprocessing.get_context("fork")
        for plan in scenarios.plans(phase, epoch_ns):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=worker.main, args=(plan, theirs), name=f"loadtest-{plan.worker}"
            )
            proc.start()
            theirs.close()
            self.pipes[plan.worker] = mine
            self.procs.append(proc)

    def execute(self) -> tuple[list[WorkerResult], dict[str, dict[str, int]], float | None, bool]:
        """Run the steps; the results, the nodes' counter deltas, the server processes' CPU
        seconds (None without --server-pid), and whether interrupted."""
        phase = self.phase
        before: dict[str, dict[str, int]] = {}
        after: dict[str, dict[str, int]] = {}
        cpu: list[float | None] = []
        results: dict[int, Any] = {}
        interrupted = False
        try:
            self._gather("ready", phase.phase_timeout)
            before = self._counters()
            cpu.append(cluster.cpu_seconds(self.pids))
            self.step = "publish" if phase.scenario != "connect" else "hold"
            self._broadcast(("go", time.monotonic_ns() + START_DELAY_NS))
            if phase.scenario == "connect":
                results = self._gather("result", (phase.duration or 0) + 5)
            else:
                budget = phase.publish_budget_s
                published = self._gather(
                    "published", None if budget is None else budget + phase.phase_timeout
                )
                if phase.scenario == "churn":
                    # Measured before the clients close: every socket leaving at once is
                    # not what the churn costs.
                    after = self._counters()
                    cpu.append(cluster.cpu_seconds(self.pids))
                sent = stats.sum_lists(published.values(), phase.topics)
                self.step = "drain"
                self._broadcast(("drain", sent))
                results = self._gather("result", phase.drain + 5)
            if len(cpu) == 1:
                after = self._counters()
                cpu.append(cluster.cpu_seconds(self.pids))
        except KeyboardInterrupt:
            interrupted = True
            self.step = "stopping"
            self._broadcast(("stop",))
            with contextlib.suppress(KeyboardInterrupt):
                results = self._gather("result", 5)
                after = self._counters()
        finally:
            self._reap()
        server_cpu = None
        if self.pids and len(cpu) == 2 and cpu[0] is not None and cpu[1] is not None:
            server_cpu = cpu[1] - cpu[0]
        return list(results.values()), stats.counter_deltas(before, after), server_cpu, interrupted

    def _gather(self, kind: str, limit_s: float | None) -> dict[int, Any]:
        """Wait until every live worker sent `kind`. A worker that has not after `limit_s`
        (plus a grace period), or that stays silent for the grace period (it sends progress
        4 times a second), is forgotten."""
        start = time.monotonic()
        deadline = start + limit_s + GRACE_S if limit_s is not None else None
        seen = dict.fromkeys(self.pipes, start)
        got: dict[int, Any] = {}
        while len(got) < len(self.pipes):
            now = time.monotonic()
            for w in [w for w in self.pipes if w not in got]:
                if (deadline is not None and now > deadline) or now - seen[w] > GRACE_S:
                    self._forget(w)
            waiting = [p for w, p in self.pipes.items() if w not in got]
            for ready in wait(waiting, 0.25):
                w = next(w for w, p in self.pipes.items() if p is ready)
                pipe = self.pipes[w]
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    self._forget(w)
                    continue
                seen[w] = time.monotonic()
                if message[0] == "progress":
                    self.progress[w] = (message[1], message[2], message[3])
                elif message[0] == kind:
                    got[w] = message[1]
                elif message[0] == "crashed":
                    self._forget(w)
            counts = self.progress.values()
            delivered, errors, sent = (sum(c[i] for c in counts) for i in range(3))
            self.line.update(self.phase.name, self.step, delivered, errors + self.lost, sent)
        return got

    def _forget(self, w: int) -> None:
        self.lost += 1
        self.pipes.pop(w).close()

    def _broadcast(self, message: tuple[Any, ...]) -> None:
        for pipe in self.pipes.values():
            with contextlib.suppress(OSError):
                pipe.send(message)

    def _counters(self) -> dict[str, dict[str, int]]:
        values, problems = cluster.read(self.phase.nodes)
        for problem in problems:
            self.line.console.print(f"[dim]counters not read: {problem}[/dim]")
        return values

    def _reap(self) -> None:
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()  # SIGTERM to this PID
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
            if proc.exitcode:
                self.line.console.print(
                    f"[red]{proc.name} exited with status {proc.exitcode}[/red]"
                )
        for pipe in self.pipes.values():
            pipe.close()


def execute(run: Run, console: Console) -> int:
    """Run every phase; print and write the reports; the exit status."""
    enabled = console.is_terminal if run.progress is None else run.progress
    line = report.ProgressLine(console, enabled)
    epoch = time.monotonic_ns()
    reports: list[dict[str, Any]] = []
    everything: list[WorkerResult] = []
    interrupted = False
    for phase in run.phases:
        cpu = _cpu_s()
        line.start(phase.name)
        try:
            phase_run = PhaseRun(phase, run.server_pids, epoch, line)
            results, nodes, server_cpu, interrupted = phase_run.execute()
        finally:
            line.stop()
        if phase_run.lost:
            results_errors = {"worker_lost": phase_run.lost}
            results.append(WorkerResult(-1, errors=results_errors))
        phase_report = stats.build_report(
            phase, results, nodes, _cpu_s() - cpu, interrupted, server_cpu
        )
        console.print(report.summary(phase_report))
        reports.append(phase_report)
        everything.extend(results)
        if interrupted:
            break
    final = reports[0] if len(reports) == 1 else stats.combine(run.source, reports, everything)
    if run.json is not None:
        report.write_json(run.json, final)
    if run.plot is not None:
        from app.tools.loadtest import plot  # matplotlib only when asked for

        plot.write(run.plot, run, everything, final["latency_ms"])
        console.print(f"plot written to {run.plot}")
    if interrupted:
        return INTERRUPTED
    return 0 if final["passed"] else 1
