"""The opening of a node link: the dialer proves it knows the cluster secret before the
listener says who it is, then the listener proves it in turn.

Three JSON text messages, before any frame of `app.link.codec`:

    listener -> dialer   hello     version, nonce_l
    dialer -> listener   auth      version, identity_d, nonce_d,
                                   mac("auth", nonce_l, nonce_d, identity_d)
    listener -> dialer   welcome   version, identity_l, linked_for,
                                   mac("welcome", nonce_l, nonce_d, identity_l, linked_for)

where an identity is [name, role, incarnation], a nonce 16 fresh random bytes in hex, and
mac(...) the HMAC-SHA256 under the cluster secret of its fields as a JSON array. The hello
tells whoever reaches the port nothing but the protocol version: no name, role,
incarnation or linked_for until it has proved the secret. Both MACs cover both nonces, so
a recorded auth or welcome is worthless on any other connection, and their labels keep
one side's MAC from passing for the other's.

States, per side (any other message, or a bad one, leads to FAILED, for good):

    listener:  HELLO_SENT --auth ok--> OPEN
    dialer:    AWAIT_HELLO --hello--> AUTH_SENT --welcome ok--> OPEN

The listener's `linked_for` (how long it has been linked to gateways without a break, see
`topic_server.node`) lets gateways agree on when a topic server that joins the ring takes
over its topics (see `ws_gateway.router`).

`receive` returns the message to send next, if any, and raises `HandshakeError` on
anything unexpected: `LinkClose.AUTH_FAILED` for a MAC that does not verify (the peer
does not know the secret), `LinkClose.PROTOCOL_ERROR` for anything else (not UTF-8, not
JSON, not the message expected now, another version, a missing, extra or ill-typed
field). The I/O layer closes the connection with that code and logs the reason. Reasons
quote nothing the peer sent but a name it claimed, which `Identity.parse` keeps short and
printable, as log lines need.
"""

from __future__ import annotations

import hmac
import re
import secrets
from enum import Enum
from hashlib import sha256
from typing import Any, NamedTuple

import orjson

from app.link.codec import LinkClose
from app.settings import Role

VERSION = 4  # of the handshake and of the frames of app.link.codec

_NONCE = re.compile(r"[0-9a-f]{32}")
_MAC = re.compile(r"[0-9a-f]{64}")
_ROLES = frozenset(role.value for role in Role)
_LONGEST = 255  # characters of a name or an incarnation


class Identity(NamedTuple):
    """Who is at one end of a link."""

    name: str
    role: Role
    incarnation: str

    @classmethod
    def parse(cls, value: object) -> Identity:
        """An identity as a handshake message carries it: [name, role, incarnation].
        Raises `ValueError`."""
        if type(value) is not list or len(value) != 3 or {type(v) for v in value} != {str}:
            raise ValueError("an identity is [name, role, incarnation], three strings")
        name, role, incarnation = value
        if role not in _ROLES:
            raise ValueError("unknown role")
        for text in (name, incarnation):
            if not 0 < len(text) <= _LONGEST or not text.isprintable():
                raise ValueError(f"a name is 1 to {_LONGEST} printable characters")
        return cls(name, Role(role), incarnation)


