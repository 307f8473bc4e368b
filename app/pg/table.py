"""The read table of one scope: group -> owner node -> multiset of members.

This is the replica every read touches (OTP's ETS table) fused with the per-peer copy
that the scope keeps for each peer (OTP's `remote` map). Both views share the very same
multiset objects:

    owners[node].groups[group]  is  rows[group][node]      (a dict Member -> count)

so they cannot drift apart (OTP #2866, #4619), and dropping a peer or replacing its
state with a sync costs one step per group of that peer, not a scan of the table.

Invariants, kept by every method below:

- a multiset is never empty, a row is never empty: every path that shrinks a group
  deletes it at zero (OTP #11360), so `groups()` never lists a phantom group;
- every removal is total: an unknown group or member is a no-op;
- `all_cache[group]` / `local_cache[group]`, when present, equal the expansion of the
  row (all owners / the local owner only) as an immutable tuple; any change to a
  group pops them, and reads rebuild lazily;
- each change is pushed to the subscribers of the scope and of the group in the same
  call, so snapshot + events replay the reads. Granularity is the caller's: one call,
  one event per group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, repeat, starmap

from app.pg.member import Member, NodeId
from app.pg.subscription import EventKind, Subscription

__all__ = ["GroupTable", "Multiset", "Owner", "expand"]

Multiset = dict[Member, int]


def expand(members: Multiset) -> tuple[Member, ...]:
    """The multiset as a tuple, each member repeated by its count (all in C)."""
    if len(members) == sum(members.values()):
        return tuple(members)  # no repeats, the common case: 6x faster
    return tuple(chain.from_iterable(starmap(repeat, members.items())))


class Owner:
    """What the table holds for one node: its groups and, for peers, its scope instance."""

    __slots__ = ("digest", "groups", "instance", "node")

    def __init__(self, node: NodeId, instance: int) -> None:
        self.node = node
        self.instance = instance
        self.groups: dict[str, Multiset] = {}
        # Anti-entropy digest of `groups`, cached until the next change.
        self.digest: str | None = None


class GroupTable:
    def __init__(self, local: NodeId, instance: int) -> None:
        self.local = Owner(local, instance)
        self.peers: dict[NodeId, Owner] = {}
        self.rows: dict[str, dict[NodeId, Multiset]] = {}
        self.all_cache: dict[str, tuple[Member, ...]] = {}
        self.local_cache: dict[str, tuple[Member, ...]] = {}
        self.scope_subs: dict[Subscription, None] = {}
        self.group_subs: dict[str, dict[Subscription, None]] = {}

    # Reads: never mutate anything but the caches.

    def members(self, group: str) -> tuple[Member, ...]:
        cached = self.all_cache.get(group)
        if cached is not None:
            return cached
        row = self.rows.get(group)
        if row is None:
            return ()  # not cached: unknown names must not grow the cache
        if len(row) == 1:
            result = expand(next(iter(row.values())))
        else:
            result = tuple(chain.from_iterable(map(expand, row.values())))
        self.all_cache[group] = result
        return result

    def local_members(self, group: str) -> tuple[Member, ...]:
        cached = self.local_cache.get(group)
        if cached is not None:
            return cached
        ms = self.local.groups.get(group)
        if ms is None:
            return ()
        result = self.local_cache[group] = expand(ms)
        return result

    def groups(self) -> list[str]:
        return list(self.rows)

    def local_groups(self) -> list[str]:
        return list(self.local.groups)

    def snapshot(self) -> dict[str, tuple[Member, ...]]:
        return {group: self.members(group) for group in self.rows}

    # Writes.

    def add(self, owner: Owner, group: str, members: Sequence[Member]) -> None:
        """Add one membership per listed occurrence (members must be non-empty)."""
        ms = owner.groups.get(group)
        if ms is None:
            ms = owner.groups[group] = {}
            row = self.rows.get(group)
            if row is None:
                row = self.rows[group] = {}
            row[owner.node] = ms
        get = ms.get
        for m in members:
            ms[m] = get(m, 0) + 1
        self._changed(owner, group)
        if self.scope_subs or group in self.group_subs:
            self._notify("join", group, tuple(members))

    def remove(self, owner: Owner, group: str, members: Iterable[Member]) -> list[Member]:
        """Remove one membership per listed occurrence; return the occurrences removed."""
        ms = owner.groups.get(group)
        if ms is None:
            return []
        removed = []
        for m in members:
            count = ms.get(m)
            if count is None:
                continue
            if count == 1:
                del ms[m]
            else:
                ms[m] = count - 1
            removed.append(m)
        if removed:
            if not ms:
                self._drop_group(owner, group)
            self._changed(owner, group)
            if self.scope_subs or group in self.group_subs:
                self._notify("leave", group, tuple(removed))
        return removed

    def replace(self, owner: Owner, groups: dict[str, Multiset]) -> None:
        """Make `owner`'s state equal `groups` (a sync), notifying the difference.

        `groups` is taken over, and must hold no empty multiset.
        """
        for group in [g for g in owner.groups if g not in groups]:
            ms = owner.groups[group]
            self._drop_group(owner, group)
            self._changed(owner, group)
            if self.scope_subs or group in self.group_subs:
                self._notify("leave", group, expand(ms))
        for group, new in groups.items():
            old = owner.groups.get(group)
            if old == new:
                continue
            owner.groups[group] = new
            row = self.rows.get(group)
            if row is None:
                row = self.rows[group] = {}
            row[owner.node] = new
            self._changed(owner, group)
            if self.scope_subs or group in self.group_subs:
                if old is None:
                    self._notify("join", group, expand(new))
                else:
                    # Leaves before joins, as OTP 29 translates a diff for old peers.
                    old_c, new_c = Counter(old), Counter(new)
                    gone, came = old_c - new_c, new_c - old_c
                    if gone:
                        self._notify("leave", group, tuple(gone.elements()))
                    if came:
                        self._notify("join", group, tuple(came.elements()))

    def add_peer(self, node: NodeId, instance: int) -> Owner:
        owner = self.peers[node] = Owner(node, instance)
        return owner

    def drop_peer(self, owner: Owner) -> None:
        """Forget peer `owner` and all its memberships (peer down, scope down, restart)."""
        del self.peers[owner.node]
        notify = self.scope_subs or self.group_subs
        for group, ms in owner.groups.items():
            row = self.rows[group]
            del row[owner.node]
            if not row:
                del self.rows[group]
            self.all_cache.pop(group, None)
            if notify and (self.scope_subs or group in self.group_subs):
                self._notify("leave", group, expand(ms))

    # Subscriptions.

    def subscribe(self, sub: Subscription) -> None:
        if sub.group is None:
            self.scope_subs[sub] = None
        else:
            self.group_subs.setdefault(sub.group, {})[sub] = None

    def unsubscribe(self, sub: Subscription) -> bool:
        if sub.group is None:
            return self.scope_subs.pop(sub, False) is None
        subs = self.group_subs.get(sub.group)
        if subs is None or sub not in subs:
            return False
        del subs[sub]
        if not subs:
            del self.group_subs[sub.group]
        return True

    def close_subscriptions(self) -> None:
        for sub in chain(self.scope_subs, *self.group_subs.values()):
            sub.close(flush=False)
        self.scope_subs.clear()
        self.group_subs.clear()

    # Internals.

    def _drop_group(self, owner: Owner, group: str) -> None:
        del owner.groups[group]
        row = self.rows[group]
        del row[owner.node]
        if not row:
            del self.rows[group]

    def _changed(self, owner: Owner, group: str) -> None:
        self.all_cache.pop(group, None)
        if owner is self.local:
            self.local_cache.pop(group, None)
        owner.digest = None

    def _notify(self, kind: EventKind, group: str, members: tuple[Member, ...]) -> None:
        overflowed = [
            sub
            for sub in chain(self.scope_subs, self.group_subs.get(group, ()))
            if not sub.push(kind, group, members)
        ]
        for sub in overflowed:
            self.unsubscribe(sub)
