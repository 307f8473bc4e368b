"""The local node: the pg API with OTP's names, member lifetimes, and the link inputs.

A `Node` owns the scopes running on it (a name -> `Scope` map; a stopped scope is
gone, a restarted one is a new run with the next instance number), the live members it
spawned, and its view of the links: which incarnation of each peer name is connected.
Everything is synchronous; asyncio appears only where a lifetime or a timer needs it
(members tied to tasks, the anti-entropy loop).

Rules of the link view, on top of the transport contract (see `transport`):

- peer_up for this node itself (any incarnation of its own name) is ignored, or the
  node would become its own peer and see every local member twice.
- peer_up of a new incarnation of a connected name first purges the old incarnation
  from every scope, which also retires it: anything later from or about a retired
  incarnation (its late frames, its peer_down) is ignored. A frame from an unconnected,
  non-retired incarnation of a connected name (a restart whose peer_up the transport
  has not produced yet) is treated the same way, as an implicit peer_up. A frame from
  any other unconnected peer is dropped.
- Frames for a scope that is not running here are dropped silently, as OTP drops
  messages to an unregistered name. Malformed frames and unknown protocol versions are
  logged (the peer's fault) and dropped.

Member lifetimes: a member lives from `spawn_member()` until its handle's `exit()` or,
when tied to a task, until the task is done. Its exit removes every membership it held
in every scope (one leave frame per scope); a second exit is a stale notice, ignored.
Only live members of this node may join; leave checks ownership only (a member that
exited has no memberships left, so leaving answers `not_joined`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any, Literal

from app.pg.member import Member, NodeId, new_incarnation
from app.pg.scope import Scope
from app.pg.subscription import Subscription
from app.pg.transport import Transport
from app.pg.wire import PgFrame, PgFrameError, header

__all__ = ["MemberHandle", "NoScopeError", "Node", "NotLocalError"]

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 65_536


class NoScopeError(LookupError):
    """The scope is not running on this node (OTP: exit `noproc`)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"no such process: pg scope {scope!r} is not running")
        self.scope = scope


class NotLocalError(ValueError):
    """A join or leave named something that is not a live member of this node.

    OTP's `{nolocal, Bad}`; `bad` is the first offending element.
    """

    def __init__(self, bad: object, why: str) -> None:
        super().__init__(f"nolocal: {bad!r} {why}")
        self.bad = bad


class MemberHandle:
    """The lifetime of one member: `exit()` ends it (idempotent)."""

    __slots__ = ("_node", "member")

    def __init__(self, node: Node, member: Member) -> None:
        self._node = node
        self.member = member

    def __repr__(self) -> str:
        return f"<MemberHandle {self.member} {'alive' if self.alive else 'exited'}>"

    @property
    def alive(self) -> bool:
        return self.member in self._node._live

    def exit(self) -> None:
        self._node._member_exit(self.member)


