"""The channels of one socket: Phoenix's channel rules as a pure state machine.

Each topic is, on one socket, either unjoined or joined under a join_ref (the ref of the
`phx_join` that created the current instance). `Channels.handle` takes one decoded client
message and returns what to do, in order: replies and pushes to send to this socket, and
commands for the gateway (join, leave, publish). It never does I/O.

    message                          state              actions
    heartbeat on "phoenix"           any                ok reply, join_ref null
    phx_join T (valid topic)         unjoined           join T; once the gateway has
                                                        done it, `join_done`: ok reply
    phx_join T                       joined as J        join T (new ref); then ok reply,
                                                        phx_close for the old instance J
    phx_join T (bad topic / full)    any                error reply, state unchanged
    phx_leave T, join_ref J or null  joined as J        leave T, ok reply, phx_close J
    phx_leave T                      unjoined           ok reply
    publish T [event, object]        joined as J        publish (the ok reply follows the
                                                        owner's acknowledgement)
    any push, join_ref neither J     joined as J        dropped without reply (stale)
    nor null
    any other push to T              unjoined           error "unmatched topic", join_ref null
    any other event                  joined             error "unknown event", stays joined

A join counts as joined from the moment it is handled. When the gateway cannot do it (the
topic's owner refused or never acknowledged the subscription), `join_done` forgets the
topic and answers with the error reply "join failed" instead.

A V2 join whose join_ref is null (handy when typing frames by hand) and every V1 join take
the join's own ref as the instance's join_ref, as Phoenix does for V1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from ws_gateway.serializers import Message
from ws_gateway.serializers.protocol import MAX_FIELD_BYTES

MAX_CHANNELS = 100  # Phoenix's limit of channels per socket
HEARTBEAT_TOPIC = "phoenix"


class Reply(NamedTuple):
    join_ref: str | None
    ref: str | None
    topic: str
    status: str
    response: Any


class Push(NamedTuple):
    """A server push to this socket only (here: phx_close)."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any


class Join(NamedTuple):
    """Subscribe the socket to `topic` as instance `join_ref`, for the join `msg`; `replaced`
    is the join_ref of the instance this one replaces, if it replaces one."""

    topic: str
    join_ref: str | None
    msg: Message
    replaced: tuple[str | None] | None


class Leave(NamedTuple):
    topic: str


class Publish(NamedTuple):
    """Broadcast `payload` (encoded JSON, or raw bytes when `binary`) as `event` on `topic`."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: bytes
    binary: bool


Action = Reply | Push | Join | Leave | Publish

EMPTY: dict[str, Any] = {}


def error(reason: str, detail: str | None = None) -> dict[str, str]:
    return {"reason": reason} if detail is None else {"reason": reason, "detail": detail}


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be joined, or None when it is fine."""
    if not topic:
        return "topic is empty"
    if len(topic.encode()) > MAX_FIELD_BYTES:
        return f"topic is longer than {MAX_FIELD_BYTES} bytes"
    if topic == HEARTBEAT_TOPIC:
        return "topic 'phoenix' is reserved for heartbeats"
    return None


def event_problem(event: Any) -> str | None:
    """Why `event` cannot be broadcast, or None when it is fine."""
    if not isinstance(event, str) or not event:
        return "event must be a non-empty string"
    if len(event.encode()) > MAX_FIELD_BYTES:
        return f"event is longer than {MAX_FIELD_BYTES} bytes"
    if event.startswith("phx_"):
        return "events starting with phx_ are reserved"
    return None


class Channels:
    """The joined topics of one socket and the rules above."""

    __slots__ = ("joined", "max_channels")

    def __init__(self, max_channels: int = MAX_CHANNELS) -> None:
        self.joined: dict[str, str | None] = {}
        self.max_channels = max_channels

    def handle(self, msg: Message) -> list[Action]:
        topic, event = msg.topic, msg.event
        if topic == HEARTBEAT_TOPIC and event == "heartbeat":
            return [Reply(None, msg.ref, topic, "ok", EMPTY)]
        if event == "phx_join":
            return self._join(msg)
        if topic not in self.joined:
            if event == "phx_leave":
                return [Reply(msg.join_ref, msg.ref, topic, "ok", EMPTY)]
            return [Reply(None, msg.ref, topic, "error", error("unmatched topic"))]
        current = self.joined[topic]
        if msg.join_ref is not None and msg.join_ref != current:
            return []
        if event == "phx_leave":
            del self.joined[topic]
            return [
                Leave(topic),
                Reply(current, msg.ref, topic, "ok", EMPTY),
                Push(current, current, topic, "phx_close", EMPTY),
            ]
        if event == "publish":
            return [self._publish(current, msg)]
        return [Reply(current, msg.ref, topic, "error", error("unknown event"))]

    def join_done(self, join: Join, problem: str | None) -> list[Action]:
        """The gateway has done `join` (`problem` None) or could not (why)."""
        msg = join.msg
        if problem is None:
            actions: list[Action] = [Reply(msg.join_ref, msg.ref, join.topic, "ok", EMPTY)]
        else:
            if self.joined.get(join.topic, ()) == join.join_ref:
                del self.joined[join.topic]
            actions = [
                Reply(msg.join_ref, msg.ref, join.topic, "error", error("join failed", problem))
            ]
        if join.replaced is not None:
            (old,) = join.replaced
            actions.append(Push(old, old, join.topic, "phx_close", EMPTY))
        return actions

    def leave_all(self) -> list[str]:
        """The socket went away: every topic it had joined, now forgotten."""
        topics = list(self.joined)
        self.joined.clear()
        return topics

    def _join(self, msg: Message) -> list[Action]:
        topic = msg.topic
        problem = topic_problem(topic)
        if problem is not None:
            reason = "unmatched topic" if topic == HEARTBEAT_TOPIC else "invalid topic"
            return [Reply(msg.join_ref, msg.ref, topic, "error", error(reason, problem))]
        rejoin = topic in self.joined
        if not rejoin and len(self.joined) >= self.max_channels:
            return [Reply(msg.join_ref, msg.ref, topic, "error", error("too many channels joined"))]
        replaced = (self.joined[topic],) if rejoin else None
        join_ref = msg.join_ref if msg.join_ref is not None else msg.ref
        self.joined[topic] = join_ref
        return [Join(topic, join_ref, msg, replaced)]

    def _publish(self, join_ref: str | None, msg: Message) -> Action:
        payload = msg.payload
        if isinstance(payload, bytes):
            # A binary push carries no inner event name: it is broadcast as "publish".
            return Publish(join_ref, msg.ref, msg.topic, "publish", payload, True)
        if not (isinstance(payload, list) and len(payload) == 2):
            return self._malformed(join_ref, msg, "publish expects [event, payload object]")
        event, body = payload
        problem = event_problem(event)
        if problem is None and not isinstance(body, dict):
            problem = "the published payload must be a JSON object"
        if problem is not None:
            return self._malformed(join_ref, msg, problem)
        return Publish(join_ref, msg.ref, msg.topic, event, orjson.dumps(body), False)

    @staticmethod
    def _malformed(join_ref: str | None, msg: Message, detail: str) -> Reply:
        return Reply(join_ref, msg.ref, msg.topic, "error", error("malformed payload", detail))
