"""The channel state machine of one socket, without sockets."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.counters import Counters
from app.link.codec import Entry
from app.link.interface import Recovery
from tests.pg.frames import json_values
from ws_gateway.access import rules
from ws_gateway.access.hooks import Verdict
from ws_gateway.access.policy import MAX_CHANNELS, Policy
from ws_gateway.access.tokens import Verifier
from ws_gateway.channels import (
    Action,
    AskJoin,
    AskPublish,
    Channels,
    Close,
    Join,
    Leave,
    Publish,
    Push,
    Replay,
    Reply,
    Track,
    UpdatePresence,
)
from ws_gateway.presence import Tracked
from ws_gateway.serializers import V2, Message

OK: dict[str, Any] = {}
OPEN = rules.load(rules.DEFAULT)  # the shipped rules: anyone joins, members publish


def open_channels() -> Channels:
    return Channels(Policy(OPEN, None, lambda: 0.0, Counters(), join_rate=(1.0, 1000)))


def msg(join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> Message:
    return Message(join_ref, ref, topic, event, payload)


def test_heartbeat() -> None:
    assert open_channels().handle(msg(None, "9", "phoenix", "heartbeat", {})) == [
        Reply(None, "9", "phoenix", "ok", OK)
    ]


def join(
    channels: Channels, message: Message, problem: str | Recovery | None = None
) -> list[Action]:
    """Handle a phx_join and complete it as the gateway would (`problem`: why it failed, or
    what a recovering join recovered): the actions of both steps."""
    actions = channels.handle(message)
    if actions and isinstance(actions[0], Join):
        return [actions[0], *channels.join_done(actions[0], problem)]
    return actions


def test_join_subscribes_and_replies() -> None:
    channels = open_channels()
    message = msg("6", "6", "room:lobby", "phx_join", {})
    assert join(channels, message) == [
        Join("room:lobby", "6", message, None),
        Reply("6", "6", "room:lobby", "ok", OK),
    ]
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"room:lobby": "6"}


def test_join_without_join_ref_uses_the_ref() -> None:
    channels = open_channels()
    message = msg(None, "3", "t", "phx_join", {})
    assert join(channels, message) == [
        Join("t", "3", message, None),
        Reply(None, "3", "t", "ok", OK),
    ]


def test_duplicate_join_closes_the_old_instance_after_the_reply() -> None:
    channels = open_channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    message = msg("19", "19", "t", "phx_join", {})
    assert join(channels, message) == [
        Join("t", "19", message, ("6",)),
        Reply("19", "19", "t", "ok", OK),
        Push("6", "6", "t", "phx_close", OK),
    ]
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"t": "19"}


def test_a_join_the_gateway_could_not_do_is_refused_and_forgotten() -> None:
    channels = open_channels()
    assert join(channels, msg("1", "1", "t", "phx_join", {}), "topic server unreachable")[1:] == [
        Reply(
            "1", "1", "t", "error", {"reason": "join failed", "detail": "topic server unreachable"}
        )
    ]
    assert channels.joined == {}
    # A failed rejoin still ends the instance it replaced.
    join(channels, msg("2", "2", "t", "phx_join", {}))
    assert join(channels, msg("3", "3", "t", "phx_join", {}), "no answer")[1:] == [
        Reply("3", "3", "t", "error", {"reason": "join failed", "detail": "no answer"}),
        Push("2", "2", "t", "phx_close", OK),
    ]
    assert channels.joined == {}


def test_leave() -> None:
    channels = open_channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    assert channels.handle(msg("6", "18", "t", "phx_leave", {})) == [
        Leave("t"),
        Reply("6", "18", "t", "ok", OK),
        Push("6", "6", "t", "phx_close", OK),
    ]
    assert channels.joined == {}
    assert channels.handle(msg("6", "19", "t", "phx_leave", {})) == [
        Reply("6", "19", "t", "ok", OK)
    ]


def test_leave_with_null_join_ref_leaves_the_current_instance() -> None:
    channels = open_channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    assert channels.handle(msg(None, "7", "t", "phx_leave", {}))[0] == Leave("t")


def test_stale_join_ref_is_dropped_silently() -> None:
    channels = open_channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    assert channels.handle(msg("5", "7", "t", "phx_leave", {})) == []
    assert channels.handle(msg("5", "8", "t", "publish", ["e", {}])) == []
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"t": "6"}


def test_push_to_unjoined_topic() -> None:
    assert open_channels().handle(msg("1", "5", "room:nowhere", "new_msg", {})) == [
        Reply(None, "5", "room:nowhere", "error", {"reason": "unmatched topic"})
    ]


def test_unknown_event_keeps_the_channel() -> None:
    channels = open_channels()
    channels.handle(msg("1", "1", "t", "phx_join", {}))
    assert channels.handle(msg("1", "2", "t", "shout", {})) == [
        Reply("1", "2", "t", "error", {"reason": "unknown event"})
    ]
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"t": "1"}


def test_publish_encodes_the_body_once() -> None:
    channels = open_channels()
    channels.handle(msg(None, "1", "t", "phx_join", {}))
    [action] = channels.handle(msg(None, "2", "t", "publish", ["ev", {"a": [1, 2]}]))
    assert action == Publish("1", "2", "t", "ev", orjson.dumps({"a": [1, 2]}), False, True)


def test_binary_publish() -> None:
    channels = open_channels()
    channels.handle(msg("1", "1", "t", "phx_join", {}))
    assert channels.handle(msg("1", "2", "t", "publish", b"\x01")) == [
        Publish("1", "2", "t", "publish", b"\x01", True, True)
    ]


def test_malformed_publishes() -> None:
    channels = open_channels()
    channels.handle(msg("1", "1", "t", "phx_join", {}))
    for payload in [{}, [], ["e"], ["e", {}, 3], ["", {}], [3, {}], ["phx_close", {}], ["e", 5]]:
        [reply] = channels.handle(msg("1", "2", "t", "publish", payload))
        assert isinstance(reply, Reply)
        assert reply.status == "error"
        assert reply.response["reason"] == "malformed payload"
    [reply] = channels.handle(msg("1", "2", "t", "publish", ["e" * 256, {}]))
    assert isinstance(reply, Reply)
    assert "255 bytes" in reply.response["detail"]


def test_bad_topics() -> None:
    channels = open_channels()
    for topic, reason in [
        ("", "invalid topic"),
        ("x" * 256, "invalid topic"),
        ("phoenix", "unmatched topic"),
    ]:
        [reply] = channels.handle(msg("1", "1", topic, "phx_join", {}))
        assert isinstance(reply, Reply)
        assert (reply.status, reply.response["reason"]) == ("error", reason)
    assert channels.joined == {}


def test_channel_limit() -> None:
    channels = open_channels()
    for i in range(MAX_CHANNELS):
        channels.handle(msg(str(i), str(i), f"t{i}", "phx_join", {}))
    assert channels.handle(msg("x", "x", "more", "phx_join", {})) == [
        Reply("x", "x", "more", "error", {"reason": "too many channels joined"})
    ]
    # Rejoining a topic that is already joined is not a new channel.
    assert join(channels, msg("y", "y", "t0", "phx_join", {}))[1] == Reply("y", "y", "t0", "ok", OK)


def test_leave_all() -> None:
    channels = open_channels()
    channels.handle(msg("1", "1", "a", "phx_join", {}))
    channels.handle(msg("2", "2", "b", "phx_join", {}))
    assert sorted(channels.leave_all()) == ["a", "b"]
    assert channels.joined == {}


# Access control: the channel rules decide joins and publishes.

SECRET = "0123456789abcdef0123456789abcdef"
RULES = """
[[channel]]
topic = "public:*"
join = "anyone"
events = "any"
echo = false

