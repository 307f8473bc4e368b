"""The parent process: forks the workers of each phase, steps them together, reports.

Each phase forks `--procs` workers (see `worker` for the steps and messages), reads the
nodes' counters once every worker is connected and again once all have finished (churn:
once they have stopped churning, before they close), and merges the workers' results into
the phase's report. Every wait is bounded; a worker that does not
answer in time is stopped by its PID and counted as `worker_lost`. Ctrl-C stops every worker
and still reports what was measured until then (exit status 130).

With `--local-cluster` the run first starts its cluster (`local.LocalCluster`) and
retargets every phase at it; a phase with `--kill-owner-after` kills the owner of its
busiest topic that long after publishing starts, while it waits for the workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import resource
import sys
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from rich.console import Console

from app.tools.loadtest import cluster, report, scenarios, stats, tally, worker
from app.tools.loadtest.local import ClusterError, LocalCluster
from app.tools.loadtest.options import Phase, Run, parse_target, validate
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
        self,
        phase: Phase,
        pids: tuple[int, ...],
        epoch_ns: int,
        line: report.ProgressLine,
        local: LocalCluster | None = None,
    ) -> None:
        self.phase = phase
        self.pids = pids
        self.line = line
        self.local = local
        self.kill_at: float | None = None  # monotonic seconds, while the kill is due
        self.killed: dict[str, Any] | None = None
        self.step = "connect"
        self.pipes: dict[int, Connection] = {}
        self.procs: list[BaseProcess] = []
        self.progress: dict[int, tuple[int, int, int]] = {}
        self.lost = 0
        # The servers' memory before any connection of this phase, and with all of them.
        self.rss: list[int | None] = [cluster.rss_bytes(pids)] if pids else []
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
        seconds (None without --server-pid), and whether interrupted. `rss` then holds
        the servers' memory before and once connected, with --server-pid."""
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
            if self.pids:
                self.rss.append(cluster.rss_bytes(self.pids))
            self.step = "publish" if phase.scenario != "connect" else "hold"
            start_ns = time.monotonic_ns() + START_DELAY_NS
            if phase.kill_owner_after is not None:
                self.kill_at = start_ns / 1e9 + phase.kill_owner_after
            self._broadcast(("go", start_ns))
            if phase.scenario == "connect":
                results = self._gather("result", (phase.duration or 0) + 5)
            else:
                budget = phase.publish_budget_s
                published = self._gather(
                    "published", None if budget is None else budget + phase.phase_timeout
                )
                self.kill_at = None  # publishing is over: too late to kill during it
                if phase.scenario == "churn":
                    # Measured before the clients close: every socket leaving at once is
                    # not what the churn costs.
                    after = self._counters()
                    cpu.append(cluster.cpu_seconds(self.pids))
                sent = stats.sum_lists((p[0] for p in published.values()), phase.topics)
                everyone = [record for p in published.values() for record in p[1]]
                unconfirmed = tally.by_topic(everyone)
                acked = stats.acked_per_topic(sent, [unconfirmed])
                self.step = "drain"
                self._broadcast(("drain", acked, unconfirmed))
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
            if self.kill_at is not None and now >= self.kill_at:
                self.kill_at = None
                self._kill_owner()
            for w in [w for w in self.pipes if w not in got]:
                if (deadline is not None and now > deadline) or now - seen[w] > GRACE_S:
                    self._forget(w)
            waiting = [p for w, p in self.pipes.items() if w not in got]
            timeout = 0.25 if self.kill_at is None else min(0.25, max(0.0, self.kill_at - now))
            for ready in wait(waiting, timeout):
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

    def _kill_owner(self) -> None:
        """SIGKILL the topic server that owns the phase's busiest topic now."""
        assert self.local is not None  # the options refuse a kill without --local-cluster
        topic = scenarios.topic_name(scenarios.busiest_topic(self.phase))
        owner = self.local.owner(topic)
        if owner is None:
            self.line.console.print(f"[red]no live topic server owns {topic}: none killed[/red]")
            return
        self.local.kill(owner)
        self.killed = {
            "node": owner.name,
            "pid": owner.proc.pid,
            "topic": topic,
            "after_s": self.phase.kill_owner_after,
        }

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
    """Run every phase (on a cluster of its own with --local-cluster); print and write the
    reports; the exit status."""
    if not run.local_cluster:
        return _phases(run, console, None)
    console.print("starting the local cluster ...")
    try:
        with LocalCluster(run.channels) as local:
            pids = ", ".join(f"{name} {pid}" for name, pid in local.pids().items())
            console.print(f"local cluster: {', '.join(local.gateways)}; PIDs {pids}")
            return _phases(_retarget(run, local), console, local)
    except ClusterError as exc:
        print(f"dps loadtest: the local cluster did not start: {exc}", file=sys.stderr)
        return 1


def _retarget(run: Run, local: LocalCluster) -> Run:
    """Every phase aimed at the local cluster's gateways, its nodes' counters read."""
    targets = tuple(parse_target(url, "--local-cluster") for url in local.gateways)
    nodes = tuple(t.cluster_url for t in targets)
    nodes += tuple(f"{n.http}/cluster" for n in local.topic_servers)
    phases = tuple(
        validate(dataclasses.replace(p, targets=targets, nodes=nodes)) for p in run.phases
    )
    return dataclasses.replace(run, phases=phases)


def _phases(run: Run, console: Console, local: LocalCluster | None) -> int:
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
            phase_run = PhaseRun(phase, run.server_pids, epoch, line, local)
            results, nodes, server_cpu, interrupted = phase_run.execute()
        finally:
            line.stop()
        if phase_run.lost:
            results_errors = {"worker_lost": phase_run.lost}
            results.append(WorkerResult(-1, errors=results_errors))
        phase_report = stats.build_report(
            phase,
            results,
            nodes,
            _cpu_s() - cpu,
            interrupted,
            server_cpu,
            phase_run.rss,
            phase_run.killed,
        )
        console.print(report.summary(phase_report))
        reports.append(phase_report)
        everything.extend(results)
        if interrupted:
            break
    final = reports[0] if len(reports) == 1 else stats.combine(run.source, reports, everything)
    if local is not None:
        final["local_cluster"] = local.pids()
    if run.json is not None:
        report.write_json(run.json, final)
    if run.plot is not None:
        from app.tools.loadtest import plot  # matplotlib only when asked for

        plot.write(run.plot, run, everything, final["latency_ms"])
        console.print(f"plot written to {run.plot}")
    if interrupted:
        return INTERRUPTED
    return 0 if final["passed"] else 1
