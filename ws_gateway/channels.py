"""The channels of one socket: Phoenix's channel rules as a pure state machine.

Each topic is, on one socket, either unjoined or joined under a join_ref (the ref of the
`phx_join` that created the current instance) with the channel rule that admitted it.
`Channels.handle` takes one decoded client message and returns what to do, in order:
replies and pushes to send to this socket, and commands for the gateway (join, leave,
publish) or for the application's hooks (ask). It never does I/O; time comes from the
`Policy` it is given.

    message                          state              actions
    heartbeat on "phoenix"           any                ok reply, join_ref null
    phx_join T, allowed              unjoined           join T; once the gateway has done
                                                        it (`join_done`): ok reply
    phx_join T, allowed              joined as J        join T (new ref); then ok reply,
                                                        phx_close for the old instance J
    phx_join T, a "hook" rule        any                ask the hook; its verdict
                                                        (`answered`) continues as above
    phx_join T, refused              unjoined           error reply "unauthorized"
    phx_join T (bad topic / full)    any                error reply, state unchanged
    phx_leave T, join_ref J or null  joined as J        leave T, ok reply, phx_close J
    phx_leave T                      unjoined           ok reply
    publish T [event, object]        joined as J        publish (the ok reply follows the
                                                        owner's acknowledgement), or ask
                                                        the hook, or error "unauthorized"
    E T object, E allowed by the     joined as J        the same, broadcast as event E
    rule's `events`
    presence_update T object         joined as J        replace the socket's presence meta,
                                                        ok reply (error: T has no presence)
    any push, join_ref neither J     joined as J        dropped without reply (stale)
    nor null
    any other push to T              unjoined           error "unmatched topic", join_ref null
    any other event                  joined             error "unknown event", stays joined

A rejoin (phx_join of a topic already joined) replaces the old instance whatever becomes of
the new one, as in Phoenix: if the new join is refused or fails, the old instance is
closed too. A join counts as joined from the moment it goes to the gateway; when the
gateway cannot do it (the topic's owner refused or never acknowledged the subscription),
`join_done` forgets the topic and answers with the error reply "join failed" instead.

A V2 join whose join_ref is null (handy when typing frames by hand) and every V1 join take
the join's own ref as the instance's join_ref, as Phoenix does for V1.

On a topic whose rule says `presence = true`, a join says what to track (`Join.tracked`,
from its payload's `presence`, see `ws_gateway.presence`; a join whose presence is not
acceptable is refused) and, once done, tracks it right after the ok reply (`Track`); the
gateway then pushes `presence_state`. Clients may not broadcast `presence_state` nor
`presence_diff` there: those events are the server's.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from app.link.codec import Entry
from app.link.interface import Kept, Position, Recovery
from ws_gateway import payloads
from ws_gateway.access.hooks import Verdict
from ws_gateway.access.policy import Policy
from ws_gateway.access.rules import PUBLISH, JoinMode, PublishMode, Rule
from ws_gateway.access.tokens import TokenError
from ws_gateway.limits import Bucket
from ws_gateway.presence import Tracked, meta_of, tracked
from ws_gateway.serializers import Message
from ws_gateway.serializers.protocol import MAX_FIELD_BYTES

HEARTBEAT_TOPIC = "phoenix"
UNAUTHORIZED = "unauthorized"
RATE_LIMITED = "rate limited"
POLICY_VIOLATION = 1008
MAX_OFFSET = 2**63  # history offsets are below it (link frames carry them as u64)
PRESENCE_UPDATE = "presence_update"
PRESENCE_EVENTS = frozenset({"presence_state", "presence_diff"})  # the server's, on presence topics


class Channel(NamedTuple):
    """A joined topic: the instance's join_ref and the rule that admitted it."""

    join_ref: str | None
    rule: Rule


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
    is the join_ref of the instance this one replaces, if it replaces one. `positions`: its
    broadcasts carry their positions; `recover`: the position the client saw, from which
    what it missed comes first (at most the rule's history size); `tracked`, what to track
    once joined, on a presence topic."""

    topic: str
    join_ref: str | None
    msg: Message
    replaced: tuple[str | None] | None
    positions: bool = False
    recover: tuple[Position, int] | None = None
    tracked: Tracked | None = None


class Replay(NamedTuple):
    """Send the socket the messages it missed on `topic` (a join that recovered)."""

    topic: str
    join_ref: str | None
    epoch: str
    entries: tuple[Entry, ...]


class Track(NamedTuple):
    """Track the socket's presence on `topic`, which it has just joined as `join_ref`."""

    topic: str
    join_ref: str | None
    tracked: Tracked


class UpdatePresence(NamedTuple):
    """Replace the meta of the socket's presence on `topic`."""

    topic: str
    meta: bytes


class Leave(NamedTuple):
    topic: str


class Close(NamedTuple):
    """Close the socket (it went on at full speed past its rate limit)."""

    code: int
    reason: str


class Publish(NamedTuple):
    """Broadcast `payload` (encoded JSON, or raw bytes when `binary`) as `event` on `topic`;
    without `echo`, to every subscriber but the sender; `kept`: the topic's history rule."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: bytes
    binary: bool
    echo: bool
    kept: Kept | None = None


class AskJoin(NamedTuple):
    """Ask the join hook about `msg` (a phx_join that `rule` leaves to the application)."""

    msg: Message
    rule: Rule


class AskPublish(NamedTuple):
    """Ask the publish hook about `publish`."""

    publish: Publish


Action = (
    Reply
    | Push
    | Join
    | Leave
    | Publish
    | AskJoin
    | AskPublish
    | Close
    | Replay
    | Track
    | UpdatePresence
)

EMPTY: dict[str, Any] = {}


def error(reason: str, detail: str | None = None) -> dict[str, str]:
    return {"reason": reason} if detail is None else {"reason": reason, "detail": detail}


# Control characters, and the bidirectional overrides and isolates that make a name read
# differently from what it is (a topic is shown to people, in logs and pages).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be joined, or None when it is fine."""
    if not topic:
        return "topic is empty"
    if len(topic.encode()) > MAX_FIELD_BYTES:
        return f"topic is longer than {MAX_FIELD_BYTES} bytes"
    if topic == HEARTBEAT_TOPIC:
        return "topic 'phoenix' is reserved for heartbeats"
    if UNPRINTABLE.search(topic):
        return "topic holds a control or bidirectional-override character"
    return None


def event_problem(event: Any) -> str | None:
    """Why `event` cannot be broadcast, or None when it is fine."""
    if not isinstance(event, str) or not event:
        return "event must be a non-empty string"
    if len(event.encode()) > MAX_FIELD_BYTES:
        return f"event is longer than {MAX_FIELD_BYTES} bytes"
    if event.startswith("phx_"):
        return "events starting with phx_ are reserved"
    if UNPRINTABLE.search(event):
        return "event holds a control or bidirectional-override character"
    return None


def recovery_position(value: Any) -> Position | None:
    """The position a join's `recover` names, or None when it is not one."""
    if not isinstance(value, dict):
        return None
    epoch, offset = value.get("epoch"), value.get("offset")
    if not isinstance(epoch, str) or len(epoch.encode()) > MAX_FIELD_BYTES:
        return None  # bytes, as a link frame carries it
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < MAX_OFFSET:
        return None
    return (epoch, offset)


def payload_bytes(value: Any, raw: bytes | None, max_depth: int) -> bytes | str:
    """What to forward for the payload `value` the client sent as `raw` (None when the
    serializer could not cut it out): the bytes, or why it cannot be broadcast."""
    if payloads.too_deep(raw, value, max_depth):
        return f"the payload nests deeper than {max_depth} levels"
    return raw if raw is not None else orjson.dumps(value)


class Channels:
    """The joined topics of one socket (whose user is `user`, None when anonymous)."""

    __slots__ = ("joined", "joins", "policy", "publishes", "strikes", "user")

    def __init__(self, policy: Policy, user: str | None = None) -> None:
        self.policy = policy
        self.user = user
        self.joined: dict[str, Channel] = {}
        self.joins: Bucket | None = None  # made at the first join
        self.publishes: Bucket | None = None  # made at the first publish
        self.strikes = 0  # rate-limited frames in a row

    def handle(self, msg: Message) -> list[Action]:
        topic, event = msg.topic, msg.event
        if topic == HEARTBEAT_TOPIC and event == "heartbeat":
            return [Reply(None, msg.ref, topic, "ok", EMPTY)]
        if event == "phx_join":
            return self._join(msg)
        channel = self.joined.get(topic)
        if channel is None:
            if event == "phx_leave":
                return [Reply(msg.join_ref, msg.ref, topic, "ok", EMPTY)]
            return [Reply(None, msg.ref, topic, "error", error("unmatched topic"))]
        current = channel.join_ref
        if msg.join_ref is not None and msg.join_ref != current:
            return []
        if event == "phx_leave":
            del self.joined[topic]
            return [
                Leave(topic),
                Reply(current, msg.ref, topic, "ok", EMPTY),
                Push(current, current, topic, "phx_close", EMPTY),
            ]
        rule = channel.rule
        if event == PRESENCE_UPDATE:
            return self._update_presence(current, msg, rule)
        reserved = event.startswith("phx_") or (rule.presence and event in PRESENCE_EVENTS)
        if reserved or not rule.allows(event):
            return [Reply(current, msg.ref, topic, "error", error("unknown event"))]
        limited = self._rate_limited(current, msg, publish=True)
        if limited is not None:
            return limited
        if event == PUBLISH:
            return [self._publish(current, msg, rule)]
        return [self._push(current, msg, rule)]

    def join_done(self, join: Join, outcome: str | Recovery | None) -> list[Action]:
        """The gateway has done `join` (`outcome` None, or what it recovered) or could not
        (why)."""
        msg = join.msg
        if outcome is None:
            actions: list[Action] = [Reply(msg.join_ref, msg.ref, join.topic, "ok", EMPTY)]
        elif isinstance(outcome, Recovery):
            recovered = {
                "recovered": outcome.recovered,
                "epoch": outcome.epoch,
                "offset": outcome.last,
            }
            actions = [Reply(msg.join_ref, msg.ref, join.topic, "ok", recovered)]
            if outcome.entries:
                actions.append(Replay(join.topic, join.join_ref, outcome.epoch, outcome.entries))
        else:
            channel = self.joined.get(join.topic)
            if channel is not None and channel.join_ref == join.join_ref:
                del self.joined[join.topic]
            failed = error("join failed", outcome)
            actions = [Reply(msg.join_ref, msg.ref, join.topic, "error", failed)]
        ok = outcome is None or isinstance(outcome, Recovery)
        if ok and join.tracked is not None:  # its presence_state comes after what it missed
            actions.append(Track(join.topic, join.join_ref, join.tracked))
        if join.replaced is not None:
            (old,) = join.replaced
            actions.append(Push(old, old, join.topic, "phx_close", EMPTY))
        return actions

    def answered(self, ask: AskJoin | AskPublish, verdict: Verdict) -> list[Action]:
        """The hook's verdict on `ask`."""
        refusal = error(verdict.reason or UNAUTHORIZED)
        if isinstance(ask, AskJoin):
            if not verdict.allow:
                return self._refuse_join(ask.msg, refusal)
            return self._start_join(ask.msg, ask.rule)
        publish = ask.publish
        if not verdict.allow:
            self.policy.counters.publishes_refused += 1
            return [Reply(publish.join_ref, publish.ref, publish.topic, "error", refusal)]
        if verdict.payload is not None:  # a JSON object, whatever the original was
            publish = publish._replace(payload=verdict.payload, binary=False)
        return [publish]

    def leave_all(self) -> list[str]:
        """The socket went away: every topic it had joined, now forgotten."""
        topics = list(self.joined)
        self.joined.clear()
        return topics

    # Joins.

    def _join(self, msg: Message) -> list[Action]:
        topic = msg.topic
        problem = topic_problem(topic)
        if problem is not None:
            reason = "unmatched topic" if topic == HEARTBEAT_TOPIC else "invalid topic"
            return [Reply(msg.join_ref, msg.ref, topic, "error", error(reason, problem))]
        if topic not in self.joined and len(self.joined) >= self.policy.max_channels:
            return [Reply(msg.join_ref, msg.ref, topic, "error", error("too many channels joined"))]
        limited = self._rate_limited(msg.join_ref, msg, publish=False)
        if limited is not None:
            return limited
        rule = self.policy.rules.match(topic)
        if rule is None or not self._may_join(rule, msg):
            return self._refuse_join(msg, error(UNAUTHORIZED))
        if rule.join is JoinMode.HOOK:
            return [AskJoin(msg, rule)]
        return self._start_join(msg, rule)

    def _may_join(self, rule: Rule, msg: Message) -> bool:
        """Whether `rule` lets this socket join (a hook rule: whether to ask at all)."""
        owner = rule.owner(msg.topic)
        if owner is not None and owner != self.user:
            return False
        if rule.join is JoinMode.USERS:
            return self.user is not None
        if rule.join is JoinMode.TOKEN:
            return self._join_token_fits(msg)
        return True

    def _rate_limited(
        self, join_ref: str | None, msg: Message, publish: bool
    ) -> list[Action] | None:
        """None when the socket may go on; else its error reply, or its end when it went
        on at full speed for a whole burst after being told."""
        policy = self.policy
        rate, burst = policy.publish_rate if publish else policy.join_rate
        now = policy.clock()
        bucket = self.publishes if publish else self.joins
        if bucket is None:
            bucket = Bucket(burst, now)
            if publish:
                self.publishes = bucket
            else:
                self.joins = bucket
        if bucket.take(now, rate, burst):
            self.strikes = 0
            return None
        policy.counters.rate_limited += 1
        self.strikes += 1
        if self.strikes > burst:
            policy.counters.sockets_abusive_closed += 1
            return [Close(POLICY_VIOLATION, "rate limit exceeded")]
        return [Reply(join_ref, msg.ref, msg.topic, "error", error(RATE_LIMITED))]

    def _join_token_fits(self, msg: Message) -> bool:
        token = msg.payload.get("token") if isinstance(msg.payload, dict) else None
        verifier = self.policy.verifier
        if not isinstance(token, str) or verifier is None:
            return False
        try:
            claims = verifier.verify(token, self.policy.clock())
        except TokenError:
            return False
        sub = claims.get("sub")
        return claims.get("topic") == msg.topic and (sub is None or sub == self.user)

    def _start_join(self, msg: Message, rule: Rule) -> list[Action]:
        topic = msg.topic
        params = msg.payload if isinstance(msg.payload, dict) else {}
        recover = params.get("recover")
        since = None
        if recover is not None:
            since = recovery_position(recover)
            if since is None:
                detail = 'recover expects {"epoch": string, "offset": integer >= 0}'
                return [
                    Reply(msg.join_ref, msg.ref, topic, "error", error("malformed payload", detail))
                ]
        wanted = self._tracked(msg, rule) if rule.presence else None
        if isinstance(wanted, str):
            return self._refuse_join(msg, error("malformed payload", wanted))
        old = self.joined.get(topic)
        join_ref = msg.join_ref if msg.join_ref is not None else msg.ref
        self.joined[topic] = Channel(join_ref, rule)
        replaced = None if old is None else (old.join_ref,)
        # A client that recovers wants positions from its first join on, when it has none
        # to name yet (phoenix.js: `() => ({recover: last})` with `last` still null).
        positions = params.get("positions") is True or "recover" in params
        limit = rule.kept.size if rule.kept is not None else 0
        recovery = None if since is None else (since, limit)
        return [Join(topic, join_ref, msg, replaced, positions, recovery, wanted)]

    def _tracked(self, msg: Message, rule: Rule) -> Tracked | str:
        """What the join `msg` to a presence topic tracks; a client's own key only where
        anyone may join."""
        policy, own_key = self.policy, rule.join is JoinMode.ANYONE
        depth = policy.max_payload_depth
        return tracked(msg.payload, msg.raw, self.user, own_key, policy.max_presence_meta, depth)

    def _refuse_join(self, msg: Message, response: dict[str, str]) -> list[Action]:
        self.policy.counters.joins_refused += 1
        reply = Reply(msg.join_ref, msg.ref, msg.topic, "error", response)
        old = self.joined.pop(msg.topic, None)
        if old is None:
            return [reply]
        return [
            Leave(msg.topic),
            reply,
            Push(old.join_ref, old.join_ref, msg.topic, "phx_close", EMPTY),
        ]

    def _update_presence(self, join_ref: str | None, msg: Message, rule: Rule) -> list[Action]:
        topic = msg.topic
        if not rule.presence:
            refusal = error("unknown event", "presence is not enabled on this topic")
            return [Reply(join_ref, msg.ref, topic, "error", refusal)]
        limited = self._rate_limited(join_ref, msg, publish=True)
        if limited is not None:
            return limited
        policy = self.policy
        meta = meta_of(msg.payload, msg.raw, policy.max_presence_meta, policy.max_payload_depth)
        if isinstance(meta, str):
            return [_malformed(join_ref, msg, meta)]
        return [UpdatePresence(topic, meta), Reply(join_ref, msg.ref, topic, "ok", EMPTY)]

    # Publishes.

    def _publish(self, join_ref: str | None, msg: Message, rule: Rule) -> Action:
        payload = msg.payload
        if isinstance(payload, bytes):
            # A binary push carries no inner event name: it is broadcast as "publish".
            publish = Publish(
                join_ref, msg.ref, msg.topic, PUBLISH, payload, True, rule.echo, rule.kept
            )
            return self._authorize(publish, rule)
        if not (isinstance(payload, list) and len(payload) == 2):
            return _malformed(join_ref, msg, "publish expects [event, payload object]")
        event, body = payload
        problem = event_problem(event)
        if problem is None and not isinstance(body, dict):
            problem = "the published payload must be a JSON object"
        if problem is not None:
            return _malformed(join_ref, msg, problem)
        raw = None if msg.raw is None else payloads.envelope_body(msg.raw)
        return self._broadcast(join_ref, msg, event, body, raw, rule)

    def _push(self, join_ref: str | None, msg: Message, rule: Rule) -> Action:
        """A push broadcast as its own event (a rule's `events`)."""
        problem = event_problem(msg.event)
        if problem is None and not isinstance(msg.payload, dict):
            problem = f"the payload of {msg.event!r} must be a JSON object"
        if problem is not None:
            return _malformed(join_ref, msg, problem)
        return self._broadcast(join_ref, msg, msg.event, msg.payload, msg.raw, rule)

    def _broadcast(
        self,
        join_ref: str | None,
        msg: Message,
        event: str,
        body: dict[str, Any],
        raw: bytes | None,
        rule: Rule,
    ) -> Action:
        encoded = payload_bytes(body, raw, self.policy.max_payload_depth)
        if isinstance(encoded, str):
            return _malformed(join_ref, msg, encoded)
        publish = Publish(join_ref, msg.ref, msg.topic, event, encoded, False, rule.echo, rule.kept)
        return self._authorize(publish, rule)

    def _authorize(self, publish: Publish, rule: Rule) -> Action:
        if rule.publish is PublishMode.HOOK:
            return AskPublish(publish)
        if rule.publish is PublishMode.NOBODY:
            self.policy.counters.publishes_refused += 1
            return Reply(publish.join_ref, publish.ref, publish.topic, "error", error(UNAUTHORIZED))
        return publish


def _malformed(join_ref: str | None, msg: Message, detail: str) -> Reply:
    return Reply(join_ref, msg.ref, msg.topic, "error", error("malformed payload", detail))