[[channel]]
topic = "members:*"
join = "users"
events = ["new_msg"]

[[channel]]
topic = "user:{sub}"
join = "anyone"

[[channel]]
topic = "vip:*"
join = "token"

[[channel]]
topic = "news:*"
join = "anyone"
publish = "nobody"

[[channel]]
topic = "moderated:*"
join = "hook"
publish = "hook"

[[channel]]
topic = "kept:*"
history_size = 5
"""


def guarded(tmp_path: Path, user: str | None) -> Channels:
    path = tmp_path / "channels.toml"
    path.write_text(RULES)
    verifier = Verifier(SECRET.encode(), ("HS256",), None, None)
    return Channels(Policy(rules.load(path), verifier, lambda: 1000.0, Counters()), user)


def outcome(channels: Channels, message: Message) -> Any:
    """A join's reply status and response, completing it as the gateway would."""
    actions = join(channels, message)
    replies = [a for a in actions if isinstance(a, Reply)]
    return (replies[0].status, replies[0].response) if replies else actions


UNAUTHORIZED = ("error", {"reason": "unauthorized"})


def test_topics_no_rule_matches_cannot_be_joined(tmp_path: Path) -> None:
    channels = guarded(tmp_path, "alice")
    assert outcome(channels, msg("1", "1", "elsewhere", "phx_join", {})) == UNAUTHORIZED
    assert channels.joined == {}
    assert channels.policy.counters.joins_refused == 1