class Node:
    def __init__(self, name: str, transport: Transport, incarnation: str | None = None) -> None:
        self.id = NodeId(name, new_incarnation() if incarnation is None else incarnation)
        self._transport = transport
        self._scopes: dict[str, Scope] = {}
        self._instances: dict[str, int] = {}
        self._links: dict[str, NodeId] = {}  # connected peer name -> incarnation seen up
        self._retired: set[NodeId] = set()
        self._live: set[Member] = set()
        self._local_ids = itertools.count(1)
        self._anti_entropy: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.id.name} {self.id.incarnation} scopes={sorted(self._scopes)}>"

    # Scopes.

    def start_scope(self, scope: str) -> Literal["ok", "already_started"]:
        """Start `scope` here; OTP's `{error, {already_started, _}}` is "already_started"."""
        if type(scope) is not str:
            raise TypeError(f"a scope name is a str, not {scope!r}")
        if scope in self._scopes:
            return "already_started"
        instance = self._instances[scope] = self._instances.get(scope, 0) + 1
        running = self._scopes[scope] = Scope(scope, self.id, instance)
        running.start(self._links.values())
        self._flush(running)
        return "ok"

    def stop_scope(self, scope: str) -> Literal["ok"]:
        running = self._running(scope)
        del self._scopes[scope]
        running.stop(self._links.values())
        self._flush(running)
        return "ok"

    def scopes(self) -> list[str]:
        return list(self._scopes)

    # Membership.

    def spawn_member(self, task: asyncio.Future[Any] | None = None) -> MemberHandle:
        """A new live member; tied to `task` if given (it exits when the task is done)."""
        member = Member(self.id.name, self.id.incarnation, next(self._local_ids))
        self._live.add(member)
        handle = MemberHandle(self, member)
        if task is not None:
            task.add_done_callback(lambda _: handle.exit())
        return handle

    def join(self, scope: str, group: str, members: Member | Sequence[Member]) -> Literal["ok"]:
        running = self._running(scope)
        _check_group(group)
        listed = _listed(members)
        live = self._live
        for m in listed:
            if type(m) is not Member or m not in live:
                raise NotLocalError(m, self._why_not_live(m))
        if listed:
            running.join(group, listed)
            if running.outbox:
                self._flush(running)
        return "ok"

    def leave(
        self, scope: str, group: str, members: Member | Sequence[Member]
    ) -> Literal["ok", "not_joined"]:
        running = self._running(scope)
        _check_group(group)
        listed = _listed(members)
        name, incarnation = self.id
        for m in listed:
            if type(m) is not Member or m.node != name or m.incarnation != incarnation:
                raise NotLocalError(m, self._why_not_live(m))
        if not running.leave(group, listed):
            return "not_joined"
        if running.outbox:
            self._flush(running)
        return "ok"

    # Reads: never wait, never fail; a scope that is not running reads as empty.

    def get_members(self, scope: str, group: str) -> tuple[Member, ...]:
        running = self._scopes.get(scope)
        return () if running is None else running.table.members(group)

    def get_local_members(self, scope: str, group: str) -> tuple[Member, ...]:
        running = self._scopes.get(scope)
        return () if running is None else running.table.local_members(group)

    def which_groups(self, scope: str) -> list[str]:
        running = self._scopes.get(scope)
        return [] if running is None else running.table.groups()

    def which_local_groups(self, scope: str) -> list[str]:
        running = self._scopes.get(scope)
        return [] if running is None else running.table.local_groups()

    # Monitoring.

    def monitor_scope(
        self, scope: str, *, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> tuple[Subscription, dict[str, tuple[Member, ...]]]:
        table = self._running(scope).table
        sub = Subscription(scope, None, maxsize)
        table.subscribe(sub)
        return sub, table.snapshot()

    def monitor(
        self, scope: str, group: str, *, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> tuple[Subscription, tuple[Member, ...]]:
        table = self._running(scope).table
        _check_group(group)
        sub = Subscription(scope, group, maxsize)
        table.subscribe(sub)
        return sub, table.members(group)

    def demonitor(self, scope: str, ref: Subscription) -> Literal["ok", False]:
        table = self._running(scope).table
        if not isinstance(ref, Subscription) or not table.unsubscribe(ref):
            return False
        ref.close(flush=True)
        return "ok"

    # Inputs from the transport.

    def peer_up(self, peer: NodeId) -> None:
        if peer.name == self.id.name or peer in self._retired:
            return
        current = self._links.get(peer.name)
        if current == peer:
            return
        if current is not None:
            self._retired.add(current)
            self._purge(current)
        self._links[peer.name] = peer
        for running in self._scopes.values():
            running.peer_up(peer)
            self._flush(running)

    def peer_down(self, peer: NodeId) -> None:
        if self._links.get(peer.name) != peer:
            return
        del self._links[peer.name]
        self._purge(peer)

    def receive(self, peer: NodeId, frame: PgFrame) -> None:
        current = self._links.get(peer.name)
        if current != peer:
            if current is None or peer in self._retired:
                return
            self.peer_up(peer)
        try:
            kind, scope, instance = header(frame)
            running = self._scopes.get(scope)
            if running is None:
                return
            running.receive(peer, kind, instance, frame)
        except PgFrameError as e:
            log.warning("pg: dropped a frame from %s: %s", peer, e)
            return
        if running.outbox:
            self._flush(running)

    # Anti-entropy (off unless started).

    def send_digests(self) -> None:
        """Send every connected node a digest of this node's memberships, per scope."""
        for running in self._scopes.values():
            running.send_digests(self._links.values())
            self._flush(running)

    def start_anti_entropy(self, interval: float) -> None:
        """Send digests every `interval` seconds until `close()`; needs a running loop."""
        if self._anti_entropy is not None:
            raise RuntimeError("anti-entropy is already running")
        self._anti_entropy = asyncio.get_running_loop().create_task(self._digest_loop(interval))

    async def _digest_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.send_digests()

    def close(self) -> None:
        """Stop every scope (peers are told) and the anti-entropy loop."""
        if self._anti_entropy is not None:
            self._anti_entropy.cancel()
            self._anti_entropy = None
        for scope in list(self._scopes):
            self.stop_scope(scope)

    # Internals.

    def _running(self, scope: str) -> Scope:
        running = self._scopes.get(scope)
        if running is None:
            raise NoScopeError(scope)
        return running

    def _member_exit(self, member: Member) -> None:
        if member not in self._live:
            return
        self._live.remove(member)
        for running in self._scopes.values():
            running.member_exit(member)
            if running.outbox:
                self._flush(running)

    def _purge(self, peer: NodeId) -> None:
        for running in self._scopes.values():
            running.peer_down(peer)

    def _flush(self, running: Scope) -> None:
        out, running.outbox = running.outbox, []
        send = self._transport.send
        for peer, frame in out:
            send(peer, frame)

    def _why_not_live(self, m: object) -> str:
        if type(m) is not Member:
            return "is not a Member"
        if m.owner != self.id:
            return f"is owned by {m.owner}, not by this node {self.id}"
        return "has exited (or was never spawned here)"


def _check_group(group: object) -> None:
    if type(group) is not str:
        raise TypeError(f"a pg group name is a str, not {group!r}")


def _listed(members: object) -> Sequence[Member]:
    if isinstance(members, Member):
        return (members,)
    if isinstance(members, list | tuple):
        return members
    raise TypeError(f"join/leave take a Member or a list of them, not {members!r}")
