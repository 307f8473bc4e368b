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

Topics with history (`topic_server.history`) have frames of their own, so that the others
pay nothing for it. A message's position is its stream's epoch and its offset in it; an
entry is `offset:u64 at:f64 event flags:u8 payload:u32+bytes`.

    p  publish, kept    id:u64 exclude:u64 size:u32 ttl:f64 topic event flags:u8 payload
    d  deliver, kept    seq:u64 sent_at:f64 exclude:u64 offset:u64 epoch topic event
                        flags:u8 payload
    c  accepted         id:u64 seq:u64 offset:u64 epoch  (a kept publish's ack)
    e  refused          id:u64 reason  (a publish the server does not sequence)
    s  resubscribe      id:u64 topic epoch offset:u64  (send what came after, then ack)
    r  recover          id:u64 limit:u32 offset:u64 topic epoch
    y  recovered        id:u64 recovered:u8 last:u64 epoch count:u32 entry...
    h  copy             id:u64 size:u32 ttl:f64 topic epoch entry  (owner -> successor;
                        acked with the offset, or 0: send the whole stream)
    w  stream           id:u64 last:u64 size:u32 ttl:f64 topic epoch count:u32 entry...
                        (a whole stream, to a new successor; acked with its last offset)
    o  takeover         id:u64 topic
    t  taken            id:u64 last:u64 size:u32 ttl:f64 topic epoch holder count:u32
                        entry...  (a takeover's answer: the stream; or, with a holder, the
                        server to ask instead; epoch "" and no holder: there is none)

In a publish, `flags` is 1 for a binary payload (raw bytes rather than a JSON object), else
0; a deliver adds 2 for a presence diff (see `topic_server.presence`), so that a gateway
listening to two owners of a topic during a handover can keep only its publishing owner's
diffs. `sent_at` is the topic server's wall clock when it sequenced the message (a finite
number), for the gateways' delivery latency histogram. `exclude` names a socket of the
publishing gateway that must not receive the message (a publisher on a topic without
echo), 0 for none: the owner sends it only to that gateway. The deliver frame of a message
is otherwise encoded once and the same bytes are queued to every gateway that wants it.

Presence: `track` (gateway -> owner) adds the entry `ref` of one of the gateway's sockets
to a topic's presence, under `key` (at most 255 bytes, like every name) with its `meta` (a
JSON object, its `phx_ref` in it), in place of the entry `prev` ("" for none); `untrack`
removes one, naming its key so that an owner that never had it can still report it gone.
A presence `query` (gateway -> owner) asks for a topic's whole presence; its answer
(owner -> gateway), `state`, is the JSON object of a `presence_state`, sent once every frame
the gateway sent before the query has been applied.

`decode` accepts exactly what the builders make: a batch of one frame or more, each
complete, of a known kind, with UTF-8 names, flags of known bits only (0 or 1 but in a
deliver), finite times, and pg frames that are JSON orjson can read (at most 1024 levels
deep). Anything else is a `LinkFrameError`, and the link closes. What a pg frame says is
pg's to judge (`app.pg.wire`).
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
_KEPT_PUBLISH_HEAD = struct.Struct("!cQQId")
_KEPT_DELIVER_HEAD = struct.Struct("!cQdQQ")
_ACCEPTED_HEAD = struct.Struct("!cQQQ")
_RESUBSCRIBE_HEAD = struct.Struct("!cQQ")  # id, offset; then topic, epoch
_RECOVER_HEAD = struct.Struct("!cQIQ")
_RECOVERED_HEAD = struct.Struct("!cQBQ")
_COPY_HEAD = struct.Struct("!cQId")
_STREAM_HEAD = struct.Struct("!cQQId")
_ENTRY_HEAD = struct.Struct("!Qd")


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


class Entry(NamedTuple):
    """One message of a topic's history."""

    offset: int
    at: float  # when it was sequenced (the owner's wall clock)
    event: str
    binary: bool
    payload: bytes


class LinkPublishKept(NamedTuple):
    id: int
    exclude: int
    size: int  # the topic's history rule: messages kept, and for how long
    ttl: float
    topic: str
    event: str
    binary: bool
    payload: bytes


class LinkDeliverKept(NamedTuple):
    seq: int
    sent_at: float
    exclude: int
    offset: int
    epoch: str
    topic: str
    event: str
    binary: bool
    payload: bytes