def test_users_rules_need_a_user(tmp_path: Path) -> None:
    assert (
        outcome(guarded(tmp_path, None), msg("1", "1", "members:a", "phx_join", {})) == UNAUTHORIZED
    )
    assert outcome(guarded(tmp_path, "bob"), msg("1", "1", "members:a", "phx_join", {}))[0] == "ok"


def test_personal_topics_belong_to_their_user(tmp_path: Path) -> None:
    assert (
        outcome(guarded(tmp_path, "alice"), msg("1", "1", "user:alice", "phx_join", {}))[0] == "ok"
    )
    assert (
        outcome(guarded(tmp_path, "bob"), msg("1", "1", "user:alice", "phx_join", {}))
        == UNAUTHORIZED
    )
    assert (
        outcome(guarded(tmp_path, None), msg("1", "1", "user:alice", "phx_join", {}))
        == UNAUTHORIZED
    )


def test_join_tokens_name_the_topic_and_maybe_the_user(tmp_path: Path) -> None:
    def token(**claims: Any) -> dict[str, str]:
        return {"token": jwt.encode(claims, SECRET)}

    def attempt(user: str | None, payload: Any) -> Any:
        return outcome(guarded(tmp_path, user), msg("1", "1", "vip:1", "phx_join", payload))

    assert attempt(None, token(topic="vip:1"))[0] == "ok"
    assert attempt("bob", token(topic="vip:1", sub="bob"))[0] == "ok"
    assert attempt("eve", token(topic="vip:1", sub="bob")) == UNAUTHORIZED
    assert attempt(None, token(topic="vip:1", sub="bob")) == UNAUTHORIZED
    assert attempt("bob", token(topic="vip:2")) == UNAUTHORIZED
    assert attempt("bob", token(topic="vip:1", exp=999)) == UNAUTHORIZED  # the clock says 1000
    assert attempt("bob", {"token": jwt.encode({"topic": "vip:1"}, "x" * 32)}) == UNAUTHORIZED
    assert attempt("bob", {}) == UNAUTHORIZED
    assert attempt("bob", ["not", "an", "object"]) == UNAUTHORIZED


def test_a_refused_rejoin_closes_the_old_instance(tmp_path: Path) -> None:
    channels = guarded(tmp_path, None)
    join(
        channels,
        msg("1", "1", "vip:1", "phx_join", {"token": jwt.encode({"topic": "vip:1"}, SECRET)}),
    )
    assert join(channels, msg("2", "2", "vip:1", "phx_join", {})) == [
        Leave("vip:1"),
        Reply("2", "2", "vip:1", "error", {"reason": "unauthorized"}),
        Push("1", "1", "vip:1", "phx_close", OK),
    ]
    assert channels.joined == {}


