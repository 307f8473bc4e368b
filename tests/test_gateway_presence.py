"""A gateway's presence (ws_gateway/presence.py), without sockets: what a join tracks, the
metas it makes, and what it tells the owners over links that record every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.clock import FakeClock
from ws_gateway.presence import LocalPresence, Synced, Tracked, meta_of, tracked, with_server_keys

LIMIT, DEPTH = 64, 4


@pytest.mark.parametrize(
    ("payload", "user", "own_key", "expected"),
    [
        ({}, None, True, Tracked(None, b"{}")),
        ({"presence": {"key": "alice"}}, None, True, Tracked("alice", b"{}")),
        ({"presence": {"key": "alice"}}, "bob", True, Tracked("bob", b"{}")),  # the user's
        ({"presence": {"key": "alice"}}, None, False, Tracked(None, b"{}")),  # not anyone's
        ({"presence": {"meta": {"a": 1}}}, "bob", False, Tracked("bob", b'{"a":1}')),
        (
            {"presence": {"key": ""}},
            None,
            True,
            "the presence key must be a string of 1 to 255 bytes",
        ),
        (
            {"presence": {"key": 7}},
            None,
            True,
            "the presence key must be a string of 1 to 255 bytes",
        ),
        (
            {"presence": {"key": "é" * 128}},
            None,
            True,
            "the presence key must be a string of 1 to 255 bytes",
        ),
        ({}, "é" * 128, False, "the presence key must be a string of 1 to 255 bytes"),
        ({"presence": []}, None, True, 'presence must be an object {"key": ..., "meta": {...}}'),
        ({"presence": {"meta": [1]}}, None, True, "the presence meta must be a JSON object"),
        ("not an object", None, True, Tracked(None, b"{}")),
    ],
)
def test_what_a_join_tracks(payload: Any, user: str | None, own_key: bool, expected: Any) -> None:
    assert tracked(payload, None, user, own_key, LIMIT, DEPTH) == expected


def test_a_meta_is_the_clients_own_bytes_without_the_servers_keys() -> None:
    raw = b'{"presence" : {"meta": {"n": 12345678901234567890123, "phx_ref": "x", "s": "a"}}}'
    wanted = tracked(orjson.loads(raw), raw, None, True, 1024, DEPTH)
    assert wanted == Tracked(None, b'{"n": 12345678901234567890123,"s": "a"}')


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        (
            {"s": "x" * LIMIT},
            f"the presence meta is larger than {LIMIT} bytes (DPS_MAX_PRESENCE_META)",
        ),
        ({"a": {"b": {"c": {"d": {}}}}}, f"the presence meta nests deeper than {DEPTH} levels"),
    ],
)
def test_a_meta_is_bounded(meta: Any, problem: str) -> None:
    assert meta_of(meta, None, LIMIT, DEPTH) == problem


def test_the_server_adds_its_keys_to_the_meta() -> None:
    assert with_server_keys(b"{}", "r1", 7, None) == b'{"phx_ref":"r1","online_at":7}'
    assert with_server_keys(b" { } ", "r1", 7, None) == b'{"phx_ref":"r1","online_at":7}'
    assert with_server_keys(b'{"a": 1 }\n', "r2", 7, "r1") == (
        b'{"a": 1,"phx_ref":"r2","online_at":7,"phx_ref_prev":"r1"}'
    )


class Link:
    """An owner link that records what it is told, and answers queries when asked to."""

    def __init__(self, name: str) -> None:
        self.owner = name
        self.calls: list[tuple[Any, ...]] = []
        self.queries: list[tuple[str, Callable[[bytes | str], None]]] = []

    def track(self, topic: str, key: str, ref: str, meta: bytes, prev: str | None) -> None:
        self.calls.append(("track", topic, key, ref, orjson.loads(meta), prev))

    def untrack(self, topic: str, key: str, ref: str) -> None:
        self.calls.append(("untrack", topic, key, ref))

    def presence(self, topic: str, on_presence: Callable[[bytes | str], None]) -> None:
        self.calls.append(("query", topic))
        self.queries.append((topic, on_presence))

    def answer(self, state: bytes | str) -> None:
        """Answer the queries asked so far."""
        queries, self.queries = self.queries, []
        for _, on_presence in queries:
            on_presence(state)

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


class Router:
    def __init__(self, *links: Link) -> None:
        self.links = set(links)

    def owner_of(self, topic: str) -> Link | None:
        return min(self.links, key=lambda link: link.owner, default=None)

    def listeners(self, topic: str) -> set[Link]:
        return set(self.links)


class Sock:
    def __init__(self, id: int) -> None:
        self.id = id
        self.pushed: list[tuple[Any, ...]] = []

    def push(self, join_ref: str | None, ref: None, topic: str, event: str, payload: Any) -> None:
        self.pushed.append((join_ref, ref, topic, event, orjson.loads(orjson.dumps(payload))))


def wall() -> float:
    return 1700000000.5


class Fixture:
    def __init__(self, *links: Link, linger: float = 5.0) -> None:
        self.clock = FakeClock(100.0)
        self.router = Router(*links)
        self.presence = LocalPresence(self.router, self.clock, wall, linger)  # type: ignore[arg-type]
        self.prefix = self.presence.prefix

    def track(self, sock: Sock, topic: str, join_ref: str, key: str | None = None) -> None:
        self.presence.track(sock, topic, join_ref, Tracked(key, b'{"a":1}'))  # type: ignore[arg-type]

    def end_of_turn(self) -> None:
        self.clock.advance(0)


def test_a_join_is_tracked_at_every_listener_then_its_state_asked_of_the_owner() -> None:
    a, b = Link("ts-a"), Link("ts-b")
    f = Fixture(a, b)
    sock = Sock(7)
    f.track(sock, "t", "3", "alice")
    ref = f"{f.prefix}1"
    meta = {"a": 1, "phx_ref": ref, "online_at": 1700000000}
    assert a.take() == b.take() == [("track", "t", "alice", ref, meta, None)]
    f.end_of_turn()
    assert a.take() == [("query", "t")]  # only the owner is asked
    assert b.take() == []
    a.answer(b'{"alice":{"metas":[]}}')
    assert sock.pushed == [("3", None, "t", "presence_state", {"alice": {"metas": []}})]
    assert f.presence.topics["t"][sock].synced is Synced.SENT  # type: ignore[index]


def test_the_joiners_of_one_turn_share_one_query_sent_after_all_their_tracks() -> None:
    link = Link("ts-a")
    f = Fixture(link)
    socks = [Sock(i) for i in range(3)]
    for i, sock in enumerate(socks):
        f.track(sock, "t", str(i), f"k{i}")
    f.track(Sock(9), "u", "1", "k")
    f.end_of_turn()
    assert [call[0] for call in link.take()] == ["track"] * 4 + ["query"] * 2
    link.answer(b"{}")
    assert [sock.pushed for sock in socks] == [
        [(str(i), None, "t", "presence_state", {})] for i in range(3)
    ]
    f.track(Sock(10), "t", "1", "k10")  # the next turn asks again
    f.end_of_turn()
    assert [call[0] for call in link.take()] == ["track", "query"]


def test_a_topic_has_one_query_in_flight_and_the_next_follows_its_answer() -> None:
    link = Link("ts-a")
    f = Fixture(link)
    first, second, third = Sock(1), Sock(2), Sock(3)
    f.track(first, "t", "1", "k1")
    f.end_of_turn()
    f.track(second, "t", "2", "k2")
    f.track(third, "t", "3", "k3")
    f.end_of_turn()
    assert [call[0] for call in link.take()] == ["track", "query", "track", "track"]
    link.answer(b'{"k1":{}}')  # the next query goes at once, after the tracks it follows
    assert [call[0] for call in link.take()] == ["query"]
    assert [len(s.pushed) for s in (first, second, third)] == [1, 0, 0]
    link.answer(b'{"k1":{},"k2":{},"k3":{}}')
    assert [len(s.pushed) for s in (first, second, third)] == [1, 1, 1]
    assert link.take() == [] and f.presence.querying == set()
    f.track(Sock(4), "t", "4", "k4")
    f.end_of_turn()
    assert [call[0] for call in link.take()] == ["track", "query"]


def test_a_socket_without_a_key_gets_its_own_and_refs_are_never_reused() -> None:
    link = Link("ts-a")
    f = Fixture(link)
    f.track(Sock(7), "t", "1")
    f.track(Sock(8), "t", "1")
    tracks = [call for call in link.take() if call[0] == "track"]
    assert [call[2] for call in tracks] == [f"{f.prefix}-7", f"{f.prefix}-8"]
    assert [call[3] for call in tracks] == [f"{f.prefix}1", f"{f.prefix}2"]
    assert Fixture().prefix != f.prefix  # another gateway


def test_an_answer_for_an_instance_that_is_gone_is_not_pushed() -> None:
    link = Link("ts-a")
    f = Fixture(link)
    sock = Sock(7)
    f.track(sock, "t", "3")
    f.end_of_turn()
    first = link.queries.pop()
    f.track(sock, "t", "9")  # joined again before the first answer came
    f.end_of_turn()
    first[1](b"{}")
    assert sock.pushed == []
    link.answer(b"{}")
    assert [push[0] for push in sock.pushed] == ["9"]
    f.track(sock, "u", "10")
    f.end_of_turn()
    f.presence.untrack(sock, "u")  # type: ignore[arg-type]
    link.answer(b"{}")
    assert len(sock.pushed) == 1


def test_a_rejoin_replaces_the_entry() -> None:
    link = Link("ts-a")
    f = Fixture(link)
    sock = Sock(7)
    f.track(sock, "t", "3", "alice")
    link.take()
    f.track(sock, "t", "4", "alice")
    assert [call[:4] for call in link.take()] == [
        ("untrack", "t", "alice", f"{f.prefix}1"),
        ("track", "t", "alice", f"{f.prefix}2"),
    ]


def test_an_update_replaces_the_entry_with_a_new_ref() -> None:
    link = Link("ts-a")
    f = Fixture(link)
    sock = Sock(7)
    f.track(sock, "t", "3", "alice")
    link.take()
    f.presence.update(sock, "t", b'{"away":true}')  # type: ignore[arg-type]
    old, new = f"{f.prefix}1", f"{f.prefix}2"
    meta = {"away": True, "phx_ref": new, "online_at": 1700000000, "phx_ref_prev": old}
    assert link.take() == [("track", "t", "alice", new, meta, old)]
    assert f.presence.topics["t"][sock].ref == new  # type: ignore[index]
    assert f.presence.gone["t"].refs == {old: "alice"}
    f.end_of_turn()
    link.answer(b"{}")  # the state asked before the update still reaches its instance
    assert [push[3] for push in sock.pushed] == ["presence_state"]


def test_an_untrack_goes_to_every_listener_once() -> None:
    a, b = Link("ts-a"), Link("ts-b")
    f = Fixture(a, b)
    sock = Sock(7)
    f.track(sock, "t", "3", "alice")
    a.take(), b.take()
    f.presence.untrack(sock, "t")  # type: ignore[arg-type]
    f.presence.untrack(sock, "t")  # type: ignore[arg-type]
    assert a.take() == b.take() == [("untrack", "t", "alice", f"{f.prefix}1")]
    assert f.presence.topics == {}
    f.end_of_turn()  # it left before its query went: the query goes, its answer is dropped
    a.answer(b"{}")
    assert sock.pushed == []


def test_a_new_owner_gets_every_entry_and_the_recent_untracks() -> None:
    old = Link("ts-a")
    f = Fixture(old)
    staying, leaving = Sock(1), Sock(2)
    f.track(staying, "t", "1", "alice")
    f.track(leaving, "t", "2", "bob")
    f.presence.untrack(leaving, "t")  # type: ignore[arg-type]
    f.end_of_turn()
    old.answer("the topic server went down before answering")
    assert f.presence.topics["t"][staying].synced is Synced.MISSING  # type: ignore[index]
    new = Link("ts-b")
    f.router.links = {new}
    f.presence.rerouted("t", {new})  # type: ignore[arg-type]
    f.end_of_turn()
    assert [call[:4] for call in new.take()] == [
        ("track", "t", "alice", f"{f.prefix}1"),
        ("untrack", "t", "bob", f"{f.prefix}2"),  # the old owner may have lost it
        ("query", "t"),  # the socket whose presence_state never came asks again
    ]
    f.presence.rerouted("t", {new})  # type: ignore[arg-type]
    f.end_of_turn()
    assert [call[0] for call in new.take()] == ["track"]  # untracks are told once per owner


def test_a_query_that_fails_with_an_owner_still_linked_is_asked_again_later() -> None:
    link = Link("ts-a")
    f = Fixture(link, linger=3.0)
    sock = Sock(1)
    f.track(sock, "t", "1", "alice")
    f.end_of_turn()
    link.take()
    link.answer("no answer from the topic server in time")
    f.clock.advance(2.9)
    assert link.take() == []
    f.clock.advance(0.1)
    f.end_of_turn()
    assert link.take() == [("query", "t")]
    link.answer(b"{}")
    f.clock.advance(3.0)  # answered: nothing more
    assert link.take() == [] and [push[3] for push in sock.pushed] == ["presence_state"]


def test_untracks_are_re_sent_only_for_linger_seconds() -> None:
    old = Link("ts-a")
    f = Fixture(old, linger=5.0)
    sock = Sock(1)
    f.track(sock, "t", "1", "alice")
    f.presence.untrack(sock, "t")  # type: ignore[arg-type]
    f.clock.advance(5.0)
    new = Link("ts-b")
    f.presence.rerouted("t", {new})  # type: ignore[arg-type]
    assert new.take() == []
    assert f.presence.gone == {} and not f.presence._expiry


def test_topics_this_gateway_left_get_their_recent_untracks_at_the_next_owner() -> None:
    old = Link("ts-a")
    f = Fixture(old)
    sock = Sock(1)
    f.track(sock, "t", "1", "alice")
    f.presence.untrack(sock, "t")  # the last socket: the gateway unsubscribes  # type: ignore[arg-type]
    f.presence.reroute_left(set())
    assert [call[0] for call in old.take()] == ["track", "untrack"]  # told already
    new = Link("ts-b")
    f.router.links = {new}
    f.presence.reroute_left({"other"})
    assert new.take() == [("untrack", "t", "alice", f"{f.prefix}1")]
    f.presence.reroute_left({"t"})  # subscribed again: `rerouted` tells its new owners
    f.router.links = {Link("ts-c")}
    f.presence.reroute_left({"t"})
    assert [link.take() for link in f.router.links] == [[]]


def test_without_an_owner_the_state_is_asked_once_there_is_one() -> None:
    f = Fixture()
    sock = Sock(1)
    f.track(sock, "t", "1", "alice")
    f.end_of_turn()
    assert f.presence.topics["t"][sock].synced is Synced.MISSING  # type: ignore[index]
    owner = Link("ts-a")
    f.router.links = {owner}
    f.presence.rerouted("t", {owner})  # type: ignore[arg-type]
    f.end_of_turn()
    assert [call[0] for call in owner.take()] == ["track", "query"]
    owner.answer(b"{}")
    assert [push[3] for push in sock.pushed] == ["presence_state"]
