"""The ring and the gateway's routing over it, without sockets, on a manual clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.link.interface import OnOutcome
from app.ring import Declared, Ring, RingConfig, RingError, load
from tests.clock import FakeClock
from ws_gateway.router import ClusterRouter

CONFIG = RingConfig(
    {name: Declared(name, 1, None) for name in ("ts-a", "ts-b", "ts-c")}, 160, Path("ring.toml")
)
TOPICS = [f"rooms:{i}" for i in range(2000)]


class Link:
    def __init__(self, owner: str) -> None:
        self.owner = owner

    def subscribe(self, topic: str) -> None: ...

    def unsubscribe(self, topic: str) -> None: ...

    def publish(
        self, topic: str, event: str, payload: bytes, binary: bool, on_outcome: OnOutcome
    ) -> None: ...

    def __repr__(self) -> str:
        return self.owner


def test_only_the_topics_of_a_server_that_leaves_move() -> None:
    three = Ring(CONFIG, ["ts-a", "ts-b", "ts-c"])
    two = Ring(CONFIG, ["ts-a", "ts-c"])
    before = {t: three.owner(t) for t in TOPICS}
    after = {t: two.owner(t) for t in TOPICS}
    moved = {t for t in TOPICS if before[t] != after[t]}
    assert moved == {t for t in TOPICS if before[t] == "ts-b"}
    assert 500 < len(moved) < 850  # about a third


def test_every_gateway_computes_the_same_owner_whatever_the_order() -> None:
    assert all(
        Ring(CONFIG, ["ts-c", "ts-a"]).owner(t) == Ring(CONFIG, ["ts-a", "ts-c"]).owner(t)
        for t in TOPICS
    )


def test_weights_share_the_topics() -> None:
    config = RingConfig(
        {"a": Declared("a", 3, None), "b": Declared("b", 1, None)}, 160, Path("ring.toml")
    )
    ring = Ring(config, ["a", "b"])
    owners = [ring.owner(t) for t in TOPICS]
    assert 2 < owners.count("a") / owners.count("b") < 4


def test_shares_are_the_fractions_of_topics_each_server_owns() -> None:
    ring = Ring(CONFIG, ["ts-a", "ts-b", "ts-c"])
    shares = ring.shares()
    assert sorted(shares) == ["ts-a", "ts-b", "ts-c"]
    assert sum(shares.values()) == pytest.approx(1.0)
    owners = [ring.owner(t) for t in TOPICS]
    for name, share in shares.items():
        assert owners.count(name) / len(TOPICS) == pytest.approx(share, abs=0.04)
    assert Ring(CONFIG, ["ts-b"]).shares() == {"ts-b": 1.0}
    assert Ring(CONFIG, []).shares() == {}


def test_undeclared_servers_are_not_on_the_ring() -> None:
    assert Ring(CONFIG, ["ts-x"]).owner("t") is None


def test_ring_toml_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "ring.toml"
    for text, problem in [
        ("vnodes = 0", "vnodes must be an integer"),
        ("[[topic_server]]\nweight = 1", "needs a name"),
        ('[[topic_server]]\nname = "a"\n[[topic_server]]\nname = "a"', "declared twice"),
        ('[[topic_server]]\nname = "a"\naddress = "nowhere"', "address must be"),
        ("", "declares no [[topic_server]]"),
        ("not toml [", "cannot read"),
    ]:
        path.write_text(text)
        with pytest.raises(RingError, match=re.escape(problem)):
            load(path)


def owned_by(name: str, live: list[str]) -> str:
    ring = Ring(CONFIG, live)
    return next(t for t in TOPICS if ring.owner(t) == name)


def test_a_joining_server_is_listened_to_first_then_owns_then_the_old_owner_retires() -> None:
    changes = []
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=0.1, on_change=lambda: changes.append(1), clock=clock)
    a, b = Link("ts-a"), Link("ts-b")
    topic = owned_by("ts-b", ["ts-a", "ts-b"])
    assert router.owner_of(topic) is None
    router.server_up("ts-a", a, linked_for=10.0)  # linked long ago: settles at once
    assert router.owner_of(topic) is a
    router.server_up("ts-b", b, linked_for=0.0)  # just started: others are not there yet
    assert router.owner_of(topic) is a
    assert router.listeners(topic) == {a, b}
    assert router.pending == {"ts-b"}
    clock.advance(0.099)
    assert router.owner_of(topic) is a
    clock.advance(0.001)
    assert router.owner_of(topic) is b
    assert router.pending == set()
    assert router.listeners(topic) == {a, b}  # a retires only after another handover
    clock.advance(0.099)
    assert router.listeners(topic) == {a, b}
    clock.advance(0.001)
    assert router.listeners(topic) == {b}
    assert len(changes) == 4  # a up, b up, b settled, a's ring retired


def test_a_server_that_goes_down_loses_its_topics_at_once() -> None:
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=5.0, on_change=lambda: None, clock=clock)
    a, b = Link("ts-a"), Link("ts-b")
    router.server_up("ts-a", a, linked_for=9.0)
    router.server_up("ts-b", b, linked_for=9.0)
    topic = owned_by("ts-b", ["ts-a", "ts-b"])
    assert router.owner_of(topic) is b
    router.server_down("ts-b")
    assert router.owner_of(topic) is a
    assert router.listeners(topic) == {a}
    router.server_down("ts-a")
    assert router.owner_of(topic) is None
    assert router.listeners(topic) == set()


def test_servers_agree_on_the_moment_from_the_servers_linked_time() -> None:
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=2.0, on_change=lambda: None, clock=clock)
    a, b = Link("ts-a"), Link("ts-b")
    router.server_up("ts-a", a, linked_for=10.0)
    router.server_up("ts-b", b, linked_for=1.5)  # another gateway linked it 1.5 s ago
    topic = owned_by("ts-b", ["ts-a", "ts-b"])
    assert router.owner_of(topic) is a
    clock.advance(0.49)
    assert router.owner_of(topic) is a
    clock.advance(0.01)  # 2.0 s after the server was first linked, as for that gateway
    assert router.owner_of(topic) is b


def test_a_server_that_relinks_after_going_down_waits_a_whole_handover_again() -> None:
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=5.0, on_change=lambda: None, clock=clock)
    a, b = Link("ts-a"), Link("ts-b")
    topic = owned_by("ts-b", ["ts-a", "ts-b"])
    router.server_up("ts-a", a, linked_for=10.0)
    router.server_up("ts-b", b, linked_for=0.0)  # would settle at 5
    clock.advance(1.0)
    router.server_down("ts-b")
    clock.advance(1.0)
    router.server_up("ts-b", b, linked_for=0.0)  # settles at 7, not at 5
    clock.advance(3.0)
    assert router.owner_of(topic) is a
    assert router.pending == {"ts-b"}
    clock.advance(2.0)
    assert router.owner_of(topic) is b


def test_a_newer_incarnation_linked_before_settling_waits_its_own_handover() -> None:
    changes = []
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=5.0, on_change=lambda: changes.append(1), clock=clock)
    a, old, new = Link("ts-a"), Link("ts-b"), Link("ts-b")
    topic = owned_by("ts-b", ["ts-a", "ts-b"])
    router.server_up("ts-a", a, linked_for=10.0)
    router.server_up("ts-b", old, linked_for=0.0)  # would settle at 5
    clock.advance(2.0)
    # ts-b restarted: its new incarnation links without the old link being seen down.
    router.server_up("ts-b", new, linked_for=0.0)  # settles at 7
    clock.advance(3.0)
    assert router.owner_of(topic) is a
    assert router.pending == {"ts-b"}
    clock.advance(2.0)
    assert router.owner_of(topic) is new
    assert router.listeners(topic) == {a, new}
    clock.advance(5.0)
    assert router.listeners(topic) == {new}
    assert len(changes) == 5  # a up, b up, b up again, b settled, a's ring retired


def test_a_newer_incarnation_that_settles_at_once_is_not_settled_again_later() -> None:
    changes = []
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=5.0, on_change=lambda: changes.append(1), clock=clock)
    router.server_up("ts-a", Link("ts-a"), linked_for=10.0)
    router.server_up("ts-b", Link("ts-b"), linked_for=0.0)  # would settle at 5
    router.server_up("ts-b", Link("ts-b"), linked_for=9.0)  # linked long ago elsewhere
    assert router.settled == {"ts-a", "ts-b"}
    clock.advance(20.0)
    assert len(changes) == 4  # a up, b up, b up again and settled, a's ring retired; no more


# Ring moves at scale (what bench/ring_moves.py measures with real processes): a server
# that joins takes about 1/N of the topics and moves none between the others; one that
# leaves moves only its own.
TEN_THOUSAND = [f"topic:{i}" for i in range(10_000)]


def test_of_10000_topics_a_third_server_takes_about_a_third_and_nothing_else_moves() -> None:
    config = load(Path(__file__).resolve().parent.parent / "ring.toml")  # the shipped vnodes
    config = RingConfig({**CONFIG.servers}, config.vnodes, config.path)
    two = Ring(config, ["ts-a", "ts-b"])
    three = Ring(config, ["ts-a", "ts-b", "ts-c"])
    moved = [t for t in TEN_THOUSAND if two.owner(t) != three.owner(t)]
    assert {three.owner(t) for t in moved} == {"ts-c"}
    assert 0.29 < len(moved) / len(TEN_THOUSAND) < 0.38  # the ideal: 1/3


@pytest.mark.parametrize("leaving", ["ts-a", "ts-b", "ts-c"])
def test_of_10000_topics_a_server_that_leaves_moves_exactly_its_own(leaving: str) -> None:
    three = Ring(CONFIG, ["ts-a", "ts-b", "ts-c"])
    two = Ring(CONFIG, [name for name in ("ts-a", "ts-b", "ts-c") if name != leaving])
    moved = {t for t in TEN_THOUSAND if two.owner(t) != three.owner(t)}
    assert moved == {t for t in TEN_THOUSAND if three.owner(t) == leaving}
    assert 0.29 < len(moved) / len(TEN_THOUSAND) < 0.38


def test_the_router_moves_to_a_joining_server_its_third_only_and_gives_it_back_on_leaving() -> None:
    clock = FakeClock()
    router = ClusterRouter(CONFIG, handover=2.0, on_change=lambda: None, clock=clock)
    a, b, c = Link("ts-a"), Link("ts-b"), Link("ts-c")
    router.server_up("ts-a", a, linked_for=10.0)
    router.server_up("ts-b", b, linked_for=10.0)
    clock.advance(2.0)  # the ring of ts-a alone has retired
    before = {t: router.owner_of(t) for t in TEN_THOUSAND}
    router.server_up("ts-c", c, linked_for=0.0)
    # Listened to at once (gateways subscribe there), owning nothing until it settles.
    assert {t: router.owner_of(t) for t in TEN_THOUSAND} == before
    moving = {t for t in TEN_THOUSAND if c in router.listeners(t)}
    assert all(router.listeners(t) == {before[t], c} for t in moving)
    assert all(router.listeners(t) == {before[t]} for t in TEN_THOUSAND if t not in moving)
    clock.advance(2.0)
    after = {t: router.owner_of(t) for t in TEN_THOUSAND}
    assert {t for t in TEN_THOUSAND if after[t] != before[t]} == moving
    assert {after[t] for t in moving} == {c}
    assert 0.29 < len(moving) / len(TEN_THOUSAND) < 0.38
    router.server_down("ts-c")
    assert {t: router.owner_of(t) for t in TEN_THOUSAND} == before