def test_nobody_publishes_where_the_rule_says_nobody(tmp_path: Path) -> None:
    channels = guarded(tmp_path, "alice")
    join(channels, msg("1", "1", "news:1", "phx_join", {}))
    assert channels.handle(msg("1", "2", "news:1", "publish", ["ev", {}])) == [
        Reply("1", "2", "news:1", "error", {"reason": "unauthorized"})
    ]
    assert channels.policy.counters.publishes_refused == 1


def test_events_any_broadcasts_every_push_as_itself_without_echo(tmp_path: Path) -> None:
    channels = guarded(tmp_path, None)
    join(channels, msg("1", "1", "public:1", "phx_join", {}))
    assert channels.handle(msg("1", "2", "public:1", "new_msg", {"body": "hi"})) == [
        Publish("1", "2", "public:1", "new_msg", b'{"body":"hi"}', False, False)
    ]
    # The publish envelope keeps its meaning.
    assert channels.handle(msg("1", "3", "public:1", "publish", ["ev", {}]))[0] == Publish(
        "1", "3", "public:1", "ev", b"{}", False, False
    )
    [reply] = channels.handle(msg("1", "4", "public:1", "new_msg", "text"))
    assert isinstance(reply, Reply) and reply.response["reason"] == "malformed payload"
    [reply] = channels.handle(msg("1", "5", "public:1", "phx_custom", {}))
    assert isinstance(reply, Reply) and reply.response == {"reason": "unknown event"}


def test_a_list_of_events_allows_those_alone(tmp_path: Path) -> None:
    channels = guarded(tmp_path, "bob")
    join(channels, msg("1", "1", "members:1", "phx_join", {}))
    [publish] = channels.handle(msg("1", "2", "members:1", "new_msg", {"b": 1}))
    assert isinstance(publish, Publish) and publish.echo
    for event, payload in (("publish", ["ev", {}]), ("typing", {})):
        [reply] = channels.handle(msg("1", "3", "members:1", event, payload))
        assert reply == Reply("1", "3", "members:1", "error", {"reason": "unknown event"})


def test_hook_rules_ask_and_follow_the_verdict(tmp_path: Path) -> None:
    channels = guarded(tmp_path, "alice")
    message = msg("1", "1", "moderated:1", "phx_join", {"x": 1})
    [ask] = channels.handle(message)
    assert isinstance(ask, AskJoin) and ask.msg == message
    assert channels.joined == {}  # nothing joined until the hook says so
    assert channels.answered(ask, Verdict(False, "banned")) == [
        Reply("1", "1", "moderated:1", "error", {"reason": "banned"})
    ]
    [ask] = channels.handle(message)
    assert isinstance(ask, AskJoin)
    [start] = channels.answered(ask, Verdict(True))
    assert isinstance(start, Join)
    channels.join_done(start, None)
    [ask_publish] = channels.handle(msg("1", "2", "moderated:1", "publish", ["ev", {"a": 1}]))
    assert isinstance(ask_publish, AskPublish) and ask_publish.publish.payload == b'{"a":1}'
    assert channels.answered(ask_publish, Verdict(True)) == [ask_publish.publish]
    [replaced] = channels.answered(ask_publish, Verdict(True, None, b'{"a": 2}'))
    assert isinstance(replaced, Publish) and replaced.payload == b'{"a": 2}'
    assert channels.answered(ask_publish, Verdict(False, "hook unavailable")) == [
        Reply("1", "2", "moderated:1", "error", {"reason": "hook unavailable"})
    ]


# History: positions and recovery.

MALFORMED_RECOVER = {
    "reason": "malformed payload",
    "detail": 'recover expects {"epoch": string, "offset": integer >= 0}',
}


def test_a_join_that_recovers_asks_for_what_it_missed_with_positions(tmp_path: Path) -> None:
    channels = guarded(tmp_path, None)
    message = msg("1", "1", "kept:1", "phx_join", {"recover": {"epoch": "e1", "offset": 3}})
    # At most the rule's history_size (5) messages: more cannot have been kept.
    assert channels.handle(message) == [Join("kept:1", "1", message, None, True, (("e1", 3), 5))]
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"kept:1": "1"}
    rejoin = msg("2", "2", "kept:1", "phx_join", {"recover": {"epoch": "e1", "offset": 0}})
    assert channels.handle(rejoin) == [Join("kept:1", "2", rejoin, ("1",), True, (("e1", 0), 5))]


