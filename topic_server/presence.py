"""A topic server's presence: the merged entries of every gateway, and the diffs of a turn.

The owner of a topic holds its presence as the union of what the topic's gateways track.
Each gateway tells it only about its own sockets; the owner merges, and is the one place
that knows the whole. An entry is a `ref` (its meta's `phx_ref`, unique in the cluster)
with its `key`, its `meta` (JSON bytes, stored and sent exactly as the gateway made them,
never re-encoded) and the gateway it belongs to.

    track(g, topic, key, ref, meta, prev)   ref joins (after prev leaves, when not None)
    untrack(g, topic, key, ref)              ref leaves; a ref this owner never had is
                                             reported gone all the same, as {"phx_ref": ref}
                                             (a gateway re-sends the untracks the topic's
                                             former owner may have lost, see
                                             `ws_gateway.presence`)
    drop(g) / drop(g, topic)                 g's link is gone (or it left the topic): every
                                             entry of g leaves

A track of a ref that is already there changes nothing: a gateway re-sends its entries to
every owner it subscribes at. Only a ref's own gateway removes it.

Every change goes into its topic's diff of the current turn: joins and leaves by key, in
order. `take_diffs` hands out one diff per changed topic, the JSON object of a
`presence_diff`, whatever the number of changes: a mass disconnect is one diff per topic.
A ref that joins and leaves within one turn is in both lists: phoenix.js applies a diff's
joins before its leaves, so the diff still takes the ref out for a client whose
`presence_state` was served mid-turn, with the ref in it. A ref that leaves and joins again
within one turn (its gateway left the topic at this owner and came back, as a ring move
back and forth does) is only in the joins: in both lists it would end up taken out, though
it is there; a join of a ref a client has already changes nothing for it.

Invariants: `_gateways[g][topic]` holds exactly the refs of g's entries in `topic`, and
`_topics[topic].keys` exactly its entries by key; an empty topic, key or gateway holds no
memory. A topic's `state` is encoded once per change of the topic, each key's part of it
once per change of that key, so a joiner's `presence_state` costs a join of bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import orjson

G = TypeVar("G")  # a gateway link: any hashable handle


class _Entry(Generic[G]):
    __slots__ = ("gateway", "key", "meta")

    def __init__(self, key: str, meta: bytes, gateway: G) -> None:
        self.key = key
        self.meta = meta
        self.gateway = gateway


class _Key:
    """The metas of one key on one topic, in the order they joined."""

    __slots__ = ("encoded", "metas")

    def __init__(self) -> None:
        self.metas: dict[str, bytes] = {}  # ref -> meta
        self.encoded: orjson.Fragment | None = None  # {"metas": [...]}, until it changes

    def fragment(self) -> orjson.Fragment:
        if self.encoded is None:
            self.encoded = orjson.Fragment(orjson.dumps(_metas(self.metas.values())))
        return self.encoded


class _Topic(Generic[G]):
    __slots__ = ("entries", "keys", "state")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry[G]] = {}  # ref -> entry
        self.keys: dict[str, _Key] = {}
        self.state: bytes | None = None  # the encoded presence, until it changes


class _Diff:
    __slots__ = ("joins", "leaves")

    def __init__(self) -> None:
        # key -> ref -> meta, in the order they came
        self.joins: dict[str, dict[str, bytes]] = {}
        self.leaves: dict[str, dict[str, bytes]] = {}

    def joined(self, key: str, ref: str, meta: bytes) -> None:
        left = self.leaves.get(key)
        if left is not None and left.pop(ref, None) is not None and not left:
            del self.leaves[key]
        self.joins.setdefault(key, {})[ref] = meta

    def left(self, key: str, ref: str, meta: bytes) -> None:
        self.leaves.setdefault(key, {})[ref] = meta

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "joins": {key: _metas(metas.values()) for key, metas in self.joins.items()},
                "leaves": {key: _metas(metas.values()) for key, metas in self.leaves.items()},
            }
        )


def _metas(metas: Iterable[bytes]) -> dict[str, Any]:
    return {"metas": [orjson.Fragment(meta) for meta in metas]}


class PresenceTable(Generic[G]):
    __slots__ = ("_diffs", "_gateways", "_topics", "changes")

    def __init__(self) -> None:
        self._topics: dict[str, _Topic[G]] = {}
        self._gateways: dict[G, dict[str, set[str]]] = {}  # gateway -> topic -> refs
        self._diffs: dict[str, _Diff] = {}  # this turn's, by topic
        self.changes = 0  # joins and leaves so far

    def __len__(self) -> int:
        """Entries, on every topic."""
        return sum(len(topic.entries) for topic in self._topics.values())

    @property
    def changed(self) -> bool:
        """Whether this turn has diffs to hand out."""
        return bool(self._diffs)

    def track(
        self, gateway: G, topic: str, key: str, ref: str, meta: bytes, prev: str | None = None
    ) -> None:
        if prev is not None:
            self.untrack(gateway, topic, key, prev)
        place = self._topics.get(topic)
        if place is None:
            place = self._topics[topic] = _Topic()
        elif ref in place.entries:
            return
        place.entries[ref] = _Entry(key, meta, gateway)
        metas = place.keys.get(key)
        if metas is None:
            metas = place.keys[key] = _Key()
        metas.metas[ref] = meta
        metas.encoded = place.state = None
        self._gateways.setdefault(gateway, {}).setdefault(topic, set()).add(ref)
        self._diff(topic).joined(key, ref, meta)

    def untrack(self, gateway: G, topic: str, key: str, ref: str) -> None:
        place = self._topics.get(topic)
        entry = None if place is None else place.entries.get(ref)
        if entry is None:
            self._diff(topic).left(key, ref, orjson.dumps({"phx_ref": ref}))
        elif entry.gateway == gateway:
            self._remove(topic, ref)

    def drop(self, gateway: G, topic: str | None = None) -> None:
        """Every entry of `gateway` (on `topic`, or on every topic) leaves."""
        mine = self._gateways.get(gateway, {})
        for name in list(mine) if topic is None else [topic]:
            for ref in list(mine.get(name, ())):
                self._remove(name, ref)

    def state(self, topic: str) -> bytes:
        """The topic's presence as `presence_state` carries it: {key: {"metas": [...]}}."""
        place = self._topics.get(topic)
        if place is None:
            return b"{}"
        if place.state is None:
            place.state = orjson.dumps({key: m.fragment() for key, m in place.keys.items()})
        return place.state

    def take_diffs(self) -> list[tuple[str, bytes]]:
        """This turn's diffs, one per changed topic, as `presence_diff` payloads; the next
        turn starts empty."""
        diffs, self._diffs = self._diffs, {}
        return [(topic, diff.encode()) for topic, diff in diffs.items()]

    def _remove(self, topic: str, ref: str) -> None:
        place = self._topics[topic]
        entry = place.entries.pop(ref)
        metas = place.keys[entry.key]
        del metas.metas[ref]
        metas.encoded = place.state = None
        if not metas.metas:
            del place.keys[entry.key]
        if not place.entries:
            del self._topics[topic]
        mine = self._gateways[entry.gateway]
        refs = mine[topic]
        refs.discard(ref)
        if not refs:
            del mine[topic]
            if not mine:
                del self._gateways[entry.gateway]
        self._diff(topic).left(entry.key, ref, entry.meta)

    def _diff(self, topic: str) -> _Diff:
        self.changes += 1
        diff = self._diffs.get(topic)
        if diff is None:
            diff = self._diffs[topic] = _Diff()
        return diff
