"""Phoenix's V1 JSON serializer (`vsn=1.0.0`, or no `vsn`): frames are JSON objects.

    in:   {"topic": T, "event": E, "payload": P, "ref": R, "join_ref": J (optional)}
    out:  {"topic": T, "event": E, "payload": P, "ref": R}

A V1 broadcast carries no join_ref, so every V1 subscriber of a topic gets the same bytes
(one lane, two with the sockets that asked for positions in the ref), and V1 has no binary
frames: a binary broadcast is not for V1 sockets.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.served.detached import frame
from ws_gateway import payloads
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

_FIELDS = {"topic", "event", "payload", "ref"}
_CONTROL = {"phx_join", "phx_leave", "heartbeat"}


class V1Serializer:
    __slots__ = ()

    vsn = "1.0.0"

    def decode(self, data: bytes, text: bool) -> Message:
        if not text:
            raise ClientFrameError(UNSUPPORTED_DATA, "binary frames need vsn=2.0.0")
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ClientFrameError(INVALID_PAYLOAD, "frame is not valid JSON") from None
        if not isinstance(value, dict) or not value.keys() >= _FIELDS:
            raise ClientFrameError(
                UNSUPPORTED_DATA, "expected an object with topic, event, payload and ref"
            )
        payload = value["payload"]
        # The payload's bytes are worth finding only where they may be broadcast.
        forwarded = isinstance(payload, dict | list) and value["event"] not in _CONTROL
        return Message(
            ref_field(value.get("join_ref"), "join_ref"),
            ref_field(value["ref"], "ref"),
            text_field(value["topic"], "topic"),
            text_field(value["event"], "event"),
            payload,
            payloads.member(data, "payload") if forwarded else None,
        )

    def encode(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> bytes:
        return frame(orjson.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref}))

    def lane(self, join_ref: str | None, positions: bool = False) -> Lane:
        return (self, None, positions)

    def fastlane(
        self, broadcast: Broadcast, join_ref: str | None, positions: bool = False
    ) -> bytes | None:
        if broadcast.binary:
            return None
        b = broadcast
        ref = orjson.dumps(b.position if positions else None)
        return frame(
            b'{"topic":'
            + orjson.dumps(b.topic)
            + b',"event":'
            + orjson.dumps(b.event)
            + b',"payload":'
            + b.payload
            + b',"ref":'
            + ref
            + b"}"
        )


V1 = V1Serializer()