def test_positions_are_asked_for_explicitly_or_by_naming_recover(tmp_path: Path) -> None:
    channels = guarded(tmp_path, None)
    for topic, payload, positions in [
        ("kept:1", {}, False),
        ("kept:2", {"positions": True}, True),
        ("kept:3", {"positions": "yes"}, False),  # JSON true only
        ("kept:4", {"recover": None}, True),  # phoenix.js before it has a position
        ("kept:5", {"recover": None, "positions": False}, True),
    ]:
        [action] = channels.handle(msg("1", "1", topic, "phx_join", payload))
        assert isinstance(action, Join)
        assert (action.positions, action.recover) == (positions, None), payload


@pytest.mark.parametrize(
    "recover",
    [
        {"epoch": "e1", "offset": "3"},
        {"epoch": "e1", "offset": -1},
        {"epoch": "e1", "offset": 1.5},
        {"epoch": "e1", "offset": True},
        {"epoch": "e1", "offset": 2**63},
        {"epoch": "e1"},
        {"offset": 3},
        {"epoch": 7, "offset": 3},
        {"epoch": "é" * 128, "offset": 3},  # 256 bytes: more than a link frame's field holds
        "e1:3",
        ["e1", 3],
        0,
        False,
    ],
)
def test_a_malformed_recover_is_refused_and_joins_nothing(tmp_path: Path, recover: Any) -> None:
    channels = guarded(tmp_path, None)
    message = msg("1", "1", "kept:1", "phx_join", {"recover": recover})
    assert join(channels, message) == [Reply("1", "1", "kept:1", "error", MALFORMED_RECOVER)]
    assert channels.joined == {}


def test_a_recovered_join_replies_with_the_position_then_replays_what_was_missed(
    tmp_path: Path,
) -> None:
    channels = guarded(tmp_path, None)
    message = msg("1", "1", "kept:1", "phx_join", {"recover": {"epoch": "e1", "offset": 3}})
    missed = (Entry(4, 10.0, "ev", False, b'{"n":4}'), Entry(5, 11.0, "ev", True, b"\x05"))
    assert join(channels, message, Recovery(True, "e1", 5, missed))[1:] == [
        Reply("1", "1", "kept:1", "ok", {"recovered": True, "epoch": "e1", "offset": 5}),
        Replay("kept:1", "1", "e1", missed),
    ]
    # Nothing missed: the reply alone.
    again = msg("2", "2", "kept:1", "phx_join", {"recover": {"epoch": "e1", "offset": 5}})
    assert join(channels, again, Recovery(True, "e1", 5, ()))[1:] == [
        Reply("2", "2", "kept:1", "ok", {"recovered": True, "epoch": "e1", "offset": 5}),
        Push("1", "1", "kept:1", "phx_close", OK),
    ]
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"kept:1": "2"}


def test_an_unrecovered_join_is_joined_and_told_where_the_stream_is(tmp_path: Path) -> None:
    channels = guarded(tmp_path, None)
    message = msg(None, "4", "kept:1", "phx_join", {"recover": {"epoch": "old", "offset": 3}})
    assert join(channels, message, Recovery(False, "e2", 9, ()))[1:] == [
        Reply(None, "4", "kept:1", "ok", {"recovered": False, "epoch": "e2", "offset": 9})
    ]
    assert {t: c.join_ref for t, c in channels.joined.items()} == {"kept:1": "4"}


# Rate limits.


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limited(clock: Clock) -> Channels:
    policy = Policy(OPEN, None, clock, Counters(), publish_rate=(2.0, 3), join_rate=(1.0, 2))
    return Channels(policy)


