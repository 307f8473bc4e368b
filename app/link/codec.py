"""The frames of a node link, as bytes: pure encoding and decoding, no I/O.

After the handshake (`app.link.handshake`) a link carries binary WebSocket messages, each
a batch of frames written back to back, so that everything queued during one turn of the
event loop leaves in one write. Every frame starts with one ASCII kind byte; numbers are
big-endian; a topic or an event is at most 255 bytes of UTF-8 (one size byte), as the
gateways enforce for everything clients send.

    S  subscribe     id:u64  topic
    U  unsubscribe   topic
    P  publish       id:u64  exclude:u64  topic  event  flags:u8  payload:u32+bytes
    A  ack           id:u64  seq:u64     (of a publish, or of a subscribe with seq 0)
    D  deliver       seq:u64  sent_at:f64  exclude:u64  topic  event  flags:u8
                     payload:u32+bytes
    T  track         topic  key  ref  prev  meta:u32+bytes
    X  untrack       topic  key  ref
    Q  presence query  id:u64  topic
    R  presence state  id:u64  state:u32+bytes
    G  pg            frame:u32+bytes (a pg protocol frame as JSON)

In a publish, `flags` is 1 for a binary payload (raw bytes rather than a JSON object), else
0; a deliver adds 2 for a presence diff (see `topic_server.presence`), so that a gateway
listening to two owners of a topic during a handover can keep only its publishing owner's
diffs. `sent_at`
is the topic server's wall clock when it sequenced the message (a finite number), for the
gateways' delivery latency histogram. `exclude` names a socket of the publishing gateway
that must not receive the message (a publisher on a topic without echo), 0 for none: the
owner sends it only to that gateway. The deliver frame of a message is otherwise encoded once and
the same bytes are queued to every gateway that wants it.

Presence: `track` (gateway -> owner) adds the entry `ref` of one of the gateway's sockets
to a topic's presence, under `key` (at most 255 bytes, like every name) with its `meta` (a
JSON object, its `phx_ref` in it), in place of the entry `prev` ("" for none); `untrack`
removes one, naming its key so that an owner that never had it can still report it gone.
A presence `query` (gateway -> owner) asks for a topic's whole presence; its answer
(owner -> gateway), `state`, is the JSON object of a `presence_state`, sent once every frame
the gateway sent before the query has been applied.

`decode` accepts exactly what the builders make: a batch of one frame or more, each
complete, of a known kind, with UTF-8 names, flags of known bits only (0 or 1 in a
publish), a finite `sent_at`, and pg frames that are JSON orjson can read (at most 1024
levels deep). Anything else is a `LinkFrameError`, and the link closes. What a pg frame
says is pg's to judge (`app.pg.wire`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import Any, NamedTuple

import orjson

BINARY = 1
PRESENCE = 2  # a deliver's flag: the payload is a presence diff


class LinkClose(IntEnum):
    """WebSocket close codes of a link that ends abnormally (the private range)."""

    AUTH_FAILED = 4001  # the peer does not know the cluster secret
    PROTOCOL_ERROR = 4002  # a handshake or a batch that does not follow this protocol
    QUEUE_FULL = 4003  # the peer did not read fast enough


_U8 = struct.Struct("!B")
_U32 = struct.Struct("!I")
_ACK = struct.Struct("!cQQ")
_ID = struct.Struct("!cQ")
_PUBLISH_HEAD = struct.Struct("!cQQ")
_DELIVER_HEAD = struct.Struct("!cQdQ")


class LinkFrameError(Exception):
    """A batch that does not decode: the peer is broken, the link must close."""


class LinkSubscribe(NamedTuple):
    id: int
    topic: str


class LinkUnsubscribe(NamedTuple):
    topic: str


class LinkPublish(NamedTuple):
    id: int
    exclude: int
    topic: str
    event: str
    binary: bool
    payload: bytes


class LinkAck(NamedTuple):
    id: int
    seq: int


class LinkDeliver(NamedTuple):
    seq: int
    sent_at: float
    exclude: int
    topic: str
    event: str
    binary: bool
    payload: bytes
    presence: bool = False


class LinkTrack(NamedTuple):
    topic: str
    key: str
    ref: str
    prev: str | None
    meta: bytes


class LinkUntrack(NamedTuple):
    topic: str
    key: str
    ref: str


class LinkPresenceQuery(NamedTuple):
    id: int
    topic: str


class LinkPresenceState(NamedTuple):
    id: int
    state: bytes


class LinkPg(NamedTuple):
    frame: Any


LinkFrame = (
    LinkSubscribe
    | LinkUnsubscribe
    | LinkPublish
    | LinkAck
    | LinkDeliver
    | LinkTrack
    | LinkUntrack
    | LinkPresenceQuery
    | LinkPresenceState
    | LinkPg
)


def _short(text: str) -> bytes:
    data = text.encode()
    return _U8.pack(len(data)) + data


def subscribe(id: int, topic: str) -> bytes:
    return _ID.pack(b"S", id) + _short(topic)


def unsubscribe(topic: str) -> bytes:
    return b"U" + _short(topic)


def _long(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _message(topic: str, event: str, flags: int, payload: bytes) -> bytes:
    return _short(topic) + _short(event) + _U8.pack(flags) + _long(payload)


def publish(id: int, exclude: int, topic: str, event: str, binary: bool, payload: bytes) -> bytes:
    return _PUBLISH_HEAD.pack(b"P", id, exclude) + _message(topic, event, binary, payload)


def ack(id: int, seq: int) -> bytes:
    return _ACK.pack(b"A", id, seq)


def deliver(
    seq: int,
    sent_at: float,
    exclude: int,
    topic: str,
    event: str,
    binary: bool,
    payload: bytes,
    presence: bool = False,
) -> bytes:
    head = _DELIVER_HEAD.pack(b"D", seq, sent_at, exclude)
    return head + _message(topic, event, binary | (PRESENCE if presence else 0), payload)


def track(topic: str, key: str, ref: str, prev: str | None, meta: bytes) -> bytes:
    return b"T" + _short(topic) + _short(key) + _short(ref) + _short(prev or "") + _long(meta)


def untrack(topic: str, key: str, ref: str) -> bytes:
    return b"X" + _short(topic) + _short(key) + _short(ref)


def presence_query(id: int, topic: str) -> bytes:
    return _ID.pack(b"Q", id) + _short(topic)


def presence_state(id: int, state: bytes) -> bytes:
    return _ID.pack(b"R", id) + _long(state)


def pg(frame: Any) -> bytes:
    return b"G" + _long(orjson.dumps(frame))


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise LinkFrameError("frame truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def short(self) -> str:
        return self.take(self.data[self.pos] + 1 if self.pos < len(self.data) else 1)[1:].decode()

    def long(self) -> bytes:
        (size,) = self.unpack(_U32)
        return self.take(size)

    def message(self, known: int) -> tuple[str, str, int, bytes]:
        """Topic, event, flags (only `known` bits) and payload."""
        topic = self.short()
        event = self.short()
        (flags,) = self.unpack(_U8)
        if flags & ~known:
            raise LinkFrameError(f"unknown flags {flags:#04x}")
        return topic, event, flags, self.long()


def decode(batch: bytes) -> Iterator[LinkFrame]:
    """The frames of one batch, in order; `LinkFrameError` if any is malformed (the
    frames before it have been yielded by then)."""
    if not batch:
        raise LinkFrameError("empty batch")
    reader = _Reader(batch)
    try:
        while reader.pos < len(batch):
            kind = batch[reader.pos : reader.pos + 1]
            if kind == b"D":
                _, seq, sent_at, exclude = reader.unpack(_DELIVER_HEAD)
                if not math.isfinite(sent_at):
                    raise LinkFrameError(f"sent_at {sent_at} is not a time")
                topic, event, flags, payload = reader.message(BINARY | PRESENCE)
                binary, presence = bool(flags & BINARY), bool(flags & PRESENCE)
                yield LinkDeliver(seq, sent_at, exclude, topic, event, binary, payload, presence)
            elif kind == b"P":
                _, id, exclude = reader.unpack(_PUBLISH_HEAD)
                topic, event, flags, payload = reader.message(BINARY)
                yield LinkPublish(id, exclude, topic, event, flags == BINARY, payload)
            elif kind == b"T":
                reader.pos += 1
                topic, key, ref, prev = (reader.short() for _ in range(4))
                yield LinkTrack(topic, key, ref, prev or None, reader.long())
            elif kind == b"X":
                reader.pos += 1
                yield LinkUntrack(reader.short(), reader.short(), reader.short())
            elif kind == b"Q":
                _, id = reader.unpack(_ID)
                yield LinkPresenceQuery(id, reader.short())
            elif kind == b"R":
                _, id = reader.unpack(_ID)
                yield LinkPresenceState(id, reader.long())
            elif kind == b"A":
                _, id, seq = reader.unpack(_ACK)
                yield LinkAck(id, seq)
            elif kind == b"S":
                _, id = reader.unpack(_ID)
                yield LinkSubscribe(id, reader.short())
            elif kind == b"U":
                reader.pos += 1
                yield LinkUnsubscribe(reader.short())
            elif kind == b"G":
                reader.pos += 1
                yield LinkPg(orjson.loads(reader.long()))
            else:
                raise LinkFrameError(f"unknown frame kind {kind!r}")
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise LinkFrameError(f"undecodable frame: {exc}") from None
