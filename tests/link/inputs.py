"""What a peer can send on a link, as Hypothesis strategies, with what each must get.

Handshake messages: `well_formed_message` says which bytes are a message of the current
version with every field of its type, i.e. which get as far as the MAC check; anything
else must fail the handshake with PROTOCOL_ERROR.

Batches: `link_frames` are frames of every kind with any field values the builders
take; `encode` builds one. `broken_batches` are well-formed frames followed by one that
is not exactly well-formed (truncated, a size beyond the batch, an unknown kind, flags
of unknown bits, bad UTF-8, a non-finite time, a pg frame that is not JSON orjson reads),
which `decode` must refuse after yielding the frames before it. `any_batches`
mixes well-formed frames with arbitrary bytes.
"""

from __future__ import annotations

import math
import struct

import orjson
from hypothesis import strategies as st

from app.link import codec
from app.link.codec import (
    Entry,
    LinkAccepted,
    LinkAck,
    LinkCopy,
    LinkDeliver,
    LinkDeliverKept,
    LinkFrame,
    LinkPg,
    LinkPresenceQuery,
    LinkPresenceState,
    LinkPublish,
    LinkPublishKept,
    LinkRecover,
    LinkRecovered,
    LinkRefused,
    LinkResubscribe,
    LinkStream,
    LinkSubscribe,
    LinkTaken,
    LinkTakeover,
    LinkTrack,
    LinkUnsubscribe,
    LinkUntrack,
)
from app.link.handshake import VERSION, Identity
from tests.pg.frames import ORJSON_DEPTH, json_values, nested_json, pg_frames, well_formed

# Handshake messages.

FIELDS = {
    "hello": {"nonce"},
    "auth": {"identity", "nonce", "mac"},
    "welcome": {"identity", "linked_for", "mac"},
}


def hex_digits(value: object, count: int) -> bool:
    return type(value) is str and len(value) == count and set(value) <= set("0123456789abcdef")


def an_identity(value: object) -> bool:
    try:
        Identity.parse(value)
    except ValueError:
        return False
    return True


FIELD_RULES = {
    "identity": an_identity,
    "nonce": lambda value: hex_digits(value, 32),
    "mac": lambda value: hex_digits(value, 64),
    "linked_for": lambda value: type(value) in (int, float) and value >= 0,
}