def test_publishes_beyond_the_rate_get_an_error_and_the_rate_refills() -> None:
    clock = Clock()
    channels = limited(clock)
    join(channels, msg("1", "1", "t", "phx_join", {}))
    statuses = []
    for ref in range(5):
        [action] = channels.handle(msg("1", str(ref), "t", "publish", ["e", {}]))
        statuses.append("ok" if isinstance(action, Publish) else action)
    assert statuses[:3] == ["ok"] * 3  # the burst
    assert statuses[3:] == [
        Reply("1", "3", "t", "error", {"reason": "rate limited"}),
        Reply("1", "4", "t", "error", {"reason": "rate limited"}),
    ]
    clock.now += 0.5  # 2 a second: one more token
    assert isinstance(channels.handle(msg("1", "5", "t", "publish", ["e", {}]))[0], Publish)
    assert channels.policy.counters.rate_limited == 2


def test_going_on_at_full_speed_past_the_limit_closes_the_socket() -> None:
    clock = Clock()
    channels = limited(clock)
    join(channels, msg("1", "1", "t", "phx_join", {}))
    actions = [channels.handle(msg("1", str(i), "t", "publish", ["e", {}]))[0] for i in range(7)]
    assert [type(a).__name__ for a in actions] == ["Publish"] * 3 + ["Reply"] * 3 + ["Close"]
    assert actions[-1] == Close(1008, "rate limit exceeded")
    assert channels.policy.counters.sockets_abusive_closed == 1


def test_joins_have_their_own_rate() -> None:
    clock = Clock()
    channels = limited(clock)
    assert [outcome_of(channels, f"t{i}") for i in range(3)] == ["ok", "ok", "rate limited"]
    clock.now += 1.0
    assert outcome_of(channels, "t3") == "ok"


def outcome_of(channels: Channels, topic: str) -> str:
    [*_, reply] = join(channels, msg("1", "1", topic, "phx_join", {}))
    assert isinstance(reply, Reply)
    return "ok" if reply.status == "ok" else reply.response["reason"]


def test_payloads_are_forwarded_as_sent_and_bounded_in_depth() -> None:
    channels = open_channels()
    join(channels, msg("1", "1", "t", "phx_join", {}))
    frame = b'["1","2","t","publish",["e", {"n": 12345678901234567890123}]]'
    [publish] = channels.handle(V2.decode(frame, True))
    assert isinstance(publish, Publish) and publish.payload == b'{"n": 12345678901234567890123}'
    deep = b'["1","3","t","publish",["e",{"a":' + b"[" * 300 + b"]" * 300 + b"}]]"
    [reply] = channels.handle(V2.decode(deep, True))
    assert reply == Reply(
        "1",
        "3",
        "t",
        "error",
        {"reason": "malformed payload", "detail": "the payload nests deeper than 64 levels"},
    )


def test_control_and_bidi_override_characters_are_refused() -> None:
    channels = open_channels()
    [reply] = channels.handle(msg("1", "1", "room\u202e", "phx_join", {}))
    assert isinstance(reply, Reply) and reply.response["reason"] == "invalid topic"
    [reply] = channels.handle(msg("1", "1", "room\x00", "phx_join", {}))
    assert isinstance(reply, Reply) and reply.response["reason"] == "invalid topic"
    join(channels, msg("1", "1", "t", "phx_join", {}))
    [reply] = channels.handle(msg("1", "2", "t", "publish", ["ev\x07", {}]))
    assert isinstance(reply, Reply) and reply.response["reason"] == "malformed payload"


# Fuzzing: any sequence of messages gets only documented answers, and the state stays sound.

