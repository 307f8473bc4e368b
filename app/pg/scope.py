"""One run of one scope on one node: the pg state machine, sans-I/O and synchronous.

Inputs are method calls (local joins, leaves and exits from the node; peer up/down and
frames from the links); outputs are frames appended to `outbox` as `(peer, frame)` for
the node to hand to its transport, and events pushed to subscribers inside `table`.
No method awaits, so a read between two awaits always sees a consistent table.

The scope's own state is RUNNING until `stop()`, then STOPPED for good (a restart is a
new `Scope` with the next instance number). Its view of each connected peer node:

    UNKNOWN --discover/sync--> KNOWN(instance, groups) --peer down / scope_down--> UNKNOWN

Rules, one per input (the classic OTP protocol, see docs/pg.md):

1. start: send `discover(reply=1)` to every connected node. Nodes without the scope
   drop it. reply=1 asks for a discover back, because any discover this peer sent us
   earlier on the link found no scope here and was dropped.
2. peer_up(P): send `discover(reply=0)` to P. Both ends of a new link do so, and each
   end's scope was running before the other's frames could arrive, so each gets the
   other's discover: one sync per side, not OTP's two.
3. discover(P, version, reply): reject an unknown version (`UnsupportedVersion`).
   Reply with a sync of all local memberships; record P if UNKNOWN; if reply=1, send
   `discover(reply=0)` to P.
4. sync(P, groups): record P if UNKNOWN, then *replace* P's state by `groups`,
   notifying subscribers of the difference (OTP sends no events for a changed group:
   hazard fixed). Idempotent, valid at any time.
5. join/leave(P, ...): applied only if P is KNOWN, else ignored (OTP #2557); the sync
   that follows any (re)discovery carries the same state. Removals are total.
6. scope_down(P) or peer_down(P): forget P and its members, notifying subscribers.
7. A frame whose instance is newer than P's recorded one means P's scope restarted:
   forget the old run first (as rule 6), then handle the frame as from an UNKNOWN peer.
   A frame from an older instance is stale and dropped.
8. digest(P, d) (anti-entropy): if P is UNKNOWN, or its recorded state hashes to
   something else than d, send `discover(reply=0)` to P, which draws a full sync.
9. Local join/leave/exit: update the table and the member -> groups map, then send the
   join/leave frame to every KNOWN peer. A member's exit sends one leave naming all its
   groups (one entry per membership); an exit of a member with no membership here
   (stale notice, or it already left) is ignored.
10. stop: send `scope_down` to every connected node (a peer may have recorded us
    before we recorded it), close all subscriptions. Local memberships die with the run.

The caller (the node) guarantees: local members are live and owned by this node, frames
come only from connected peers, peer_up/peer_down alternate per peer.
"""

from __future__ import annotations

import enum
import gc
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat

from app.pg import wire
from app.pg.member import Member, NodeId
from app.pg.table import GroupTable, Multiset, Owner
from app.pg.wire import PgFrame, PgFrameError

__all__ = ["Scope", "ScopeState", "UnsupportedVersion"]


class ScopeState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"


class UnsupportedVersion(PgFrameError):
    """A discover carrying a protocol version this node does not speak."""