class LinkAccepted(NamedTuple):
    id: int
    seq: int
    offset: int
    epoch: str


class LinkRefused(NamedTuple):
    id: int
    reason: str


class LinkResubscribe(NamedTuple):
    id: int
    topic: str
    epoch: str
    offset: int


class LinkRecover(NamedTuple):
    id: int
    limit: int
    offset: int
    topic: str
    epoch: str


class LinkRecovered(NamedTuple):
    id: int
    recovered: bool
    last: int
    epoch: str
    entries: tuple[Entry, ...]


class LinkCopy(NamedTuple):
    id: int
    size: int
    ttl: float
    topic: str
    epoch: str
    entry: Entry


class LinkStream(NamedTuple):
    id: int
    last: int
    size: int
    ttl: float
    topic: str
    epoch: str
    entries: tuple[Entry, ...]


class LinkTakeover(NamedTuple):
    id: int
    topic: str


class LinkTaken(NamedTuple):
    id: int
    last: int
    size: int
    ttl: float
    topic: str
    epoch: str
    holder: str  # the server to ask instead ("" for none)
    entries: tuple[Entry, ...]


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
    | LinkPublishKept
    | LinkDeliverKept
    | LinkAccepted
    | LinkRefused
    | LinkResubscribe
    | LinkRecover
    | LinkRecovered
    | LinkCopy
    | LinkStream
    | LinkTakeover
    | LinkTaken
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


def _entry(entry: Entry) -> bytes:
    return (
        _ENTRY_HEAD.pack(entry.offset, entry.at)
        + _short(entry.event)
        + _U8.pack(entry.binary)
        + _long(entry.payload)
    )


def _entries(entries: tuple[Entry, ...]) -> bytes:
    return _U32.pack(len(entries)) + b"".join(map(_entry, entries))


def publish_kept(
    id: int,
    exclude: int,
    size: int,
    ttl: float,
    topic: str,
    event: str,
    binary: bool,
    payload: bytes,
) -> bytes:
    head = _KEPT_PUBLISH_HEAD.pack(b"p", id, exclude, size, ttl)
    return head + _message(topic, event, binary, payload)


def deliver_kept(
    seq: int,
    sent_at: float,
    exclude: int,
    offset: int,
    epoch: str,
    topic: str,
    event: str,
    binary: bool,
    payload: bytes,
) -> bytes:
    head = _KEPT_DELIVER_HEAD.pack(b"d", seq, sent_at, exclude, offset)
    return head + _short(epoch) + _message(topic, event, binary, payload)


def accepted(id: int, seq: int, offset: int, epoch: str) -> bytes:
    return _ACCEPTED_HEAD.pack(b"c", id, seq, offset) + _short(epoch)


def refused(id: int, reason: str) -> bytes:
    return _ID.pack(b"e", id) + _short(reason)


def resubscribe(id: int, topic: str, epoch: str, offset: int) -> bytes:
    return _RESUBSCRIBE_HEAD.pack(b"s", id, offset) + _short(topic) + _short(epoch)


def recover(id: int, limit: int, offset: int, topic: str, epoch: str) -> bytes:
    return _RECOVER_HEAD.pack(b"r", id, limit, offset) + _short(topic) + _short(epoch)


def recovered(id: int, ok: bool, last: int, epoch: str, entries: tuple[Entry, ...]) -> bytes:
    return _RECOVERED_HEAD.pack(b"y", id, ok, last) + _short(epoch) + _entries(entries)


def copy(id: int, size: int, ttl: float, topic: str, epoch: str, entry: Entry) -> bytes:
    head = _COPY_HEAD.pack(b"h", id, size, ttl)
    return head + _short(topic) + _short(epoch) + _entry(entry)


def stream(
    id: int,
    last: int,
    size: int,
    ttl: float,
    topic: str,
    epoch: str,
    entries: tuple[Entry, ...],
) -> bytes:
    head = _STREAM_HEAD.pack(b"w", id, last, size, ttl)
    return head + _short(topic) + _short(epoch) + _entries(entries)