DOCUMENTED = {
    "unmatched topic",
    "unknown event",
    "invalid topic",
    "malformed payload",
    "too many channels joined",
    "unauthorized",
    "rate limited",
    "join failed",
}
FUZZ_RULES = (
    '[[channel]]\ntopic = "open:*"\nevents = "any"\n[[channel]]\ntopic = "news:*"\n'
    'publish = "nobody"\n[[channel]]\ntopic = "here:*"\nevents = "any"\npresence = true\n'
)
fuzz_topics = st.sampled_from(
    [
        "open:1",
        "open:2",
        "open:3",
        "news:1",
        "here:1",
        "else",
        "phoenix",
        "",
        "x" * 300,
        "open:\u202e",
    ]
)
fuzz_events = st.sampled_from(
    [
        "phx_join",
        "phx_leave",
        "heartbeat",
        "publish",
        "new_msg",
        "phx_close",
        "presence_update",
        "presence_diff",
        "",
        "e" * 300,
    ]
)
fuzz_payloads = st.one_of(
    json_values,
    st.binary(max_size=8),
    st.tuples(st.sampled_from(["ev", "", "phx_x", 3]), json_values).map(list),
    st.fixed_dictionaries(
        {"presence": st.fixed_dictionaries({}, optional={"key": json_values, "meta": json_values})}
    ),
)
fuzz_messages = st.builds(
    Message,
    st.one_of(st.none(), st.sampled_from(["1", "2", "3"])),
    st.one_of(st.none(), st.sampled_from(["1", "2", "9"])),
    fuzz_topics,
    fuzz_events,
    fuzz_payloads,
    raw=st.none(),  # not the payload's bytes: none (Hypothesis would fill a NamedTuple's)
)


@functools.cache
def fuzz_rules() -> rules.Rules:
    path = Path(tempfile.mkdtemp()) / "channels.toml"
    path.write_text(FUZZ_RULES)
    return rules.load(path)


@given(st.lists(st.tuples(fuzz_messages, st.booleans()), max_size=40))
def test_any_sequence_of_messages_gets_documented_answers(
    steps: list[tuple[Message, bool]],
) -> None:
    policy = Policy(fuzz_rules(), None, lambda: 0.0, Counters(), max_channels=2)
    channels = Channels(policy, "alice")
    for message, subscription_fails in steps:
        was_joined = message.topic in channels.joined
        actions = channels.handle(message)
        for action in list(actions):
            if isinstance(action, Join):  # as the gateway would complete it
                actions += channels.join_done(action, "gone" if subscription_fails else None)
        assert len(channels.joined) <= 2
        for action in actions:
            if isinstance(action, Reply) and action.status == "error":
                assert action.response["reason"] in DOCUMENTED, action
            elif isinstance(action, Reply):
                assert action.status == "ok"
            elif isinstance(action, Publish):
                assert message.topic in channels.joined and not message.topic.startswith("news:")
                assert not (message.topic.startswith("here:") and action.event == "presence_diff")
            elif isinstance(action, Track | UpdatePresence):  # presence topics only, joined
                assert action.topic.startswith("here:") and action.topic in channels.joined
            assert not isinstance(action, AskJoin | AskPublish | Close)  # no hooks, no rate
        tracks = [a for a in actions if isinstance(a, Track)]
        assert len(tracks) == (
            message.event == "phx_join"
            and message.topic in channels.joined
            and message.topic.startswith("here:")
        )
        if message.topic == "phoenix" and message.event == "heartbeat":
            assert actions == [Reply(None, message.ref, "phoenix", "ok", OK)]
        elif message.event not in ("phx_join", "phx_leave") and not was_joined:
            assert actions == [
                Reply(None, message.ref, message.topic, "error", {"reason": "unmatched topic"})
            ]
    channels.leave_all()
    assert channels.joined == {}


# Presence.

PRESENCE_RULES = """
[[channel]]
topic = "room:*"
presence = true

[[channel]]
topic = "staff:*"
join = "users"
presence = true

[[channel]]
topic = "*"
events = "any"
"""


def presence_channels(tmp_path: Path, user: str | None = None) -> Channels:
    path = tmp_path / "channels.toml"
    path.write_text(PRESENCE_RULES)
    policy = Policy(rules.load(path), None, lambda: 0.0, Counters(), max_presence_meta=32)
    return Channels(policy, user)


