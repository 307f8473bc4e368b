"""The Phoenix wire formats: one serializer per format, behind one small protocol.

As in Phoenix, a socket negotiates its serializer once, with the `vsn` query parameter
(`negotiate`), and nothing outside the serializers looks at the protocol version. A
serializer does three things, all pure:

- `decode(data, text)`: one client frame to a `Message`, or `ClientFrameError` (the
  client's fault: the socket is closed with the error's code and reason);
- `encode(join_ref, ref, topic, event, payload)`: a frame for one socket (replies,
  pushes, phx_close);
- `fastlane(broadcast, join_ref)`: a broadcast, encoded once per serializer and join_ref
  and written as the same bytes to every socket of that lane (`lane`), or None when the
  format cannot carry it (V1 has no binary frames).

Every output is a complete WebSocket message (`app.served.detached.frame`), ready to write.

    v1      `vsn=1.0.0` (or none): JSON objects
    v2      `vsn=2.0.0`: JSON arrays, and binary frames through `binary`
    binary  the V2 binary frames: a client push in, a broadcast out
"""

from __future__ import annotations

from ws_gateway.serializers.protocol import (
    Broadcast,
    ClientFrameError,
    Lane,
    Message,
    Serializer,
    encode_reply,
)
from ws_gateway.serializers.v1 import V1
from ws_gateway.serializers.v2 import V2

__all__ = [
    "V1",
    "V2",
    "Broadcast",
    "ClientFrameError",
    "Lane",
    "Message",
    "Serializer",
    "encode_reply",
    "negotiate",
]


SERIALIZERS: dict[str, Serializer] = {"1.0": V1, "2.0": V2}  # by the vsn's major.minor


def negotiate(vsn: str | None) -> Serializer | None:
    """Missing or 1.0.x means V1, 2.0.x means V2; anything else is refused (None)."""
    if vsn is None:
        return V1
    major_minor, dot, patch = vsn.rpartition(".")
    if not dot or not patch.isdigit():
        return None
    return SERIALIZERS.get(major_minor)
