"""The Phoenix Channels wire codecs: V1 JSON, V2 JSON and V2 binary frames.

Pure functions and small value objects, no I/O. Inbound frames become `Message`s or raise
`FrameError` (the client's fault: the socket is closed with that error's code and reason).
Outbound frames are built as bytes, ready to be framed as WebSocket messages.

A broadcast is encoded once per message and serializer: `BroadcastFrames` keeps the shared
tail of a V2 frame and adds only the subscriber's join_ref in front, caching each distinct
join_ref, so fanning a message out to thousands of sockets encodes its payload once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

MAX_FIELD_BYTES = 255  # V2 binary frames size each string field with one byte


class Vsn(Enum):
    """The serializer a socket negotiated with its `vsn` query parameter."""

    V1 = "1.0.0"
    V2 = "2.0.0"

    @classmethod
    def negotiate(cls, vsn: str | None) -> Vsn | None:
        """Missing or 1.0.x means V1, 2.0.x means V2; anything else is refused (None)."""
        if vsn is None:
            return cls.V1
        major_minor, dot, patch = vsn.rpartition(".")
        if not dot or not patch.isdigit():
            return None
        if major_minor == "1.0":
            return cls.V1
        if major_minor == "2.0":
            return cls.V2
        return None


class FrameError(Exception):
    """An inbound frame that cannot be understood; the socket closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# RFC 6455 close codes used for bad frames.
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007


@dataclass(slots=True, frozen=True)
class Message:
    """One decoded client frame. `payload` is a JSON value, or bytes for a binary push."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any


def _ref(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise FrameError(UNSUPPORTED_DATA, f"{name} must be a string or null")


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise FrameError(UNSUPPORTED_DATA, f"{name} must be a string")


def decode_text(data: str | bytes, vsn: Vsn) -> Message:
    """Decode a text frame: a 5-element array (V2) or a topic/event/payload/ref object (V1)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError(INVALID_PAYLOAD, "frame is not valid JSON") from None
    if vsn is Vsn.V2:
        # Phoenix reads the first five elements and ignores the rest; so do we.
        if not isinstance(value, list) or len(value) < 5:
            raise FrameError(
                UNSUPPORTED_DATA, "expected a [join_ref, ref, topic, event, payload] array"
            )
        join_ref, ref, topic, event, payload = value[:5]
    else:
        if not isinstance(value, dict) or not {"topic", "event", "payload", "ref"} <= value.keys():
            raise FrameError(
                UNSUPPORTED_DATA, "expected an object with topic, event, payload and ref"
            )
        join_ref, ref = value.get("join_ref"), value["ref"]
        topic, event, payload = value["topic"], value["event"], value["payload"]
    return Message(
        _ref(join_ref, "join_ref"),
        _ref(ref, "ref"),
        _text(topic, "topic"),
        _text(event, "event"),
        payload,
    )


def decode_binary(data: bytes) -> Message:
    """Decode a V2 binary push (kind 0), the only binary frame a client sends."""
    if len(data) < 5:
        raise FrameError(UNSUPPORTED_DATA, "binary frame too short")
    kind, jr_len, ref_len, topic_len, event_len = data[:5]
    if kind != 0:
        raise FrameError(UNSUPPORTED_DATA, f"binary frame kind {kind} is not a push")
    end = 5 + jr_len + ref_len + topic_len + event_len
    if len(data) < end:
        raise FrameError(UNSUPPORTED_DATA, "binary frame shorter than its header says")
    fields: list[str] = []
    pos = 5
    for size in (jr_len, ref_len, topic_len, event_len):
        try:
            fields.append(bytes(data[pos : pos + size]).decode())
        except UnicodeDecodeError:
            raise FrameError(INVALID_PAYLOAD, "binary frame header is not UTF-8") from None
        pos += size
    join_ref, ref, topic, event = fields
    return Message(join_ref or None, ref or None, topic, event, bytes(data[end:]))


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def encode_reply(
    vsn: Vsn,
    join_ref: str | None,
    ref: str | None,
    topic: str,
    status: str,
    response: Any,
) -> bytes:
    """A `phx_reply` with `{"status": status, "response": response}`."""
    return encode_push(
        vsn, join_ref, ref, topic, "phx_reply", {"status": status, "response": response}
    )


def encode_push(
    vsn: Vsn, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
) -> bytes:
    """Any server frame with a JSON payload (replies, pushes, phx_close)."""
    if vsn is Vsn.V2:
        return _json([join_ref, ref, topic, event, payload])
    return _json({"topic": topic, "event": event, "payload": payload, "ref": ref})


class BroadcastFrames:
    """The frames of one broadcast, built from parts encoded once per message.

    V2 subscribers get `[join_ref, null, topic, event, payload]` with their own join_ref in
    front (so a client drops a broadcast meant for an older instance of its channel); the
    rest of the frame is shared. V1 frames carry no join_ref: one encoding for all. A binary
    payload becomes a V2 binary push (kind 0), which V1 cannot express (`v1()` is None).
    Callers cache the result per join_ref; only the first subscriber with a given join_ref
    pays for building its frame.
    """

    __slots__ = ("_head", "_tail", "binary", "event", "payload", "topic")

    def __init__(self, topic: str, event: str, payload: bytes, binary: bool) -> None:
        self.topic = topic
        self.event = event
        self.payload = payload
        self.binary = binary
        self._tail: bytes | None = None
        self._head: bytes | None = None

    def v2(self, join_ref: str | None) -> bytes:
        if self.binary:
            if self._head is None:
                topic, event = self.topic.encode(), self.event.encode()
                self._head = bytes((len(topic), len(event))) + topic + event
            jr = (join_ref or "").encode()
            head = self._head
            return bytes((0, len(jr), head[0], head[1])) + jr + head[2:] + self.payload
        if self._tail is None:
            topic, event = _json(self.topic), _json(self.event)
            self._tail = b",null," + topic + b"," + event + b"," + self.payload + b"]"
        return b"[" + _json(join_ref) + self._tail

    def v1(self) -> bytes | None:
        if self.binary:
            return None
        return (
            b'{"topic":'
            + _json(self.topic)
            + b',"event":'
            + _json(self.event)
            + b',"payload":'
            + self.payload
            + b',"ref":null}'
        )