def test_a_presence_join_tracks_right_after_its_ok_reply(tmp_path: Path) -> None:
    channels = presence_channels(tmp_path)
    payload = {"presence": {"key": "alice", "meta": {"tab": 1}}}
    message = Message("1", "1", "room:1", "phx_join", payload, orjson.dumps(payload))
    wanted = Tracked("alice", b'{"tab":1}')
    assert join(channels, message) == [
        Join("room:1", "1", message, None, tracked=wanted),
        Reply("1", "1", "room:1", "ok", OK),
        Track("room:1", "1", wanted),
    ]
    # A rejoin tracks again (the gateway replaces the entry), then closes the old instance.
    rejoin = msg("2", "2", "room:1", "phx_join", {})
    assert join(channels, rejoin)[1:] == [
        Reply("2", "2", "room:1", "ok", OK),
        Track("room:1", "2", Tracked(None, b"{}")),
        Push("1", "1", "room:1", "phx_close", OK),
    ]
    # A join that fails tracks nothing.
    assert join(channels, msg("3", "3", "room:2", "phx_join", {}), "no owner")[1:] == [
        Reply("3", "3", "room:2", "error", {"reason": "join failed", "detail": "no owner"})
    ]


def test_the_users_key_wins_and_only_open_topics_take_the_clients(tmp_path: Path) -> None:
    channels = presence_channels(tmp_path, "bob")
    payload = {"presence": {"key": "alice"}}
    [join_action] = channels.handle(msg("1", "1", "room:1", "phx_join", payload))
    assert isinstance(join_action, Join) and join_action.tracked == Tracked("bob", b"{}")
    anonymous = presence_channels(tmp_path)
    [refused] = anonymous.handle(msg("1", "1", "staff:1", "phx_join", payload))
    assert isinstance(refused, Reply) and refused.response == {"reason": "unauthorized"}


def test_a_presence_join_it_cannot_track_is_refused(tmp_path: Path) -> None:
    channels = presence_channels(tmp_path)
    big = {"presence": {"meta": {"s": "x" * 40}}}
    assert join(channels, msg("1", "1", "room:1", "phx_join", big)) == [
        Reply(
            "1",
            "1",
            "room:1",
            "error",
            {
                "reason": "malformed payload",
                "detail": "the presence meta is larger than 32 bytes (DPS_MAX_PRESENCE_META)",
            },
        )
    ]
    assert channels.joined == {}
    # Without presence, the same payload is any join payload.
    assert join(channels, msg("2", "2", "plain", "phx_join", big))[-1] == Reply(
        "2", "2", "plain", "ok", OK
    )


def test_presence_update(tmp_path: Path) -> None:
    channels = presence_channels(tmp_path)
    join(channels, msg("1", "1", "room:1", "phx_join", {}))
    assert channels.handle(msg("1", "2", "room:1", "presence_update", {"away": True})) == [
        UpdatePresence("room:1", b'{"away":true}'),
        Reply("1", "2", "room:1", "ok", OK),
    ]
    [bad] = channels.handle(msg("1", "3", "room:1", "presence_update", [1]))
    assert bad == Reply(
        "1",
        "3",
        "room:1",
        "error",
        {"reason": "malformed payload", "detail": "the presence meta must be a JSON object"},
    )
    join(channels, msg("5", "5", "plain", "phx_join", {}))
    assert channels.handle(msg("5", "6", "plain", "presence_update", {})) == [
        Reply(
            "5",
            "6",
            "plain",
            "error",
            {"reason": "unknown event", "detail": "presence is not enabled on this topic"},
        )
    ]


def test_clients_cannot_broadcast_the_servers_presence_events(tmp_path: Path) -> None:
    channels = presence_channels(tmp_path)
    join(channels, msg("1", "1", "room:1", "phx_join", {}))
    join(channels, msg("2", "2", "plain", "phx_join", {}))
    for event in ("presence_diff", "presence_state"):
        [reply] = channels.handle(msg("1", "3", "room:1", event, {"joins": {}, "leaves": {}}))
        assert reply == Reply("1", "3", "room:1", "error", {"reason": "unknown event"})
        [publish] = channels.handle(msg("2", "3", "plain", event, {}))
        assert isinstance(publish, Publish)  # another topic's events are its own
