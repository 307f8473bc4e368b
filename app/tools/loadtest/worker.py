"""A client process: its share of the connections on one uvloop event loop.

The parent drives every worker through the same steps over a pipe, so that all of them
publish only once every subscriber of every worker has joined:

    worker -> parent                      parent -> worker
    ("ready", summary)      connected     ("go", start_ns)       publish (or hold) from then
    ("published", (sent,    publishing    ("drain", acked,       wait for the deliveries
      unconfirmed))                         unconfirmed)          of what was acknowledged
    ("result", WorkerResult) after closing
    ("progress", ...)       4 times a second, all along
                                          ("stop",)              at any point: finish now

In a churn phase, a worker is ready once its clients have joined and no presence event has
come for a second; "go" starts the churn instead of publishing: for `--duration` seconds,
this worker's share of `--rate` times a second, its longest-present client leaves the topic,
and comes back (joins again) AWAY_S later; "published" follows, with nothing published.

Every step has a time limit (`--phase-timeout` to connect and join; the publishing budget
plus `--phase-timeout`, or `--phase-timeout` without any acknowledgement; `--drain` for the
deliveries); what has not happened by then is counted (connect_timeout, join_timeout,
ack_timeout, lost) rather than waited for. The parent, for its part, forgets a worker that
stays silent for 15 s.
SIGINT is ignored here: the parent turns Ctrl-C into "stop" and still gets the results.

With `--reconnect-every`, while publishing lasts, each subscriber of this worker drops its
socket once per period (`reconnect.Reconnects`), if it has a position to recover from,
and a new session rejoins in its place; the drain then waits for those rejoins too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from app.tools.loadtest.reconnect import Reconnects
from app.tools.loadtest.scenarios import Plan
from app.tools.loadtest.session import LoadSession
from app.tools.loadtest.socketio import SocketIOSession
from app.tools.loadtest.stats import PRESENCE_COUNTS, WorkerResult
from app.tools.loadtest.tally import Tally, Unconfirmed, by_topic
from app.tools.loadtest.websocket import ClientState

MAX_HANDSHAKES = 256  # connections being opened or joined at once, per worker
PACE_NS = 1_000_000  # the pacer sleeps at least this long
POLL_S = 0.02
PROGRESS_S = 0.25
CLOSE_S = 2.0
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # <linux/in.h>
AWAY_NS = 1_000_000_000  # how long a churn client stays away before it joins again
QUIET_NS = 1_000_000_000  # without presence events for this long, a churn's set-up is over


def main(plan: Plan, pipe: Connection) -> None:
    """The worker process's entry point (after fork)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Worker(plan, pipe).run())
    except BaseException:
        text = traceback.format_exc()
        print(f"load-test worker {plan.worker} failed:\n{text}", file=sys.stderr)
        with contextlib.suppress(OSError):
            pipe.send(("crashed", text))
    finally:
        loop.close()


async def _connect(session: LoadSession, host: str, port: int, source: str | None) -> None:
    loop = asyncio.get_running_loop()
    if source is None:
        await loop.create_connection(lambda: session, host, port)
        return
    sock = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET)
    try:
        sock.setblocking(False)
        # The port is chosen at connect(), unique per destination, rather than at bind(),
        # unique per source address: the same ports serve every target, and the kernel
        # may reuse those of connections in TIME_WAIT, as for connections not bound.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(lambda: session, sock=sock)
    except BaseException:
        sock.close()
        raise


