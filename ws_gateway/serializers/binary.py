"""Phoenix's V2 binary frames: a client's push in, a broadcast out.

    push (client):      kind 0, join_ref size, ref size, topic size, event size (one byte
                        each), then join_ref, ref, topic, event, and the payload bytes
    broadcast (server): kind 0 as a push to the client, without ref: kind, join_ref size,
                        topic size, event size, join_ref, topic, event, payload

Sizes count bytes, not characters; an empty join_ref or ref stands for null.
"""

from __future__ import annotations

from ws_gateway.serializers.protocol import (
    INVALID_PAYLOAD,
    UNSUPPORTED_DATA,
    ClientFrameError,
    Message,
)

PUSH = 0


def decode_push(data: bytes) -> Message:
    """Decode a binary push (kind 0), the only binary frame a client sends."""
    if len(data) < 5:
        raise ClientFrameError(UNSUPPORTED_DATA, "binary frame too short")
    kind, jr_len, ref_len, topic_len, event_len = data[:5]
    if kind != PUSH:
        raise ClientFrameError(UNSUPPORTED_DATA, f"binary frame kind {kind} is not a push")
    end = 5 + jr_len + ref_len + topic_len + event_len
    if len(data) < end:
        raise ClientFrameError(UNSUPPORTED_DATA, "binary frame shorter than its header says")
    fields: list[str] = []
    pos = 5
    for size in (jr_len, ref_len, topic_len, event_len):
        try:
            fields.append(bytes(data[pos : pos + size]).decode())
        except UnicodeDecodeError:
            raise ClientFrameError(INVALID_PAYLOAD, "binary frame header is not UTF-8") from None
        pos += size
    join_ref, ref, topic, event = fields
    return Message(join_ref or None, ref or None, topic, event, bytes(data[end:]))


def broadcast_head(topic: str, event: str) -> bytes:
    """What every join_ref's broadcast frame of one message shares: sizes and names."""
    topic_bytes, event_bytes = topic.encode(), event.encode()
    return bytes((len(topic_bytes), len(event_bytes))) + topic_bytes + event_bytes


def encode_broadcast(head: bytes, join_ref: str | None, payload: bytes) -> bytes:
    jr = (join_ref or "").encode()
    return bytes((PUSH, len(jr), head[0], head[1])) + jr + head[2:] + payload