class Scope:
    def __init__(self, name: str, node: NodeId, instance: int) -> None:
        self.name = name
        self.node = node
        self.instance = instance
        self.state = ScopeState.RUNNING
        self.table = GroupTable(node, instance)
        # Local member -> its groups, one entry per membership (OTP's `local` map).
        self.memberships: dict[Member, tuple[str, ...]] = {}
        self.outbox: list[tuple[NodeId, PgFrame]] = []

    def __repr__(self) -> str:
        return f"<Scope {self.name!r} #{self.instance} on {self.node.name} {self.state.value}>"

    # Lifecycle.

    def start(self, connected: Iterable[NodeId]) -> None:
        frame = wire.discover(self.name, self.instance, reply=True)
        self.outbox.extend((peer, frame) for peer in connected)

    def stop(self, connected: Iterable[NodeId]) -> None:
        frame = wire.scope_down(self.name, self.instance)
        self.outbox.extend((peer, frame) for peer in connected)
        self.table.close_subscriptions()
        self.state = ScopeState.STOPPED

    # Local operations.

    def join(self, group: str, members: Sequence[Member]) -> None:
        memberships = self.memberships
        for m in members:
            groups = memberships.get(m)
            memberships[m] = (group,) if groups is None else (*groups, group)
        table = self.table
        table.add(table.local, group, members)
        if table.peers:
            ids = [m.local_id for m in members]
            self._broadcast(wire.join(self.name, self.instance, group, ids))

    def leave(self, group: str, members: Iterable[Member]) -> bool:
        """False when no listed occurrence was a member (OTP's `not_joined`)."""
        table = self.table
        removed = table.remove(table.local, group, members)
        if not removed:
            return False
        memberships = self.memberships
        for m in removed:
            groups = memberships[m]
            if len(groups) == 1:
                del memberships[m]
            else:
                i = groups.index(group)
                memberships[m] = groups[:i] + groups[i + 1 :]
        if table.peers:
            ids = [m.local_id for m in removed]
            self._broadcast(wire.leave(self.name, self.instance, ids, [group]))
        return True

    def member_exit(self, member: Member) -> None:
        groups = self.memberships.pop(member, None)
        if groups is None:
            return
        table = self.table
        for group, count in Counter(groups).items():
            table.remove(table.local, group, repeat(member, count))
        if table.peers:
            frame = wire.leave(self.name, self.instance, [member.local_id], list(groups))
            self._broadcast(frame)

    # Links.

    def peer_up(self, peer: NodeId) -> None:
        self.outbox.append((peer, wire.discover(self.name, self.instance, reply=False)))

    def peer_down(self, peer: NodeId) -> None:
        owner = self.table.peers.get(peer)
        if owner is not None:
            self.table.drop_peer(owner)

    def send_digests(self, connected: Iterable[NodeId]) -> None:
        frame = wire.digest_frame(self.name, self.instance, self._digest(self.table.local))
        self.outbox.extend((peer, frame) for peer in connected)

    def receive(self, peer: NodeId, kind: str, instance: int, frame: PgFrame) -> None:
        """Handle a frame whose header the node has parsed; raises `PgFrameError`."""
        table = self.table
        owner = table.peers.get(peer)
        if owner is not None and owner.instance != instance:
            if instance < owner.instance:
                return
            table.drop_peer(owner)
            owner = None
        if kind == wire.JOIN:
            group, ids = wire.parse_join(frame)
            if owner is not None and ids:
                table.add(owner, group, _members(peer, ids))
        elif kind == wire.LEAVE:
            ids, groups = wire.parse_leave(frame)
            if owner is not None and ids:
                members = _members(peer, ids)
                for group, count in Counter(groups).items():
                    table.remove(owner, group, members * count)
        elif kind == wire.SYNC:
            with _gc_paused():
                state = _multisets(peer, wire.parse_sync(frame))
                if owner is None:
                    owner = table.add_peer(peer, instance)
                table.replace(owner, state)
        elif kind == wire.DISCOVER:
            version, reply = wire.parse_discover(frame)
            if version != wire.PROTOCOL_VERSION:
                raise UnsupportedVersion(f"protocol version {version} from {peer}")
            self.outbox.append((peer, wire.sync(self.name, self.instance, table.local.groups)))
            if owner is None:
                table.add_peer(peer, instance)
            if reply:
                self.outbox.append((peer, wire.discover(self.name, self.instance, reply=False)))
        elif kind == wire.SCOPE_DOWN:
            if owner is not None:
                table.drop_peer(owner)
        elif kind == wire.DIGEST:
            value = wire.parse_digest(frame)
            if owner is None or value != self._digest(owner):
                self.outbox.append((peer, wire.discover(self.name, self.instance, reply=False)))
        else:
            raise PgFrameError(f"unknown frame kind {kind[:40]!r} from {peer}")

    # Internals.

    def _broadcast(self, frame: PgFrame) -> None:
        self.outbox.extend((peer, frame) for peer in self.table.peers)

    @staticmethod
    def _digest(owner: Owner) -> str:
        if owner.digest is None:
            owner.digest = wire.digest(owner.groups)
        return owner.digest


@contextmanager
def _gc_paused() -> Iterator[None]:
    # A sync allocates a tuple per member, 100,000s at once: the collections this would
    # trigger on the way cost twice the work itself, and none of it is garbage.
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _members(peer: NodeId, ids: list[int]) -> list[Member]:
    # tuple.__new__ through map builds the Member tuples in C: syncs carry 100,000s.
    fields = zip(repeat(peer.name), repeat(peer.incarnation), ids)
    return list(map(tuple.__new__, repeat(Member), fields))


def _multisets(peer: NodeId, entries: list[tuple[str, list[int]]]) -> dict[str, Multiset]:
    groups: dict[str, Multiset] = {}
    for group, ids in entries:
        if not ids:
            continue
        members = _members(peer, ids)
        ms = dict.fromkeys(members, 1)
        if len(ms) != len(members) or group in groups:
            counts = Counter(groups.get(group, {}))
            counts.update(members)
            ms = dict(counts)
        groups[group] = ms
    return groups