def _cpu() -> tuple[float, float]:
    """This process's (user, system) CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class Worker:
    def __init__(self, plan: Plan, pipe: Connection) -> None:
        self.plan = plan
        self.phase = plan.phase
        self.pipe = pipe
        topics_of_subs = [t for spec in plan.conns for t in spec.topics]
        self.tally = Tally(topics_of_subs, plan.slots, plan.epoch_ns)
        self.sessions: list[LoadSession] = []
        self.settled = 0
        self.changed = asyncio.Event()
        self.stopped = asyncio.Event()
        self.commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.reopening: set[asyncio.Task[None]] = set()  # reconnections under way
        self.unconfirmed: Unconfirmed = {}  # every worker's, once draining
        self.result = WorkerResult(plan.worker)
        self.measured = (0.0, 0.0)  # (time, CPU) when the measured steps began
        self.session_class = SocketIOSession if self.phase.protocol == "socketio" else LoadSession

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self._on_command)
        # The event loop made the pipe non-blocking; a message must go out (and come in)
        # whole, so it blocks again: it is only read when readable, and the parent always reads.
        os.set_blocking(self.pipe.fileno(), True)
        tasks = [loop.create_task(self._progress()), loop.create_task(self._heartbeats())]
        try:
            await self._connect()
            if self.phase.scenario == "churn":
                await self._settle_presence()
            self._send("ready", self.tally.opened, self.tally.failed)
            command = await self._command()
            self.measured = (time.monotonic(), sum(_cpu()))
            if command[0] == "go" and self.phase.scenario == "connect":
                await self._until(command[1] + int((self.phase.duration or 0) * 1e9))
            elif command[0] == "go":
                if self.phase.scenario == "churn":
                    await self._churn(command[1])
                else:
                    await self._publish(command[1])
                self._send("published", (self._sent_per_topic(), self.tally.unconfirmed))
                command = await self._command()
                if command[0] == "drain":
                    self.unconfirmed = command[2]
                    await self._drain(command[1])
            start, cpu = self.measured
            self.result.busy = (sum(_cpu()) - cpu) / max(time.monotonic() - start, 1e-9)
        finally:
            for task in tasks:
                task.cancel()
            await self._close_all()
            loop.remove_reader(self.pipe.fileno())
        self._send("result", self._result())

    # Steps.
    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        phase, tally = self.phase, self.tally
        deadline = time.monotonic() + phase.phase_timeout
        interval = phase.procs / phase.connect_rate if phase.connect_rate else 0.0
        opening: list[asyncio.Task[None]] = []
        self.result.connect_start_ns = time.monotonic_ns()
        first_sub = 0
        for started, spec in enumerate(self.plan.conns):
            while started - self.settled >= MAX_HANDSHAKES and not self._late(deadline):
                await self._changed(deadline)
            if self._late(deadline):
                break
            session = self.session_class(
                phase.targets[spec.target],
                spec,
                first_sub,
                tally,
                phase.payload_bytes,
                phase.window,
                self._on_settled,
                echo=phase.window_until == "echo",
                positions=phase.reconnect_every > 0 and spec.slot < 0,
            )
            first_sub += len(spec.topics)
            self.sessions.append(session)
            opening.append(loop.create_task(self._open(session, deadline, self._source(started))))
            if interval:
                await asyncio.sleep(interval)
        while self.settled < len(self.sessions) and not self._late(deadline):
            await self._changed(deadline)
        self.result.connect_end_ns = time.monotonic_ns()
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        for session in self.sessions:
            session.give_up("connect_timeout")
            if session.join_refs:
                tally.errors["join_timeout"] += len(session.join_refs)
                session.join_refs.clear()
        never_started = len(self.plan.conns) - len(self.sessions)
        if never_started and not self.stopped.is_set():
            tally.failed += never_started
            tally.errors["connect_timeout"] += never_started

    def _source(self, started: int) -> str | None:
        """The address connection `started` of this worker comes from: its connection c
        of the phase (workers take every procs-th) from source c % n, None: any."""
        sources = self.phase.source_addresses
        if not sources:
            return None
        return sources[(self.plan.worker + started * self.phase.procs) % len(sources)]

    async def _settle_presence(self) -> None:
        """Until no presence event came for QUIET_NS: the joins' states and diffs, as many
        as joins squared, are the churn's set-up, not what it measures."""
        deadline = time.monotonic() + self.phase.phase_timeout
        while not self._late(deadline):
            quiet_for = time.monotonic_ns() - self.tally.presence_at
            if quiet_for >= QUIET_NS:
                return
            await asyncio.sleep((QUIET_NS - quiet_for) / 1e9)

    async def _open(self, session: LoadSession, deadline: float, source: str | None) -> None:
        target = session.target
        try:
            await asyncio.wait_for(
                _connect(session, target.host, target.port, source),
                max(0.0, deadline - time.monotonic()),
            )
        except TimeoutError:
            session.give_up("connect_timeout")
        except ConnectionRefusedError:
            session.give_up("connect_refused")
        except OSError as exc:
            session.give_up(f"connect_{errno.errorcode.get(exc.errno or 0, 'error')}")

    async def _publish(self, start_ns: int) -> None:
        """Publish until every publisher is done, the budget is spent, or acks stall."""
        phase, tally = self.phase, self.tally
        publishers = [s for s in self.sessions if s.spec.slot >= 0 and s.state is ClientState.OPEN]
        await self._until(start_ns)
        self.result.publish_start_ns = start_ns
        deadline_ns = start_ns + int(phase.duration * 1e9) if phase.duration else 0
        budget = phase.publish_budget_s
        limit = start_ns + int((budget + phase.phase_timeout) * 1e9) if budget is not None else 0
        stall_ns = int(phase.phase_timeout * 1e9)
        progress = (tally.acked, start_ns)
        for session in publishers:
            session.start_publishing(start_ns, deadline_ns)
        loop = asyncio.get_running_loop()
        pacer = loop.create_task(self._pace(publishers, start_ns))
        dropper = loop.create_task(self._reconnects(start_ns, deadline_ns))
        try:
            while not self.stopped.is_set():
                now = time.monotonic_ns()
                if deadline_ns and now >= deadline_ns:
                    for session in publishers:
                        session.stop_publishing()
                if all(s.publishing_done for s in publishers):
                    break
                if tally.acked != progress[0]:
                    progress = (tally.acked, now)
                elif now - progress[1] > stall_ns or (limit and now > limit):
                    tally.errors["publish_stalled"] += 1
                    break
                await asyncio.sleep(POLL_S)
        finally:
            pacer.cancel()
            dropper.cancel()
        for session in publishers:
            session.stop_publishing()
            session.unacknowledged("ack_timeout")

    async def _churn(self, start_ns: int) -> None:
        """Leaves at this worker's rate, each client back AWAY_NS later, for the duration."""
        present = deque(s for s in self.sessions if s.state is ClientState.OPEN and s.join_ref)
        away: deque[tuple[int, LoadSession]] = deque()
        await self._until(start_ns)
        self.tally.churn_starts()
        self.result.publish_start_ns = start_ns
        end_ns = start_ns + int((self.phase.duration or 0) * 1e9)
        interval_ns = int(1e9 / self.plan.churn)
        due = start_ns
        while due < end_ns and not self.stopped.is_set():
            await self._until(due)  # at once for the first
            now = time.monotonic_ns()
            while away and away[0][0] <= now:
                session = away.popleft()[1]
                session.rejoin()
                present.append(session)
            if present:
                session = present.popleft()
                session.leave()
                away.append((now + AWAY_NS, session))
            due += interval_ns

    async def _pace(self, publishers: list[LoadSession], start_ns: int) -> None:
        """At a rate: wake each publisher when its next message is due (a heap of times)."""
        if not self.phase.rate:
            return
        due = [(s.next_due_ns(), i) for i, s in enumerate(publishers)]
        heapq.heapify(due)
        while due:
            now = time.monotonic_ns()
            while due and due[0][0] <= now:
                _, i = heapq.heappop(due)
                session = publishers[i]
                session.pace(now)
                if session.remaining != 0:
                    heapq.heappush(due, (max(session.next_due_ns(), now + PACE_NS), i))
            if due:
                await asyncio.sleep(max(due[0][0] - time.monotonic_ns(), PACE_NS) / 1e9)

    async def _reconnects(self, start_ns: int, deadline_ns: int) -> None:
        """With --reconnect-every: drop each subscriber once per period, while publishing
        (until `deadline_ns` by duration, else until the publishers are done)."""
        period = self.phase.reconnect_every
        subscribers = [i for i, s in enumerate(self.sessions) if s.positions]
        if not period or not subscribers:
            return
        schedule = Reconnects(len(subscribers), start_ns, int(period * 1e9), random.random)
        while (due := schedule.next_ns()) is not None and (not deadline_ns or due < deadline_ns):
            await self._until(due)
            if self.stopped.is_set():
                return
            now = time.monotonic_ns()
            for n in schedule.due(min(now, deadline_ns - 1) if deadline_ns else now):
                self._reconnect(subscribers[n])

    def _reconnect(self, index: int) -> None:
        """Drop session `index` (when it has a position to recover from) and open a new one
        in its place that rejoins from there."""
        old = self.sessions[index]
        if not old.can_drop:
            return
        old.drop()
        phase = self.phase
        new = self.session_class(
            old.target,
            old.spec,
            old.subs[0],
            self.tally,
            phase.payload_bytes,
            phase.window,
            lambda: None,  # settling counts only while the phase connects
            positions=True,
            resume=old.position,
        )
        self.sessions[index] = new
        deadline = time.monotonic() + phase.phase_timeout
        task = asyncio.get_running_loop().create_task(
            self._open(new, deadline, self._source(index))
        )
        self.reopening.add(task)
        task.add_done_callback(self.reopening.discard)

    async def _drain(self, acked_per_topic: list[int]) -> None:
        limit = time.monotonic() + self.phase.drain
        while not self.tally.caught_up(acked_per_topic, self.unconfirmed) and not self._late(limit):
            await asyncio.sleep(POLL_S)

    async def _close_all(self) -> None:
        for task in self.reopening:
            task.cancel()
        for session in self.sessions:
            session.shut()
        limit = time.monotonic() + CLOSE_S
        while any(s.state is ClientState.OPEN for s in self.sessions) and time.monotonic() < limit:
            await asyncio.sleep(POLL_S)
        for session in self.sessions:
            if session.transport is not None and not session.transport.is_closing():
                session.abort()
        await asyncio.sleep(0)  # let the transports call connection_lost

    # Background tasks.
    async def _progress(self) -> None:
        tally = self.tally
        while True:
            await asyncio.sleep(PROGRESS_S)
            self._send(
                "progress",
                tally.delivered,
                sum(tally.errors.values()),
                tally.sent,
                tally.opened,
            )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.phase.heartbeat)
            now = time.monotonic_ns()
            for session in self.sessions:
                if session.state is ClientState.OPEN and not session.closing:
                    session.heartbeat(now)

    # Plumbing.
    def _on_settled(self) -> None:
        self.settled += 1
        self.changed.set()

    async def _changed(self, deadline: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))

    def _late(self, deadline: float) -> bool:
        return self.stopped.is_set() or time.monotonic() >= deadline

    async def _until(self, when_ns: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.stopped.wait(), max(0.0, (when_ns - time.monotonic_ns()) / 1e9)
            )

    async def _command(self) -> tuple[Any, ...]:
        stop = asyncio.ensure_future(self.stopped.wait())
        get = asyncio.ensure_future(self.commands.get())
        await asyncio.wait((stop, get), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if get.done():
            return get.result()
        get.cancel()
        return ("stop",)

    def _on_command(self) -> None:
        try:
            message = self.pipe.recv()
        except (EOFError, OSError):  # the parent is gone
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self.stopped.set()
            return
        if message[0] == "stop":
            self.stopped.set()
        else:
            self.commands.put_nowait(message)

    def _send(self, *message: Any) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send(message)

    def _sent_per_topic(self) -> list[int]:
        sent = [0] * self.phase.topics
        for session in self.sessions:
            for topic, count in zip(session.spec.topics, session.sent_per_topic, strict=True):
                sent[topic] += count
        return sent

    def _result(self) -> WorkerResult:
        tally, result = self.tally, self.result
        joined = [0] * self.phase.topics
        for sub, topic in enumerate(tally.sub_topic):
            joined[topic] += tally.joined[sub]
        result.opened, result.failed, result.dropped = tally.opened, tally.failed, tally.dropped
        result.joined_per_topic = joined
        result.unique = sum(
            tally.unique_acknowledged(sub, self.unconfirmed)
            for sub in range(len(tally.unique))
            if tally.joined[sub]
        )
        result.delivered = tally.delivered
        result.duplicates, result.out_of_order = tally.duplicates, tally.out_of_order
        result.sent_per_topic = self._sent_per_topic()
        result.sent, result.acked = tally.sent, tally.acked
        result.unconfirmed = by_topic(tally.unconfirmed)
        result.reconnects, result.recovered = tally.reconnects, tally.recovered
        result.recoveries_failed = tally.recoveries_failed
        result.first_delivery_ns = tally.first_delivery_ns
        result.last_delivery_ns = tally.last_delivery_ns
        result.latencies, result.acks = tally.latencies, tally.acks
        result.joins, result.connects = tally.joins, tally.connects
        result.rejoins, result.states = tally.rejoins, tally.states
        result.presence = {key: getattr(tally, key) for key in PRESENCE_COUNTS}
        result.timeline = tally.timeline
        result.errors = dict(tally.errors)
        result.cpu_user_s, result.cpu_sys_s = _cpu()
        return result
