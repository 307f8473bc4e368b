"""What a node concludes from Redis's answers (`Liveness`), with the time as an input."""

from __future__ import annotations

import itertools

from app.discovery import Liveness, NodeRecord, RedisState, Round

TTL = 3.0
NODES = {"ts-a": NodeRecord("ts-a", "ts", "inc", "127.0.0.1:5000")}


def test_a_node_counts_absences_only_after_a_whole_ttl_of_answers() -> None:
    liveness = Liveness(TTL)
    assert not liveness.registered
    assert liveness.answered(100.0, NODES) == Round((NODES, False), news=True)
    assert liveness.registered
    assert liveness.answered(102.5, NODES) == Round((NODES, False), news=False)
    assert liveness.answered(103.0, {}) == Round(({}, True), news=False)


def test_an_unreachable_redis_reports_nothing_and_a_ttl_starts_over_when_it_is_back() -> None:
    liveness = Liveness(TTL)
    liveness.answered(0.0, NODES)
    assert liveness.answered(10.0, NODES).report == (NODES, True)
    assert liveness.unreachable() == Round(None, news=True)
    assert liveness.unreachable() == Round(None, news=False)  # logged once per outage
    # Redis restarted empty: only this node has renewed yet, the others are not gone.
    assert liveness.answered(20.0, {}) == Round(({}, False), news=True)
    assert liveness.answered(22.9, NODES).report == (NODES, False)
    assert liveness.answered(23.0, NODES).report == (NODES, True)


def test_a_node_that_never_reached_redis_is_registered_all_the_same() -> None:
    liveness = Liveness(TTL)
    assert liveness.unreachable() == Round(None, news=True)
    assert liveness.registered
    assert liveness.state is RedisState.UNREACHABLE


def test_every_sequence_of_rounds_follows_the_rules() -> None:
    """Against the rules stated over the whole history: every sequence of up to six
    rounds, each answered or not, at steps that land on the ttl exactly or miss it."""
    steps = (0.5, 1.0, 2.5)
    checked = 0
    for length in range(1, 7):
        for kinds in itertools.product((True, False), repeat=length):
            for gaps in itertools.product(steps, repeat=length):
                liveness, now, history = Liveness(TTL), 0.0, []
                for answered, gap in zip(kinds, gaps, strict=True):
                    now += gap
                    got = liveness.answered(now, NODES) if answered else liveness.unreachable()
                    news = not history or history[-1][0] != answered
                    history.append((answered, now))
                    if not answered:
                        assert got == Round(None, news)
                        continue
                    # The answers in a row up to this one: the first of them starts the ttl.
                    run = list(itertools.takewhile(lambda h: h[0], reversed(history)))
                    assert got == Round((NODES, now - run[-1][1] >= TTL), news)
                    checked += 1
                assert liveness.registered
    assert checked > 10_000