def well_formed_message(kind: str, data: bytes) -> bool:
    """Whether `data` is a handshake message `kind` of this version, each field of its
    type: what gets as far as the MAC (the hello has none)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return (
        type(message) is dict
        and message.keys() == {kind} | FIELDS[kind]
        and type(message[kind]) is int
        and message[kind] == VERSION
        and all(FIELD_RULES[field](message[field]) for field in FIELDS[kind])
    )


# Batches.

names = st.one_of(st.sampled_from(["t", "u"]), st.text(max_size=20))  # 80 bytes at most
u64 = st.integers(0, 2**64 - 1)
times = st.floats(allow_nan=False, allow_infinity=False)
payloads = st.binary(max_size=40)
refs = st.text(min_size=1, max_size=20)  # a replaced ref of "" is no ref: None
u32 = st.integers(0, 2**32 - 1)
entries = st.builds(Entry, u64, times, names, st.booleans(), payloads)
entry_lists = st.lists(entries, max_size=3).map(tuple)

link_frames: st.SearchStrategy[LinkFrame] = st.one_of(
    st.builds(LinkSubscribe, u64, names),
    st.builds(LinkUnsubscribe, names),
    st.builds(LinkPublish, u64, u64, names, names, st.booleans(), payloads),
    st.builds(LinkAck, u64, u64),
    st.builds(LinkDeliver, u64, times, u64, names, names, st.booleans(), payloads, st.booleans()),
    st.builds(LinkTrack, names, names, refs, st.none() | refs, payloads),
    st.builds(LinkUntrack, names, names, refs),
    st.builds(LinkPresenceQuery, u64, names),
    st.builds(LinkPresenceState, u64, payloads),
    st.builds(LinkPg, json_values | well_formed("dps")),
    st.builds(LinkPublishKept, u64, u64, u32, times, names, names, st.booleans(), payloads),
    st.builds(LinkDeliverKept, u64, times, u64, u64, names, names, names, st.booleans(), payloads),
    st.builds(LinkAccepted, u64, u64, u64, names),
    st.builds(LinkRefused, u64, names),
    st.builds(LinkResubscribe, u64, names, names, u64),
    st.builds(LinkRecover, u64, u32, u64, names, names),
    st.builds(LinkRecovered, u64, st.booleans(), u64, names, entry_lists),
    st.builds(LinkCopy, u64, u32, times, names, names, entries),
    st.builds(LinkStream, u64, u64, u32, times, names, names, entry_lists),
    st.builds(LinkTakeover, u64, names),
    st.builds(LinkTaken, u64, u64, u32, times, names, names, names, entry_lists),
)


def encode(frame: LinkFrame) -> bytes:
    match frame:
        case LinkSubscribe(id, topic):
            return codec.subscribe(id, topic)
        case LinkUnsubscribe(topic):
            return codec.unsubscribe(topic)
        case LinkPublish(id, exclude, topic, event, binary, payload):
            return codec.publish(id, exclude, topic, event, binary, payload)
        case LinkAck(id, seq):
            return codec.ack(id, seq)
        case LinkDeliver(seq, sent_at, exclude, topic, event, binary, payload, presence):
            return codec.deliver(seq, sent_at, exclude, topic, event, binary, payload, presence)
        case LinkTrack(topic, key, ref, prev, meta):
            return codec.track(topic, key, ref, prev, meta)
        case LinkUntrack(topic, key, ref):
            return codec.untrack(topic, key, ref)
        case LinkPresenceQuery(id, topic):
            return codec.presence_query(id, topic)
        case LinkPresenceState(id, state):
            return codec.presence_state(id, state)
        case LinkPg(value):
            return codec.pg(value)
        case LinkPublishKept(id, exclude, size, ttl, topic, event, binary, payload):
            return codec.publish_kept(id, exclude, size, ttl, topic, event, binary, payload)
        case LinkDeliverKept(seq, sent_at, exclude, offset, epoch, topic, event, binary, payload):
            return codec.deliver_kept(
                seq, sent_at, exclude, offset, epoch, topic, event, binary, payload
            )
        case LinkAccepted(id, seq, offset, epoch):
            return codec.accepted(id, seq, offset, epoch)
        case LinkRefused(id, reason):
            return codec.refused(id, reason)
        case LinkResubscribe(id, topic, epoch, offset):
            return codec.resubscribe(id, topic, epoch, offset)
        case LinkRecover(id, limit, offset, topic, epoch):
            return codec.recover(id, limit, offset, topic, epoch)
        case LinkRecovered(id, ok, last, epoch, found):
            return codec.recovered(id, ok, last, epoch, found)
        case LinkCopy(id, size, ttl, topic, epoch, entry):
            return codec.copy(id, size, ttl, topic, epoch, entry)
        case LinkStream(id, last, size, ttl, topic, epoch, found):
            return codec.stream(id, last, size, ttl, topic, epoch, found)
        case LinkTakeover(id, topic):
            return codec.takeover(id, topic)
        case LinkTaken(id, last, size, ttl, topic, epoch, holder, found):
            return codec.taken(id, topic, epoch, last, size, ttl, found, holder)
    raise AssertionError(frame)


batches = st.lists(link_frames, min_size=1, max_size=6)

KINDS = b"SUPADTXQRGpdcesryhwot"
BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"ok\xe2\x82"]
NOT_JSON = [
    b"",
    b"{x",
    b"[1,",
    b"NaN",
    b"1e999",  # infinite
    b'"\\ud800"',  # a lone surrogate
    b"\xff",
    nested_json(ORJSON_DEPTH + 1),
]
_SIZE = struct.Struct("!I")


def _short(data: bytes) -> bytes:
    return bytes([len(data)]) + data


@st.composite
def broken_frames(draw: st.DrawFn) -> bytes:
    """One frame that is not exactly well-formed, whatever follows it."""
    how = draw(st.sampled_from(["kind", "flags", "utf-8", "time", "json"]))
    if how == "kind":
        kind = draw(st.integers(0, 255).filter(lambda byte: byte not in KINDS))
        return bytes([kind]) + draw(st.binary(max_size=20))
    if how == "flags":
        payload = draw(payloads)
        if draw(st.booleans()):
            frame = codec.publish(draw(u64), draw(u64), draw(names), draw(names), False, payload)
            flags = draw(st.integers(2, 255))
        else:
            frame = codec.deliver(draw(u64), 0.0, draw(u64), draw(names), "e", False, payload)
            flags = draw(st.integers(4, 255))
        flags_at = len(frame) - len(payload) - 4 - 1  # before the payload and its size
        return frame[:flags_at] + bytes([flags]) + frame[flags_at + 1 :]
    if how == "utf-8":
        bad = draw(st.sampled_from(BAD_UTF8))
        return b"S" + struct.pack("!Q", draw(u64)) + _short(bad)
    if how == "time":
        sent_at = draw(st.sampled_from([math.inf, -math.inf, math.nan]))
        return codec.deliver(1, sent_at, 0, "t", "e", False, b"{}")
    text = draw(st.sampled_from(NOT_JSON))
    return b"G" + _SIZE.pack(len(text)) + text


@st.composite
def cut_frames(draw: st.DrawFn) -> bytes:
    """A frame cut short, or declaring a size beyond its end: nothing may follow it."""
    frame = draw(link_frames)
    data = encode(frame)
    if isinstance(frame, LinkAck) or draw(st.booleans()):
        return data[: draw(st.integers(1, len(data) - 1))]
    match frame:
        case LinkSubscribe() | LinkUnsubscribe() | LinkPresenceQuery():
            size_at, size, limit = len(data) - len(frame.topic.encode()) - 1, 1, 255
        case LinkUntrack():
            size_at, size, limit = len(data) - len(frame.ref.encode()) - 1, 1, 255
        case LinkPublish() | LinkDeliver():
            size_at, size, limit = len(data) - len(frame.payload) - 4, 4, 2**32 - 1
        case LinkTrack():
            size_at, size, limit = len(data) - len(frame.meta) - 4, 4, 2**32 - 1
        case LinkPresenceState():
            size_at, size, limit = len(data) - len(frame.state) - 4, 4, 2**32 - 1
        case LinkPg():
            size_at, size, limit = 1, 4, 2**32 - 1
        case _:  # a frame of topics with history: cut short
            return data[: draw(st.integers(1, len(data) - 1))]
    declared = int.from_bytes(data[size_at : size_at + size], "big")
    if declared == limit:
        return data[:-1]
    larger = draw(st.integers(declared + 1, limit)).to_bytes(size, "big")
    return data[:size_at] + larger + data[size_at + size :]


@st.composite
def broken_batches(draw: st.DrawFn) -> tuple[list[LinkFrame], bytes]:
    """Good frames, then a broken one: the good frames and the whole batch."""
    good = draw(st.lists(link_frames, max_size=3))
    head = b"".join(map(encode, good))
    if draw(st.booleans()):
        return good, head + draw(cut_frames())
    return good, head + draw(broken_frames()) + draw(st.binary(max_size=10))


# pg frames of any shape, some nested deeper than Python recurses: well-formed link frames
# (orjson reads them), for pg to judge.
wild_pg_frames = st.builds(LinkPg, pg_frames("dps")).map(encode)

any_batches = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.one_of(link_frames.map(encode), wild_pg_frames, st.binary(max_size=6)),
        min_size=1,
        max_size=5,
    ).map(b"".join),
    broken_batches().map(lambda broken: broken[1]),
)


def closes_link(batch: bytes, takes: tuple[type, ...]) -> bool:
    """Whether a link end that takes frames of the types `takes` must close on `batch`:
    it does not decode, or holds a frame sent the wrong way."""
    try:
        frames = list(codec.decode(batch))
    except codec.LinkFrameError:
        return True
    return not all(isinstance(frame, takes) for frame in frames)