def taken(
    id: int,
    topic: str,
    epoch: str = "",
    last: int = 0,
    size: int = 0,
    ttl: float = 0.0,
    entries: tuple[Entry, ...] = (),
    holder: str = "",
) -> bytes:
    head = _STREAM_HEAD.pack(b"t", id, last, size, ttl)
    return head + _short(topic) + _short(epoch) + _short(holder) + _entries(entries)


def takeover(id: int, topic: str) -> bytes:
    return _ID.pack(b"o", id) + _short(topic)


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

    def flags(self, known: int = BINARY) -> int:
        """The flags byte that comes next, with only `known` bits."""
        flags: int = self.unpack(_U8)[0]
        if flags & ~known:
            raise LinkFrameError(f"unknown flags {flags:#04x}")
        return flags

    def long(self) -> bytes:
        (size,) = self.unpack(_U32)
        return self.take(size)

    def time(self, value: float) -> float:
        if not math.isfinite(value):
            raise LinkFrameError(f"{value} is not a time")
        return value

    def entry(self) -> Entry:
        offset, at = self.unpack(_ENTRY_HEAD)
        event = self.short()
        binary = self.flags() == BINARY
        return Entry(offset, self.time(at), event, binary, self.long())

    def entries(self) -> tuple[Entry, ...]:
        (count,) = self.unpack(_U32)
        if count > len(self.data) - self.pos:  # each entry takes more than a byte
            raise LinkFrameError(f"{count} entries cannot fit in what is left of the batch")
        return tuple(self.entry() for _ in range(count))

    def message(self) -> tuple[str, str, bool, bytes]:
        """Topic, event, whether the payload is binary, and the payload."""
        topic = self.short()
        event = self.short()
        binary = self.flags() == BINARY
        return topic, event, binary, self.long()


def _text(batch: bytes, pos: int) -> tuple[str, int]:
    """The short string at `pos` (its size byte, then UTF-8), and where it ends."""
    if pos >= len(batch):
        raise LinkFrameError("frame truncated")
    end = pos + 1 + batch[pos]
    if end > len(batch):
        raise LinkFrameError("frame truncated")
    return batch[pos + 1 : end].decode(), end


def _payload(batch: bytes, pos: int) -> tuple[bytes, int]:
    """The sized bytes at `pos` (u32 size, then the bytes), and where they end."""
    start = pos + 4
    if start > len(batch):
        raise LinkFrameError("frame truncated")
    end = start + _U32.unpack_from(batch, pos)[0]
    if end > len(batch):
        raise LinkFrameError("frame truncated")
    return batch[start:end], end


def decode(batch: bytes) -> Iterator[LinkFrame]:
    """The frames of one batch, in order; `LinkFrameError` if any is malformed (the
    frames before it have been yielded by then).

    The frames every message crosses (deliver, publish, ack) are read with `unpack_from`
    at an offset, without the reader's calls: a link carries one of each per message."""
    if not batch:
        raise LinkFrameError("empty batch")
    size = len(batch)
    reader = None
    pos = 0
    try:
        while pos < size:
            kind = batch[pos]
            if kind == 0x44:  # D
                if pos + _DELIVER_HEAD.size > size:
                    raise LinkFrameError("frame truncated")
                _, seq, sent_at, exclude = _DELIVER_HEAD.unpack_from(batch, pos)
                if not math.isfinite(sent_at):
                    raise LinkFrameError(f"sent_at {sent_at} is not a time")
                topic, pos = _text(batch, pos + _DELIVER_HEAD.size)
                event, pos = _text(batch, pos)
                if pos >= size:
                    raise LinkFrameError("frame truncated")
                flags = batch[pos]
                if flags & ~(BINARY | PRESENCE):
                    raise LinkFrameError(f"unknown flags {flags:#04x}")
                payload, pos = _payload(batch, pos + 1)
                binary, presence = bool(flags & BINARY), bool(flags & PRESENCE)
                yield LinkDeliver(seq, sent_at, exclude, topic, event, binary, payload, presence)
            elif kind == 0x50:  # P
                if pos + _PUBLISH_HEAD.size > size:
                    raise LinkFrameError("frame truncated")
                _, id, exclude = _PUBLISH_HEAD.unpack_from(batch, pos)
                topic, pos = _text(batch, pos + _PUBLISH_HEAD.size)
                event, pos = _text(batch, pos)
                if pos >= size:
                    raise LinkFrameError("frame truncated")
                flags = batch[pos]
                if flags & ~BINARY:
                    raise LinkFrameError(f"unknown flags {flags:#04x}")
                payload, pos = _payload(batch, pos + 1)
                yield LinkPublish(id, exclude, topic, event, flags == BINARY, payload)
            elif kind == 0x41:  # A
                if pos + _ACK.size > size:
                    raise LinkFrameError("frame truncated")
                _, id, seq = _ACK.unpack_from(batch, pos)
                pos += _ACK.size
                yield LinkAck(id, seq)
            else:
                reader = reader or _Reader(batch)
                reader.pos = pos
                yield _decode_other(batch[pos : pos + 1], reader)
                pos = reader.pos
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise LinkFrameError(f"undecodable frame: {exc}") from None


