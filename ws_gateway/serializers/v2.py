"""Phoenix's V2 serializer (`vsn=2.0.0`, the official client's): JSON arrays, and binary
frames for binary payloads (`binary`).

    in:   [join_ref, ref, topic, event, payload] as text, or a binary push
    out:  [join_ref, ref, topic, event, payload]; a binary broadcast as a binary frame

A broadcast goes to each subscriber with the join_ref of its channel instance, so that a
client drops a message meant for an older instance: one lane per join_ref. What follows
the join_ref is the same for every lane and encoded once per message (`Broadcast.shared`),
once more for the sockets that asked for positions (the message's "epoch:offset" in the
ref slot, which phoenix.js hands to `channel.on` callbacks as their second argument).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.served.detached import frame
from ws_gateway import payloads
from ws_gateway.serializers import binary
from ws_gateway.serializers.protocol import (
    INVALID_PAYLOAD,
    UNSUPPORTED_DATA,
    Broadcast,
    ClientFrameError,
    Lane,
    Message,
    ref_field,
    text_field,
)

_WITH_POSITION = object()  # the key of what lanes with positions share


class V2Serializer:
    __slots__ = ()

    vsn = "2.0.0"

    def decode(self, data: bytes, text: bool) -> Message:
        if not text:
            return binary.decode_push(data)
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ClientFrameError(INVALID_PAYLOAD, "frame is not valid JSON") from None
        # Phoenix reads the first five elements and ignores the rest; so do we.
        if not isinstance(value, list) or len(value) < 5:
            raise ClientFrameError(
                UNSUPPORTED_DATA, "expected a [join_ref, ref, topic, event, payload] array"
            )
        join_ref, ref, topic, event, payload = value[:5]
        return Message(
            ref_field(join_ref, "join_ref"),
            ref_field(ref, "ref"),
            text_field(topic, "topic"),
            text_field(event, "event"),
            payload,
            payloads.v2_payload(data, value[:4]) if len(value) == 5 else None,
        )

    def encode(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> bytes:
        return frame(orjson.dumps([join_ref, ref, topic, event, payload]))

    def lane(self, join_ref: str | None, positions: bool = False) -> Lane:
        return (self, join_ref, positions)

    def fastlane(
        self, broadcast: Broadcast, join_ref: str | None, positions: bool = False
    ) -> bytes | None:
        if broadcast.binary:  # a binary push has no ref slot: no position either
            shared = broadcast.shared.get(self)
            if shared is None:
                shared = broadcast.shared[self] = binary.broadcast_head(
                    broadcast.topic, broadcast.event
                )
            return frame(binary.encode_broadcast(shared, join_ref, broadcast.payload), True)
        key = _WITH_POSITION if positions else self
        shared = broadcast.shared.get(key)
        if shared is None:
            topic, event = orjson.dumps(broadcast.topic), orjson.dumps(broadcast.event)
            ref = orjson.dumps(broadcast.position) if positions else b"null"
            shared = broadcast.shared[key] = (
                b"," + ref + b"," + topic + b"," + event + b"," + broadcast.payload + b"]"
            )
        return frame(b"[" + orjson.dumps(join_ref) + shared)


V2 = V2Serializer()
