"""What every serializer shares: the protocol, the decoded message, the broadcast."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

MAX_FIELD_BYTES = 255  # V2 binary frames size each string field with one byte

# RFC 6455 close codes for frames a serializer cannot understand.
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007


class ClientFrameError(Exception):
    """An inbound frame that cannot be understood; the socket closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Message(NamedTuple):
    """One decoded client frame. `payload` is a JSON value, or bytes for a binary push;
    `raw` is the payload's exact bytes in the frame, when the serializer found them (so that
    a broadcast forwards what the client sent, see `ws_gateway.payloads`). A tuple: one is
    made per frame, and a frozen dataclass takes twice as long to make."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    raw: bytes | None = None


class Broadcast:
    """One message for the subscribers of a topic: `payload` is encoded JSON, or raw bytes
    when `binary`; `position` its place in the topic's history ("epoch:offset"), if it has
    one. `shared` keeps what all lanes of a kind have in common, so that a lane costs only
    its own join_ref."""

    __slots__ = ("binary", "event", "payload", "position", "shared", "topic")

    def __init__(
        self, topic: str, event: str, payload: bytes, binary: bool, position: str | None = None
    ) -> None:
        self.topic = topic
        self.event = event
        self.payload = payload
        self.binary = binary
        self.position = position
        self.shared: dict[object, bytes] = {}


# Subscribers in the same lane receive the same bytes for a broadcast: one serializer, one
# join_ref (V2), and whether they asked for positions (then in the frame's ref slot).
Lane = tuple["Serializer", str | None, bool]


class Serializer(Protocol):
    vsn: str

    def decode(self, data: bytes, text: bool) -> Message: ...

    def encode(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> bytes: ...

    def lane(self, join_ref: str | None, positions: bool = False) -> Lane: ...

    def fastlane(
        self, broadcast: Broadcast, join_ref: str | None, positions: bool = False
    ) -> bytes | None: ...


def encode_reply(
    serializer: Serializer,
    join_ref: str | None,
    ref: str | None,
    topic: str,
    status: str,
    response: Any,
) -> bytes:
    """A `phx_reply` with `{"status": status, "response": response}`."""
    payload = {"status": status, "response": response}
    return serializer.encode(join_ref, ref, topic, "phx_reply", payload)


def ref_field(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ClientFrameError(UNSUPPORTED_DATA, f"{name} must be a string or null")


def text_field(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise ClientFrameError(UNSUPPORTED_DATA, f"{name} must be a string")