def _decode_other(kind: bytes, reader: _Reader) -> LinkFrame:
    """One frame of the kinds a message does not cross: subscriptions, presence, pg."""
    if kind == b"T":
        reader.pos += 1
        topic, key, ref, prev = (reader.short() for _ in range(4))
        return LinkTrack(topic, key, ref, prev or None, reader.long())
    if kind == b"X":
        reader.pos += 1
        return LinkUntrack(reader.short(), reader.short(), reader.short())
    if kind == b"Q":
        _, id = reader.unpack(_ID)
        return LinkPresenceQuery(id, reader.short())
    if kind == b"R":
        _, id = reader.unpack(_ID)
        return LinkPresenceState(id, reader.long())
    if kind == b"S":
        _, id = reader.unpack(_ID)
        return LinkSubscribe(id, reader.short())
    if kind == b"U":
        reader.pos += 1
        return LinkUnsubscribe(reader.short())
    if kind == b"G":
        reader.pos += 1
        return LinkPg(orjson.loads(reader.long()))
    return _decode_kept(kind, reader)


def _decode_kept(kind: bytes, reader: _Reader) -> LinkFrame:
    """One of the frames of topics with history."""
    if kind == b"d":
        _, seq, sent_at, exclude, offset = reader.unpack(_KEPT_DELIVER_HEAD)
        epoch = reader.short()
        topic, event, binary, payload = reader.message()
        sent_at = reader.time(sent_at)
        return LinkDeliverKept(seq, sent_at, exclude, offset, epoch, topic, event, binary, payload)
    if kind == b"p":
        _, id, exclude, size, ttl = reader.unpack(_KEPT_PUBLISH_HEAD)
        return LinkPublishKept(id, exclude, size, reader.time(ttl), *reader.message())
    if kind == b"c":
        _, id, seq, offset = reader.unpack(_ACCEPTED_HEAD)
        return LinkAccepted(id, seq, offset, reader.short())
    if kind == b"e":
        _, id = reader.unpack(_ID)
        return LinkRefused(id, reader.short())
    if kind == b"s":
        _, id, offset = reader.unpack(_RESUBSCRIBE_HEAD)
        return LinkResubscribe(id, reader.short(), reader.short(), offset)
    if kind == b"r":
        _, id, limit, offset = reader.unpack(_RECOVER_HEAD)
        return LinkRecover(id, limit, offset, reader.short(), reader.short())
    if kind == b"y":
        _, id, ok, last = reader.unpack(_RECOVERED_HEAD)
        if ok > 1:
            raise LinkFrameError(f"recovered must be 0 or 1, not {ok}")
        return LinkRecovered(id, ok == 1, last, reader.short(), reader.entries())
    if kind == b"h":
        _, id, size, ttl = reader.unpack(_COPY_HEAD)
        topic, epoch = reader.short(), reader.short()
        return LinkCopy(id, size, reader.time(ttl), topic, epoch, reader.entry())
    if kind in (b"w", b"t"):
        _, id, last, size, ttl = reader.unpack(_STREAM_HEAD)
        topic, epoch = reader.short(), reader.short()
        ttl = reader.time(ttl)
        if kind == b"t":
            holder = reader.short()
            return LinkTaken(id, last, size, ttl, topic, epoch, holder, reader.entries())
        return LinkStream(id, last, size, ttl, topic, epoch, reader.entries())
    if kind == b"o":
        _, id = reader.unpack(_ID)
        return LinkTakeover(id, reader.short())
    raise LinkFrameError(f"unknown frame kind {kind!r}")
