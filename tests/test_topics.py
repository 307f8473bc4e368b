"""The topic server's table of gateways per topic, without sockets."""

from __future__ import annotations

from topic_server.topics import Topics


def test_subscriptions_count_like_pg_joins() -> None:
    topics: Topics[str] = Topics()
    topics.subscribe("gw-a", "t")
    topics.subscribe("gw-a", "t")
    topics.subscribe("gw-b", "t")
    assert set(topics.gateways("t")) == {"gw-a", "gw-b"}
    assert topics.unsubscribe("gw-a", "t")
    assert set(topics.gateways("t")) == {"gw-a", "gw-b"}
    assert topics.unsubscribe("gw-a", "t")
    assert topics.gateways("t") == ("gw-b",)
    assert not topics.unsubscribe("gw-a", "t")
    assert not topics.unsubscribe("gw-c", "t")


def test_empty_topics_and_gateways_hold_nothing() -> None:
    topics: Topics[str] = Topics()
    topics.subscribe("gw-a", "t")
    topics.unsubscribe("gw-a", "t")
    assert len(topics) == 0
    assert topics._by_gateway == {}
    assert topics._by_topic == {}


def test_drop_forgets_a_gateway_everywhere() -> None:
    topics: Topics[str] = Topics()
    for topic in ("a", "b", "c"):
        topics.subscribe("gw-a", topic)
    topics.subscribe("gw-b", "b")
    assert (len(topics), topics.subscriptions()) == (3, 4)
    topics.drop("gw-a")
    assert (len(topics), topics.subscriptions()) == (1, 1)
    assert topics.gateways("b") == ("gw-b",)
    topics.drop("gw-unknown")


def test_one_sequence_for_all_topics() -> None:
    topics: Topics[str] = Topics()
    topics.subscribe("gw-a", "t")
    seq1, gateways = topics.publish("t")
    seq2, nobody = topics.publish("other")
    assert (seq1, list(gateways), seq2, list(nobody)) == (1, ["gw-a"], 2, [])
    topics.unsubscribe("gw-a", "t")
    topics.subscribe("gw-a", "t")
    assert topics.publish("t")[0] == 3  # a topic that empties and fills again never goes back
