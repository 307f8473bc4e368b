"""One accepted client socket's inbound side: frames in, channel actions carried out.

Frames are handled in order, like the messages of a Phoenix socket. Some actions take
time: a join waits for the topic's owners to acknowledge the subscription, and a "hook"
rule for the application's verdict. Meanwhile the socket is *held*: it is not read, and
frames already read wait in a backlog; when the step ends, its outcome goes through the
channel rules and the backlog is handled, in order. Other sockets never wait for it.

A socket is held as well once it has sent `frames_per_turn` frames in one turn of the
event loop, until the next turn: a client that writes thousands of frames at once gets
its turn like everybody else, and what it wrote waits, unread, in its own socket. The
turns are the gateway's `Outbox`'s, which ends each one where a socket sent frames.

A frame the serializer cannot decode closes this socket, and only this one, with the
serializer's close code and reason.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from functools import partial
from typing import Any

import orjson

from app.link.interface import Accepted, Outcome
from ws_gateway.access.policy import Policy
from ws_gateway.channels import (
    EMPTY,
    POLICY_VIOLATION,
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
    error,
)
from ws_gateway.gateway import Gateway
from ws_gateway.serializers import Broadcast, ClientFrameError
from ws_gateway.socket import Socket

log = logging.getLogger("dps.gateway")


class ClientSession:
    __slots__ = (
        "backlog",
        "channels",
        "expiry",
        "gateway",
        "open",
        "sock",
        "spent",
        "turn",
        "waiting",
    )

    def __init__(self, sock: Socket, gateway: Gateway, channels: Channels) -> None:
        self.sock = sock
        self.gateway = gateway
        self.channels = channels
        self.open = True
        self.backlog: list[tuple[bytes, bool]] | None = None  # frames read while held
        self.waiting = False  # held for a join or a hook (not only for the turn)
        self.spent = 0  # frames handled in turn `turn` of the event loop
        self.turn = -1
        self.expiry: asyncio.TimerHandle | None = None

    def expire_at(self, when: float, now: float) -> None:
        """Close the socket when its token expires (`when`, on the clock of `now`)."""
        loop = asyncio.get_running_loop()
        self.expiry = loop.call_later(max(0.0, when - now), self._expired)

    def _expired(self) -> None:
        self.gateway.counters.sockets_expired += 1
        log.info("closing %s (user %s): token expired", self.sock.peer, self.channels.user)
        self.sock.close(POLICY_VIOLATION, "token expired")

    def received(self, data: bytes, text: bool) -> None:
        backlog = self.backlog
        if backlog is not None:
            backlog.append((data, text))
            return
        if not self.open:
            return  # closed by this side: what was already read is not for anyone
        sock = self.sock
        outbox = sock.outbox
        if not outbox.scheduled:
            outbox.schedule()
        if self.turn != outbox.turn:
            self.turn, self.spent = outbox.turn, 0
        self.spent += 1
        if self.spent > self.channels.policy.frames_per_turn:
            self.gateway.counters.ingress_paused += 1
            self._hold()
            self.backlog = [(data, text)]
            outbox.held.append(self._next_turn)
            return
        try:
            msg = sock.serializer.decode(data, text)
        except ClientFrameError as exc:
            self.gateway.counters.frame_errors += 1
            log.info("closing %s: %s", sock.peer, exc.reason)
            self.open = False
            sock.close(exc.code, exc.reason, hang_up=True)
            return
        self.run_all(self.channels.handle(msg))

    def run_all(self, actions: list[Action]) -> None:
        for action in actions:
            self.run(action)

    def closed(self) -> None:
        self.open = False
        if self.expiry is not None:
            self.expiry.cancel()
        for topic in self.channels.leave_all():
            self.gateway.leave(self.sock, topic)
        self.gateway.counters.sockets_closed += 1

    def run(self, action: Action) -> None:
        sock, gateway = self.sock, self.gateway
        match action:  # the commonest first: a publish, a reply
            case Publish():
                # Not a closure: its variables would be cells made at every call of run.
                p = action
                reply = partial(_publish_reply, sock, p.join_ref, p.ref, p.topic)
                excluded = 0 if p.echo else sock.id
                gateway.publish(p.topic, p.event, p.payload, p.binary, reply, excluded, p.kept)
            case Reply(join_ref, ref, topic, status, response):
                sock.reply(join_ref, ref, topic, status, response)
            case Push(join_ref, ref, topic, event, payload):
                sock.push(join_ref, ref, topic, event, payload)
            case Join():
                self._join(action)
            case Leave(topic):
                gateway.leave(sock, topic)
            case Track(topic, join_ref, tracked):
                gateway.presence.track(sock, topic, join_ref, tracked)
            case UpdatePresence(topic, meta):
                gateway.presence.update(sock, topic, meta)
            case AskJoin() | AskPublish():
                self._ask(action)
            case Replay():
                self._replay(action)
            case Close(code, reason):
                log.info("closing %s: %s", sock.peer, reason)
                self.open = False
                sock.close(code, reason, hang_up=True)

    def _join(self, join: Join) -> None:
        self._hold()
        self.waiting = True
        done = self.channels.join_done
        self.gateway.join(
            self.sock,
            join.topic,
            join.join_ref,
            lambda outcome: self._resume(done(join, outcome)),
            join.positions,
            join.recover,
        )

    def _replay(self, replay: Replay) -> None:
        """The messages a recovering join missed, as the broadcasts they were, in order."""
        sock = self.sock
        for entry in replay.entries:
            position = f"{replay.epoch}:{entry.offset}"
            broadcast = Broadcast(replay.topic, entry.event, entry.payload, entry.binary, position)
            data = sock.serializer.fastlane(broadcast, replay.join_ref, True)
            if data is not None:
                sock.send(data)

    def _ask(self, ask: AskJoin | AskPublish) -> None:
        policy: Policy = self.channels.policy
        assert policy.hooks is not None  # rules that say "hook" need DPS_HOOK_URL to load
        self._hold()
        self.waiting = True
        kind, body = self._hook_body(ask)
        task = asyncio.get_running_loop().create_task(policy.hooks.ask(kind, body))
        task.add_done_callback(lambda t: self._resume(self.channels.answered(ask, t.result())))

    def _hook_body(self, ask: AskJoin | AskPublish) -> tuple[str, dict[str, Any]]:
        common = {"user": self.channels.user, "node": self.gateway.name, "socket": self.sock.id}
        if isinstance(ask, AskJoin):
            return "join", {**common, "topic": ask.msg.topic, "payload": ask.msg.payload}
        publish = ask.publish
        if publish.binary:
            payload: Any = base64.b64encode(publish.payload).decode()
        else:
            payload = orjson.Fragment(publish.payload)  # the client's own bytes, as they go out
        event = {"topic": publish.topic, "event": publish.event, "payload": payload}
        return "publish", {**common, **event, "binary": publish.binary}

    def _hold(self) -> None:
        self.backlog = []
        self.sock.transport.pause_reading()

    def _resume(self, actions: list[Action]) -> None:
        """The step the socket was held for is done: `actions` follow from it."""
        self.waiting = False
        backlog, self.backlog = self.backlog or [], None
        if not self.open:
            return
        self.sock.transport.resume_reading()
        self.run_all(actions)
        for data, text in backlog:  # held again (a join, or the turn spent): queued again
            self.received(data, text)

    def _next_turn(self) -> None:
        if self.backlog is not None and not self.waiting:
            self._resume([])


def _publish_reply(
    sock: Socket, join_ref: str | None, ref: str | None, topic: str, outcome: Outcome
) -> None:
    """The reply to a publish, once its owner accepted it or it failed."""
    if isinstance(outcome, Accepted):
        sock.reply(join_ref, ref, topic, "ok", EMPTY)
    else:
        sock.reply(join_ref, ref, topic, "error", error("publish failed", outcome))