class HandshakeError(Exception):
    def __init__(self, code: LinkClose, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeState(Enum):
    AWAIT_HELLO = "await_hello"
    HELLO_SENT = "hello_sent"
    AUTH_SENT = "auth_sent"
    OPEN = "open"
    FAILED = "failed"


# The fields of each message besides its kind, which holds the version.
_FIELDS = {
    "hello": frozenset({"nonce"}),
    "auth": frozenset({"identity", "nonce", "mac"}),
    "welcome": frozenset({"identity", "linked_for", "mac"}),
}


def _mac(secret: bytes, label: str, *fields: str | float) -> str:
    return hmac.new(secret, orjson.dumps([label, *fields]), sha256).hexdigest()


class Handshake:
    __slots__ = (
        "_nonce",
        "_peer_nonce",
        "linked_for",
        "local",
        "peer",
        "peer_linked_for",
        "secret",
        "state",
    )

    def __init__(
        self, local: Identity, secret: str, listener: bool, linked_for: float = 0.0
    ) -> None:
        """One end of one connection's handshake; a listener sends `linked_for` in its
        welcome."""
        if not secret:
            raise ValueError("a link handshake needs the cluster secret")
        self.local = local
        self.secret = secret.encode()
        self.linked_for = float(linked_for)
        self.peer: Identity | None = None  # known once its MAC has been checked
        self.peer_linked_for = 0.0
        self._nonce = secrets.token_hex(16)
        self._peer_nonce = ""
        self.state = HandshakeState.HELLO_SENT if listener else HandshakeState.AWAIT_HELLO

    def hello(self) -> str:
        """The listener's first message."""
        if self.state is not HandshakeState.HELLO_SENT:
            raise RuntimeError("only a listener says hello, before anything else")
        return _dump({"hello": VERSION, "nonce": self._nonce})

    def receive(self, data: bytes) -> str | None:
        """Take the peer's next message (a text message's bytes); the reply to send, if
        any. Raises `HandshakeError`, after which the handshake stays FAILED."""
        try:
            return self._step(data)
        except HandshakeError:
            self.state = HandshakeState.FAILED
            raise

    def _step(self, data: bytes) -> str | None:
        if self.state is HandshakeState.AWAIT_HELLO:
            hello = _read(data, "hello")
            self._peer_nonce = _nonce(hello["nonce"])
            self.state = HandshakeState.AUTH_SENT
            mac = _mac(self.secret, "auth", self._peer_nonce, self._nonce, *self.local)
            return _dump(
                {"auth": VERSION, "identity": list(self.local), "nonce": self._nonce, "mac": mac}
            )
        if self.state is HandshakeState.HELLO_SENT:
            auth = _read(data, "auth")
            peer, nonce = _identity(auth["identity"]), _nonce(auth["nonce"])
            expected = _mac(self.secret, "auth", self._nonce, nonce, *peer)
            if not hmac.compare_digest(_mac_field(auth["mac"]), expected):
                raise HandshakeError(
                    LinkClose.AUTH_FAILED, f"{peer.name} does not know the cluster secret"
                )
            self.peer = peer
            self.state = HandshakeState.OPEN
            mac = _mac(self.secret, "welcome", self._nonce, nonce, *self.local, self.linked_for)
            return _dump(
                {
                    "welcome": VERSION,
                    "identity": list(self.local),
                    "linked_for": self.linked_for,
                    "mac": mac,
                }
            )
        if self.state is HandshakeState.AUTH_SENT:
            welcome = _read(data, "welcome")
            peer, linked_for = _identity(welcome["identity"]), welcome["linked_for"]
            if type(linked_for) not in (int, float) or linked_for < 0:
                raise _malformed("linked_for is not a number of seconds")
            expected = _mac(
                self.secret, "welcome", self._peer_nonce, self._nonce, *peer, linked_for
            )
            if not hmac.compare_digest(_mac_field(welcome["mac"]), expected):
                raise HandshakeError(
                    LinkClose.AUTH_FAILED, "the listener does not know the cluster secret"
                )
            self.peer, self.peer_linked_for = peer, float(linked_for)
            self.state = HandshakeState.OPEN
            return None
        raise _malformed(f"a message in state {self.state.value}")


def _read(data: bytes, kind: str) -> dict[str, Any]:
    """The message `kind` of this version, with exactly its fields, from `data`."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:  # also for bad UTF-8, and JSON nested too deep
        raise _malformed("not UTF-8 JSON") from None
    if type(message) is not dict:
        raise _malformed("not an object")
    if kind not in message:
        raise _malformed(f"expected a {kind} message")
    version = message[kind]
    if type(version) is not int or version != VERSION:
        shown = version if type(version) is int else f"of type {type(version).__name__}"
        raise HandshakeError(
            LinkClose.PROTOCOL_ERROR, f"link protocol version {shown}, expected {VERSION}"
        )
    fields = _FIELDS[kind]
    if message.keys() - {kind} != fields:
        raise _malformed(f"a {kind} message has exactly {', '.join(sorted(fields))}")
    return message


def _identity(value: object) -> Identity:
    try:
        return Identity.parse(value)
    except ValueError as exc:
        raise _malformed(str(exc)) from None


def _nonce(value: object) -> str:
    if type(value) is not str or not _NONCE.fullmatch(value):
        raise _malformed("a nonce is 32 hex digits")
    return value


def _mac_field(value: object) -> str:
    if type(value) is not str or not _MAC.fullmatch(value):
        raise _malformed("a mac is 64 hex digits")
    return value


def _malformed(what: str) -> HandshakeError:
    return HandshakeError(LinkClose.PROTOCOL_ERROR, f"malformed handshake: {what}")


def _dump(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()
