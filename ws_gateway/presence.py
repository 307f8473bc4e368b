"""Presence on a gateway: the entries of its own sockets, and what it tells the owners.

On a topic whose channel rule says `presence = true`, a socket is tracked once its join is
done. Its entry: a key (its user, or the key its join gave, or one of its own, see
`tracked`), a `phx_ref` made here (this gateway's random prefix and a counter: unique in
the cluster), the join_ref of its channel instance, and its meta as JSON bytes, the
client's object with `phx_ref`, `online_at` (seconds) and, after an update, `phx_ref_prev`.
The gateway is the truth about its own sockets; the topic's owner merges every gateway's
entries and broadcasts the diffs (`topic_server.presence`), which reach every subscriber
through the ordinary fan-out.

    track    a join is done: the entry goes to every owner the topic is subscribed at
             (`Router.listeners`); at the end of the turn, one presence query to the topic's
             owner for all of the turn's joiners of the topic, sent after their tracks; its
             answer, which holds them, is pushed to each as `presence_state` (after its join
             reply, and only to the instance that asked). A topic has one query in flight
             at most: joiners that come meanwhile share the next one, sent when the answer
             comes. So states, as large as the topic's presence, cross the link at the pace
             the gateway takes them in, never one per joiner. Until its state is sent, a
             socket is `unsynced`: the gateway does not send it diffs, which its state,
             made after them, holds already; so a client sees its join reply, then its
             state, then diffs. A rejoin replaces the entry.
    update   a new entry, with a new ref, replaces the socket's (`prev`): a diff with the
             leave of the old meta and the join of the new one.
    untrack  the socket left the topic, or went away.
    rerouted the topic is now subscribed at new owners (a failover, or a handover that
             begins): each gets every entry of the topic again, then an untrack of every
             entry that left in the last `linger` seconds, which the former owner may have
             lost on its way down (the new one reports them gone even though it never had
             them, so that no client keeps a ghost). A socket whose `presence_state` never
             came (its query failed with the former owner) asks again; so does one whose
             query failed (timed out) with an owner still linked, `linger` seconds later.
             Topics this gateway no longer subscribes to get their recent untracks re-sent
             too, to the owners that have not had them (`reroute_left`).

`linger` must outlast the time a hung owner takes to be declared down (DPS_LINK_TIMEOUT and
a quarter of it): an untrack it swallowed meanwhile is still re-sent to its successor.
Time is an input: `clock` ends turns and measures `linger`, `wall` (seconds since the epoch)
gives `online_at`.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Collection, Container
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from app.clock import Clock
from ws_gateway import payloads
from ws_gateway.serializers.protocol import MAX_FIELD_BYTES
from ws_gateway.socket import Socket

if TYPE_CHECKING:
    from app.link.interface import OwnerLink
    from ws_gateway.gateway import Router

PRESENCE_STATE = "presence_state"
UNOWNED = "no topic server owns the topic"  # a query that could not be asked
RESERVED = frozenset({"phx_ref", "phx_ref_prev", "online_at"})  # the server's meta keys


class Tracked(NamedTuple):
    """What a join asks to track: its key (None: one of the socket's own) and its meta, the
    client's JSON object without the server's keys."""

    key: str | None
    meta: bytes


def meta_of(value: Any, raw: bytes | None, limit: int, max_depth: int) -> bytes | str:
    """The meta object `value` (the client's own bytes `raw`, when known) as bytes, without
    the server's keys; or why it cannot be a meta."""
    if not isinstance(value, dict):
        return "the presence meta must be a JSON object"
    data = raw if raw is not None else orjson.dumps(value)
    if len(data) > limit:
        return f"the presence meta is larger than {limit} bytes (DPS_MAX_PRESENCE_META)"
    if payloads.too_deep(data, value, max_depth):
        return f"the presence meta nests deeper than {max_depth} levels"
    return payloads.without(data, RESERVED) if RESERVED & value.keys() else data


def tracked(
    payload: Any, raw: bytes | None, user: str | None, own_key: bool, limit: int, depth: int
) -> Tracked | str:
    """What the join payload `payload` (its bytes `raw`, when known) of a socket whose user
    is `user` asks to track, `{"presence": {"key": ..., "meta": {...}}}`, both optional; or
    why it cannot be tracked. The key is the user's; else, when `own_key` (the rule lets
    anyone join), the payload's; else the socket's own."""
    given = payload.get("presence", {}) if isinstance(payload, dict) else {}
    if not isinstance(given, dict):
        return 'presence must be an object {"key": ..., "meta": {...}}'
    key = user if user is not None or not own_key else given.get("key")
    if key is not None and not (isinstance(key, str) and 0 < len(key.encode()) <= MAX_FIELD_BYTES):
        return f"the presence key must be a string of 1 to {MAX_FIELD_BYTES} bytes"
    if "meta" not in given:
        return Tracked(key, b"{}")
    raw_given = None if raw is None else payloads.member(raw, "presence")
    raw_meta = None if raw_given is None else payloads.member(raw_given, "meta")
    meta = meta_of(given["meta"], raw_meta, limit, depth)
    return meta if isinstance(meta, str) else Tracked(key, meta)


def with_server_keys(meta: bytes, ref: str, online_at: int, prev: str | None) -> bytes:
    """The client's meta object with the keys the server sets."""
    ours = {"phx_ref": ref, "online_at": online_at}
    if prev is not None:
        ours["phx_ref_prev"] = prev
    added = orjson.dumps(ours)
    body = meta.strip()
    if not body[1:-1].strip():
        return added
    return body[:-1].rstrip() + b"," + added[1:]


class Synced(Enum):
    """Whether a socket has had its `presence_state`."""

    ASKED = "asked"  # the query is on its way
    SENT = "sent"
    MISSING = "missing"  # failed, or no owner: asked again at a reroute, or `linger` later


class Entry:
    __slots__ = ("join_ref", "key", "meta", "ref", "synced")

    def __init__(self, join_ref: str | None, key: str, ref: str, meta: bytes) -> None:
        self.join_ref = join_ref
        self.key = key
        self.ref = ref
        self.meta = meta  # with the server's keys: what the owner stores and sends
        self.synced = Synced.ASKED


class Gone:
    """A topic's entries that left lately, and the owners that were told."""

    __slots__ = ("refs", "told")

    def __init__(self) -> None:
        self.refs: dict[str, str] = {}  # ref -> key
        self.told: set[OwnerLink] = set()


class LocalPresence:
    __slots__ = (
        "_expiry",
        "_refs",
        "asking",
        "clock",
        "gone",
        "linger",
        "prefix",
        "querying",
        "router",
        "topics",
        "unsynced",
        "wall",
    )

    def __init__(
        self, router: Router, clock: Clock, wall: Callable[[], float], linger: float
    ) -> None:
        self.router = router
        self.clock = clock
        self.wall = wall
        self.linger = linger
        self.prefix = secrets.token_urlsafe(9)  # 72 random bits: unique to this gateway
        self._refs = itertools.count(1)
        self.topics: dict[str, dict[Socket, Entry]] = {}
        self.asking: dict[str, dict[Socket, str | None]] = {}  # the next query's, join_refs
        self.querying: set[str] = set()  # topics with a query due this turn, or in flight
        self.unsynced: dict[str, set[Socket]] = {}  # by topic: the sockets awaiting a state
        self.gone: dict[str, Gone] = {}  # by topic
        self._expiry: deque[tuple[float, str, str]] = deque()  # (when, topic, ref) of `gone`

    def track(self, sock: Socket, topic: str, join_ref: str | None, wanted: Tracked) -> None:
        now = self.clock.time()
        key = wanted.key if wanted.key is not None else f"{self.prefix}-{sock.id}"
        ref = self._new_ref()
        meta = with_server_keys(wanted.meta, ref, int(self.wall()), None)
        entry = Entry(join_ref, key, ref, meta)
        entries = self.topics.setdefault(topic, {})
        old = entries.get(sock)
        entries[sock] = entry
        links = self.router.listeners(topic)
        if old is not None:
            self._untracked(links, topic, old, now)
        for link in links:
            link.track(topic, key, ref, entry.meta, None)
        self._query(sock, topic, entry)

    def update(self, sock: Socket, topic: str, meta: bytes) -> None:
        """A new meta for the socket's entry on `topic`."""
        entries = self.topics[topic]
        old = entries[sock]
        ref = self._new_ref()
        full = with_server_keys(meta, ref, int(self.wall()), old.ref)
        entry = Entry(old.join_ref, old.key, ref, full)
        entry.synced = old.synced
        entries[sock] = entry
        links = self.router.listeners(topic)
        for link in links:
            link.track(topic, entry.key, ref, entry.meta, old.ref)
        self._gone(links, topic, old, self.clock.time())

    def untrack(self, sock: Socket, topic: str) -> None:
        """The socket left `topic` (if it was tracked there)."""
        entries = self.topics.get(topic)
        entry = None if entries is None else entries.pop(sock, None)
        if entry is None:
            return
        if not entries:
            del self.topics[topic]
        self._synced(topic, sock)
        self._untracked(self.router.listeners(topic), topic, entry, self.clock.time())

    def waiting(self, topic: str) -> Collection[Socket]:
        """The sockets of `topic` whose `presence_state` has not been sent yet."""
        return self.unsynced.get(topic, ())

    def rerouted(self, topic: str, added: set[OwnerLink]) -> None:
        """`topic` is now also subscribed at `added`: tell them everything they must know."""
        self._forget(self.clock.time())
        entries = self.topics.get(topic, {})
        for link in added:
            for entry in entries.values():
                link.track(topic, entry.key, entry.ref, entry.meta, None)
        self._tell_gone(topic, added)
        self._ask_missing(topic)

    def reroute_left(self, subscribed: Container[str]) -> None:
        """The ring changed: the owners of topics no longer `subscribed` here that have not
        had this gateway's recent untracks get them."""
        self._forget(self.clock.time())
        for topic in [topic for topic in self.gone if topic not in subscribed]:
            self._tell_gone(topic, self.router.listeners(topic))

    def _tell_gone(self, topic: str, links: set[OwnerLink]) -> None:
        gone = self.gone.get(topic)
        if gone is None:
            return
        for link in links - gone.told:
            for ref, key in gone.refs.items():
                link.untrack(topic, key, ref)
        gone.told |= links

    def _query(self, sock: Socket, topic: str, entry: Entry) -> None:
        """`sock` wants its `presence_state`: asked at the end of the turn, or once the
        query in flight is answered."""
        entry.synced = Synced.ASKED
        self.unsynced.setdefault(topic, set()).add(sock)
        self.asking.setdefault(topic, {})[sock] = entry.join_ref
        if topic not in self.querying:
            self.querying.add(topic)
            self.clock.call_later(0, self._ask, topic)

    def _ask(self, topic: str) -> None:
        asking = self.asking.pop(topic)
        owner = self.router.owner_of(topic)
        if owner is None:
            self._answer(topic, asking, UNOWNED)
        else:
            owner.presence(topic, lambda state: self._answer(topic, asking, state))

    def _answer(self, topic: str, asking: dict[Socket, str | None], state: bytes | str) -> None:
        self._answered(topic, asking, state)
        if topic in self.asking:
            self._ask(topic)  # after the tracks of those who came meanwhile
        else:
            self.querying.discard(topic)
        if isinstance(state, str) and state != UNOWNED:
            # Failed with an owner: a link that went down means a reroute will ask again
            # soon; one that stayed up (the owner too slow to answer) would not.
            self.clock.call_later(self.linger, self._ask_missing, topic)

    def _ask_missing(self, topic: str) -> None:
        """Ask again for the sockets of `topic` whose query failed, if they still wait."""
        entries = self.topics.get(topic, {})
        for sock in list(self.unsynced.get(topic, ())):
            entry = entries[sock]
            if entry.synced is Synced.MISSING:
                self._query(sock, topic, entry)

    def _answered(self, topic: str, asking: dict[Socket, str | None], state: bytes | str) -> None:
        entries = self.topics.get(topic, {})
        for sock, join_ref in asking.items():
            current = entries.get(sock)
            if current is None or current.join_ref != join_ref:
                continue  # left, or joined again (and asked again)
            if isinstance(state, str):
                current.synced = Synced.MISSING
                continue
            current.synced = Synced.SENT
            self._synced(topic, sock)
            sock.push(join_ref, None, topic, PRESENCE_STATE, orjson.Fragment(state))

    def _synced(self, topic: str, sock: Socket) -> None:
        """`sock` waits for no state on `topic` any more."""
        waiting = self.unsynced.get(topic)
        if waiting is not None:
            waiting.discard(sock)
            if not waiting:
                del self.unsynced[topic]

    def _untracked(self, links: set[OwnerLink], topic: str, entry: Entry, now: float) -> None:
        for link in links:
            link.untrack(topic, entry.key, entry.ref)
        self._gone(links, topic, entry, now)

    def _gone(self, told: set[OwnerLink], topic: str, entry: Entry, now: float) -> None:
        """`entry` is no longer this gateway's, as `told` know: remember it for `linger`."""
        self._forget(now)
        gone = self.gone.get(topic)
        if gone is None:
            gone = self.gone[topic] = Gone()
        gone.refs[entry.ref] = entry.key
        gone.told |= told
        self._expiry.append((now, topic, entry.ref))

    def _forget(self, now: float) -> None:
        """Entries gone for longer than `linger` need not be re-sent any more."""
        expiry, deadline = self._expiry, now - self.linger
        while expiry and expiry[0][0] <= deadline:
            _, topic, ref = expiry.popleft()
            gone = self.gone[topic]
            del gone.refs[ref]
            if not gone.refs:
                del self.gone[topic]

    def _new_ref(self) -> str:
        return f"{self.prefix}{next(self._refs):x}"
