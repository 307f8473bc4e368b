"""One load-test client socket: Phoenix V2 joins, heartbeats, publishes and deliveries.

Deliveries are the hot path: a message is recognised by the marker its publisher put in the
object (`"m":"<slot>:<seq>:<sent_ns>"`, found with `bytes.find`) and never JSON-decoded.
Presence events (`presence_state`, `presence_diff`) are recognised by the head of the frame
and counted, never decoded either: a state is as large as the topic's presence. Everything
else (join, leave, publish and heartbeat replies, phx_error, phx_close) is rare and is
decoded. A socket joined to several topics (a fan-out publisher) finds the delivery's topic
after the `,null,"` that follows its join_ref.

A publisher sends to its topics round-robin, each message with the next sequence number of
that topic. In a closed loop (rate 0) it keeps `window` publishes in flight: unacknowledged,
or with `echo`, unacknowledged or not yet received back on its own socket (a publisher is a
subscriber of its topics), so that a server that acknowledges before it delivers cannot
pile up an unbounded backlog; each ack (or echo) sends the next one. At a rate, the
worker's pacer calls `pace` a few hundred times a second, within the same window.

A subscriber that reconnects (`--reconnect-every`, `positions`) joins with
`{"recover": null}`, so that every delivery carries its position (`"epoch:offset"` in the
frame's ref slot), and remembers the last one. When the worker drops it (`drop`), a new
session takes its subscription over (`resume`: that position) and rejoins with
`{"recover": {"epoch": ..., "offset": ...}}`; the reply says whether the server recovered
and the offset it recovered up to, and the deliveries up to that offset are the replay
(counted as recovered), before live ones.

A churn client (one topic, `ConnSpec.presence`) joins with a presence and is made to
`leave` and `rejoin` by its worker; a rejoin's latency is measured to its ok reply
(`Tally.rejoins`) and to its `presence_state` (`Tally.states`).

The frames are Phoenix V2's; `socketio.SocketIOSession` overrides the few methods that
build and read frames to speak Socket.IO instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from app.tools.loadtest.options import Target
from app.tools.loadtest.scenarios import EVENT, PRESENCE_JOIN, ConnSpec, topic_name
from app.tools.loadtest.tally import Tally
from app.tools.loadtest.websocket import ClientState, WebSocketClient

MARK = b'"m":"'
TOPIC_AFTER_REFS = b',null,"'
QUOTE = ord('"')
# A presence push's head: its join_ref, then the event.
PRESENCE_HEAD = re.compile(rb'\[(?:null|"([^"]*)"),null,"(?:[^"\\]|\\.)*","presence_(state|diff)",')


class LoadSession(WebSocketClient):
    TAIL = b'"}]]'  # what closes a publish after its padding: the object, [event, object], frame

    def __init__(
        self,
        target: Target,
        spec: ConnSpec,
        first_sub: int,
        tally: Tally,
        payload_bytes: int,
        window: int,
        on_change: Callable[[], None],
        echo: bool = False,
        positions: bool = False,
        resume: bytes | None = None,
    ) -> None:
        super().__init__(target)
        self.spec = spec
        self.tally = tally
        self.window = window
        self.on_change = on_change  # called when a join or the connection settles
        self.started_ns = time.monotonic_ns()
        self.now = 0
        self.count = 0  # deliveries on this socket
        self.closing = False
        self.settled = False  # opened and every join answered, or failed
        self.ref = 0
        self.subs = list(range(first_sub, first_sub + len(spec.topics)))
        self.single = self.subs[0] if len(self.subs) == 1 else -1
        self.sub_of_topic = {
            topic_name(t).encode(): s for t, s in zip(spec.topics, self.subs, strict=True)
        }
        self.join_refs: dict[int, tuple[int, int]] = {}  # ref -> (sub, sent ns)
        self.beats: dict[int, int] = {}  # heartbeat ref -> sent ns
        # A subscriber that reconnects (one topic).
        self.positions = positions
        self.position = resume  # b"epoch:offset" of the last delivery; None: none yet
        self.resumed = resume is not None  # this session took over a dropped one's
        self.position_at = 0  # where a delivery's position starts: after `["<join_ref>",`
        self.replay_until = 0  # the offset a rejoin recovered up to, until it has arrived
        self.handed_over = False  # dropped, its subscription taken over by a new session
        # Churn (one topic): the current instance, and what leaves and rejoins wait for.
        self.join_ref = b""
        self.topic_json = b""
        self.leaving: dict[int, bytes] = {}  # leave ref -> the join_ref it closes
        self.left: set[bytes] = set()  # join_refs whose phx_close is due
        self.rejoining: dict[int, int] = {}  # join ref -> sent ns
        self.stateless: dict[bytes, int] = {}  # join_ref -> sent ns, until presence_state
        # The publisher.
        self.pending: dict[int, tuple[int, int, int]] = {}  # ref -> (sent ns, topic i, seq)
        self.echo = echo
        self.own_slot = b"%d" % spec.slot  # b"-1" for a subscriber: matches no message
        self.unechoed = 0  # own messages published and not received back yet
        self.remaining = -1 if spec.quota is None else spec.quota  # -1: until the deadline
        self.deadline_ns = 0
        self.start_ns = 0
        self.published = 0
        self.turn = 0
        self.sent_per_topic = [0] * len(spec.topics)
        self.heads: list[bytes] = []
        self.mids: list[bytes] = []
        pad = max(0, payload_bytes - len(b'{"m":"%d:1:%d","p":""}' % (spec.slot, 10**18)))
        self.tail = b'","p":"' + b"x" * pad + self.TAIL

    # The protocol's frames (Phoenix V2 here).
    def _join_frame(self, ref: bytes, name: bytes) -> bytes:
        return b'["%s","%s",%s,"phx_join",%s]' % (ref, ref, name, self._join_payload())

    def _join_payload(self) -> bytes:
        if not self.positions:
            return PRESENCE_JOIN if self.spec.presence else b"{}"
        if self.position is None:
            return b'{"recover":null}'
        epoch, _, offset = self.position.rpartition(b":")
        return b'{"recover":{"epoch":"%s","offset":%s}}' % (epoch, offset)

    def _publish_prefix(self, join_ref: bytes, name: bytes) -> tuple[bytes, bytes]:
        """What comes before a publish's ref, and between it and the message's "<seq>:<ns>"."""
        mid = b'",%s,"publish",["%s",{"m":"%d:' % (name, EVENT.encode(), self.spec.slot)
        return b'["' + join_ref + b'","', mid

    # Connection life.
    def on_open(self) -> None:
        if not self.resumed:  # a reconnection is not one more connection of the phase
            self._count_open()
        self._join()

    def _count_open(self) -> None:
        self.tally.opened += 1
        self.tally.connects.append(time.monotonic_ns() - self.started_ns)

    def _join(self) -> None:
        now = time.monotonic_ns()
        for topic, sub in zip(self.spec.topics, self.subs, strict=True):
            ref = self._ref()
            jr = b"%d" % ref
            name = orjson.dumps(topic_name(topic))
            self.join_refs[ref] = (sub, now)
            self.tally.open[sub] = 1
            self.position_at = len(b'["",') + len(jr)
            self.send_text(self._join_frame(jr, name))
            self.join_ref, self.topic_json = jr, name
            head, mid = self._publish_prefix(jr, name)
            self.heads.append(head)
            self.mids.append(mid)
        self._settle_if_joined()

    def on_failed(self, kind: str) -> None:
        self.tally.failed += 1
        self.tally.errors[kind] += 1
        for sub in self.subs:  # a reconnection that failed: nothing more will arrive
            self.tally.open[sub] = 0
        self._settle()

    def on_closed(self, code: int | None) -> None:
        tally = self.tally
        if not self.handed_over:  # else the subscription goes on, on the new session
            for sub in self.subs:
                tally.open[sub] = 0
        if not self.closing:
            tally.dropped += 1
            tally.errors["connection_lost" if code is None else f"closed_{code}"] += 1
        self.unacknowledged("ack_lost")
        if self.join_refs:
            tally.errors["join_lost"] += len(self.join_refs)
            self.join_refs.clear()
        self.remaining = 0
        self._settle()

    def shut(self) -> None:
        self.closing = True
        self.close()

    def drop(self) -> None:
        """Lose the connection as a network failure does, without a closing handshake; a
        new session (`resume`: this one's position) takes its subscription over."""
        self.closing = self.handed_over = True
        self.abort()

    @property
    def can_drop(self) -> bool:
        """Joined, and with a position to recover from (nothing arrived yet: nothing to
        name, and a rejoin without a position would recover nothing)."""
        return (
            self.state is ClientState.OPEN
            and not self.closing
            and self.settled
            and self.position is not None
        )

    # Receiving.
    def data_received(self, data: bytes) -> None:
        self.now = now = time.monotonic_ns()
        before = self.count
        super().data_received(data)
        if self.count != before:
            self.tally.batch(now, self.count - before)

    def on_message(self, buf: bytes, start: int, end: int) -> None:
        i = buf.find(MARK, start, end)
        if i < 0:
            presence = PRESENCE_HEAD.match(buf, start, end)
            if presence is None:
                self._control(buf[start:end])
            else:
                self._presence(presence.group(1), presence.group(2), end - start)
            return
        i += 5
        slot, seq_text, sent = buf[i : buf.find(b'"', i, end)].split(b":")
        if slot == self.own_slot:
            self.unechoed -= 1
            if self.echo and self.spec.rate == 0:
                self._refill(self.now)
        sub = self.single
        if sub < 0:
            t = buf.find(TOPIC_AFTER_REFS, start, end) + 7
            sub = self.sub_of_topic[bytes(buf[t : buf.find(b'"', t, end)])]
        tally = self.tally
        seq = int(seq_text)
        k = sub * tally.slots + int(slot)
        lasts = tally.lasts
        if seq == lasts[k] + 1:
            lasts[k] = seq
            tally.unique[sub] += 1
        else:
            tally.irregular(k, sub, seq)
        self.count = count = self.count + 1
        if not count & tally.sample_mask:
            tally.latencies.append(self.now - int(sent))
        if self.positions:
            self._positioned(buf, start + self.position_at, end)

    def _positioned(self, buf: bytes, at: int, end: int) -> None:
        """Remember the delivery's position (null: the topic keeps no history), and count
        it as recovered while the rejoin's replay lasts."""
        if buf[at] != QUOTE:
            return
        position = self.position = buf[at + 1 : buf.find(b'"', at + 1, end)]
        if self.replay_until:
            if int(position[position.rindex(b":") + 1 :]) <= self.replay_until:
                self.tally.recovered += 1
            else:
                self.replay_until = 0

    def _presence(self, join_ref: bytes | None, kind: bytes, size: int) -> None:
        tally = self.tally
        tally.presence_at = self.now
        if kind == b"diff":
            tally.presence_diffs += 1
            tally.presence_diff_bytes += size
            return
        tally.presence_states += 1
        tally.presence_state_bytes += size
        sent = self.stateless.pop(join_ref or b"", None)
        if sent is not None:
            tally.states.append(self.now - sent)

    def _control(self, frame: bytes) -> None:
        tally = self.tally
        try:
            join_ref, ref_text, _, event, payload = orjson.loads(frame)[:5]
        except (orjson.JSONDecodeError, ValueError, TypeError):
            tally.errors["bad_frame"] += 1
            return
        if event == "phx_close" and isinstance(join_ref, str) and join_ref.encode() in self.left:
            self.left.discard(join_ref.encode())  # the end of an instance this client left
            return
        if event != "phx_reply":
            tally.errors[f"{event}"] += 1  # phx_error, phx_close, an unexpected push
            return
        ok = isinstance(payload, dict) and payload.get("status") == "ok"
        ref = int(ref_text) if isinstance(ref_text, str) and ref_text.isdigit() else -1
        if ok and self.resumed and ref in self.join_refs:
            self._rejoined(payload.get("response"))
        self._reply(ref, ok, "" if ok else _reason(payload))

    def _rejoined(self, response: Any) -> None:
        """The answer to a rejoin that asked to recover: what the replay runs up to."""
        tally = self.tally
        tally.reconnects += 1
        if not isinstance(response, dict):
            response = {}
        offset = response.get("offset")
        if response.get("recovered") is True and isinstance(offset, int):
            self.replay_until = offset
        else:
            tally.recoveries_failed += 1

    def _reply(self, ref: int, ok: bool, reason: str) -> None:
        """The server answered the join, publish or heartbeat `ref` (with `reason` if not ok)."""
        tally = self.tally
        publish = self.pending.pop(ref, None)
        if publish is not None:
            if ok:
                tally.acked += 1
                tally.acks.append(self.now - publish[0])
            else:
                tally.errors[f"publish_error: {reason}"] += 1
                self._unconfirmed(publish)
            if self.spec.rate == 0:
                self._refill(self.now)
            return
        if self.leaving.pop(ref, None) is not None:
            if not ok:
                tally.errors[f"leave_error: {reason}"] += 1
            return
        sent = self.rejoining.pop(ref, None)
        if sent is not None:
            if ok:
                tally.rejoins.append(self.now - sent)
            else:
                tally.errors[f"join_error: {reason}"] += 1
            return
        join = self.join_refs.pop(ref, None)
        if join is not None:
            sub, sent = join
            if ok:
                tally.joined[sub] = 1
                tally.joins.append(self.now - sent)
            else:
                tally.errors[f"join_error: {reason}"] += 1
            self._settle_if_joined()
            return
        if self.beats.pop(ref, None) is None:
            tally.errors["unexpected_reply"] += 1
        elif not ok:
            tally.errors["heartbeat_error"] += 1

    # Churn.
    def leave(self) -> None:
        """Leave the topic (of a one-topic client)."""
        ref = self._ref()
        self.leaving[ref] = self.join_ref
        self.left.add(self.join_ref)
        self.tally.leaves += 1
        self.send_text(b'["%s","%d",%s,"phx_leave",{}]' % (self.join_ref, ref, self.topic_json))

    def rejoin(self) -> None:
        """Join the topic again, as a new instance."""
        ref = self._ref()
        self.join_ref = b"%d" % ref
        self.rejoining[ref] = self.stateless[self.join_ref] = time.monotonic_ns()
        self.tally.rejoins_sent += 1
        self.send_text(self._join_frame(self.join_ref, self.topic_json))

    # Sending.
    def heartbeat(self, now: int) -> None:
        if self.beats:
            self.tally.errors["heartbeat_timeout"] += len(self.beats)
            self.beats.clear()
        ref = self._ref()
        self.beats[ref] = now
        self.send_text(b'[null,"%d","phoenix","heartbeat",{}]' % ref)

    def start_publishing(self, start_ns: int, deadline_ns: int) -> None:
        """Begin at `start_ns`; a run by duration stops sending at `deadline_ns`."""
        self.start_ns, self.deadline_ns = start_ns, deadline_ns
        if self.spec.rate == 0:
            self._refill(time.monotonic_ns())

    def pace(self, now: int) -> None:
        """At a rate: send what is due by `now`, within the window."""
        spec = self.spec
        due = int((now - self.start_ns) * spec.rate / 1e9 + 1 - spec.offset) - self.published
        self._send(now, min(due, self._room()))

    def next_due_ns(self) -> int:
        """At a rate: when the next message is due."""
        spec = self.spec
        return self.start_ns + int((self.published + spec.offset) / spec.rate * 1e9)

    def stop_publishing(self) -> None:
        self.remaining = 0

    def unacknowledged(self, kind: str) -> None:
        """Publishes in flight will never be answered: count them as `kind` and list them
        as not acknowledged."""
        if self.pending:
            self.tally.errors[kind] += len(self.pending)
            for publish in self.pending.values():
                self._unconfirmed(publish)
            self.pending.clear()

    def _unconfirmed(self, publish: tuple[int, int, int]) -> None:
        _, t, seq = publish
        self.tally.unconfirmed.append((self.spec.topics[t], self.spec.slot, seq))

    @property
    def publishing_done(self) -> bool:
        return self.remaining == 0 and not self.pending

    def _refill(self, now: int) -> None:
        self._send(now, self._room())

    def _room(self) -> int:
        """Publishes the window allows now."""
        in_flight = len(self.pending)
        if self.echo:
            in_flight = max(in_flight, self.unechoed)
        return self.window - in_flight

    def _send(self, now: int, count: int) -> None:
        if self.remaining == 0 or not self.heads:
            return
        if self.deadline_ns and now >= self.deadline_ns:
            self.remaining = 0
            return
        if self.remaining > 0:
            count = min(count, self.remaining)
            self.remaining -= max(0, count)
        heads, mids, tail = self.heads, self.mids, self.tail
        per_topic, topics = self.sent_per_topic, len(heads)
        pending, tally, clock = self.pending, self.tally, time.monotonic_ns
        for _ in range(count):
            t = self.turn % topics
            self.turn += 1
            seq = per_topic[t] = per_topic[t] + 1
            self.ref = ref = self.ref + 1
            sent = clock()
            pending[ref] = (sent, t, seq)
            self.send_text(heads[t] + b"%d" % ref + mids[t] + b"%d:%d" % (seq, sent) + tail)
        self.published += max(0, count)
        self.unechoed += max(0, count)
        tally.sent += max(0, count)

    def _ref(self) -> int:
        self.ref += 1
        return self.ref

    def _settle_if_joined(self) -> None:
        if not self.join_refs:
            self._settle()

    def _settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.on_change()


def _reason(payload: Any) -> str:
    response = payload.get("response") if isinstance(payload, dict) else None
    reason = response.get("reason") if isinstance(response, dict) else None
    return str(reason) if reason else "?"
