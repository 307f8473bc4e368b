"""The channel state machine of one socket, without sockets."""

from __future__ import annotations

from typing import Any

import orjson

from ws_gateway.channels import (
    MAX_CHANNELS,
    Action,
    Channels,
    Join,
    Leave,
    Publish,
    Push,
    Reply,
)
from ws_gateway.serializers import Message

OK: dict[str, Any] = {}


def msg(join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> Message:
    return Message(join_ref, ref, topic, event, payload)


def test_heartbeat() -> None:
    assert Channels().handle(msg(None, "9", "phoenix", "heartbeat", {})) == [
        Reply(None, "9", "phoenix", "ok", OK)
    ]


def join(channels: Channels, message: Message, problem: str | None = None) -> list[Action]:
    """Handle a phx_join and complete it as the gateway would: the actions of both steps."""
    actions = channels.handle(message)
    if actions and isinstance(actions[0], Join):
        return [actions[0], *channels.join_done(actions[0], problem)]
    return actions


def test_join_subscribes_and_replies() -> None:
    channels = Channels()
    message = msg("6", "6", "room:lobby", "phx_join", {})
    assert join(channels, message) == [
        Join("room:lobby", "6", message, None),
        Reply("6", "6", "room:lobby", "ok", OK),
    ]
    assert channels.joined == {"room:lobby": "6"}


def test_join_without_join_ref_uses_the_ref() -> None:
    channels = Channels()
    message = msg(None, "3", "t", "phx_join", {})
    assert join(channels, message) == [
        Join("t", "3", message, None),
        Reply(None, "3", "t", "ok", OK),
    ]


def test_duplicate_join_closes_the_old_instance_after_the_reply() -> None:
    channels = Channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    message = msg("19", "19", "t", "phx_join", {})
    assert join(channels, message) == [
        Join("t", "19", message, ("6",)),
        Reply("19", "19", "t", "ok", OK),
        Push("6", "6", "t", "phx_close", OK),
    ]
    assert channels.joined == {"t": "19"}


def test_a_join_the_gateway_could_not_do_is_refused_and_forgotten() -> None:
    channels = Channels()
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
    channels = Channels()
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
    channels = Channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    assert channels.handle(msg(None, "7", "t", "phx_leave", {}))[0] == Leave("t")


def test_stale_join_ref_is_dropped_silently() -> None:
    channels = Channels()
    join(channels, msg("6", "6", "t", "phx_join", {}))
    assert channels.handle(msg("5", "7", "t", "phx_leave", {})) == []
    assert channels.handle(msg("5", "8", "t", "publish", ["e", {}])) == []
    assert channels.joined == {"t": "6"}


def test_push_to_unjoined_topic() -> None:
    assert Channels().handle(msg("1", "5", "room:nowhere", "new_msg", {})) == [
        Reply(None, "5", "room:nowhere", "error", {"reason": "unmatched topic"})
    ]


def test_unknown_event_keeps_the_channel() -> None:
    channels = Channels()
    channels.handle(msg("1", "1", "t", "phx_join", {}))
    assert channels.handle(msg("1", "2", "t", "shout", {})) == [
        Reply("1", "2", "t", "error", {"reason": "unknown event"})
    ]
    assert channels.joined == {"t": "1"}


def test_publish_encodes_the_body_once() -> None:
    channels = Channels()
    channels.handle(msg(None, "1", "t", "phx_join", {}))
    [action] = channels.handle(msg(None, "2", "t", "publish", ["ev", {"a": [1, 2]}]))
    assert action == Publish("1", "2", "t", "ev", orjson.dumps({"a": [1, 2]}), False)


def test_binary_publish() -> None:
    channels = Channels()
    channels.handle(msg("1", "1", "t", "phx_join", {}))
    assert channels.handle(msg("1", "2", "t", "publish", b"\x01")) == [
        Publish("1", "2", "t", "publish", b"\x01", True)
    ]


def test_malformed_publishes() -> None:
    channels = Channels()
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
    channels = Channels()
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
    channels = Channels()
    for i in range(MAX_CHANNELS):
        channels.handle(msg(str(i), str(i), f"t{i}", "phx_join", {}))
    assert channels.handle(msg("x", "x", "more", "phx_join", {})) == [
        Reply("x", "x", "more", "error", {"reason": "too many channels joined"})
    ]
    # Rejoining a topic that is already joined is not a new channel.
    assert join(channels, msg("y", "y", "t0", "phx_join", {}))[1] == Reply("y", "y", "t0", "ok", OK)


def test_leave_all() -> None:
    channels = Channels()
    channels.handle(msg("1", "1", "a", "phx_join", {}))
    channels.handle(msg("2", "2", "b", "phx_join", {}))
    assert sorted(channels.leave_all()) == ["a", "b"]
    assert channels.joined == {}
