"""The opening of a node link: both ends prove they know the cluster secret.

Three JSON text messages, before any frame of `app.link.codec`:

    listener -> dialer   hello     version, identity, linked_for, nonce_l
    dialer -> listener   auth      version, identity, nonce_d, mac(secret, "dialer", nonce_l, ...)
    listener -> dialer   welcome   mac(secret, "listener", nonce_d, ...)

Each side signs the other's fresh nonce together with both identities, so a recorded
handshake cannot be replayed and neither side can be impersonated without the secret.
States, per side:

    listener:  HELLO_SENT --auth ok--> OPEN          (bad auth: FAILED)
    dialer:    AWAIT_HELLO --hello--> AUTH_SENT --welcome ok--> OPEN   (bad: FAILED)

The listener's `linked_for` (how long it has been linked to gateways without a break, see
`topic_server.node`) lets gateways agree on when a topic server that joins the ring takes
over its topics (see `ws_gateway.router`).

`receive` returns the message to send next, if any, and raises `HandshakeError` on
anything unexpected; the I/O layer then closes the connection with the error's code
(`LinkClose.AUTH_FAILED` or `LinkClose.PROTOCOL_ERROR`) and logs the reason.
"""

from __future__ import annotations

import hmac
import secrets
from enum import Enum
from hashlib import sha256
from typing import Any, NamedTuple

import orjson

from app.link.codec import LinkClose
from app.settings import Role

VERSION = 2  # of the handshake and of the frames of app.link.codec


class Identity(NamedTuple):
    """Who is at one end of a link."""

    name: str
    role: Role
    incarnation: str

    @classmethod
    def parse(cls, value: Any) -> Identity:
        """An identity as a handshake message carries it: [name, role, incarnation]."""
        name, role, incarnation = value
        if not isinstance(name, str) or not isinstance(incarnation, str):
            raise ValueError("identity fields must be strings")
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


def _mac(secret: bytes, side: str, nonce: str, signer: Identity, other: Identity) -> str:
    text = "|".join((side, nonce, *signer, *other))
    return hmac.new(secret, text.encode(), sha256).hexdigest()


class Handshake:
    __slots__ = ("_nonce", "local", "peer", "peer_linked_for", "secret", "state")

    def __init__(self, local: Identity, secret: str, listener: bool) -> None:
        self.local = local
        self.secret = secret.encode()
        self.peer: Identity | None = None
        self.peer_linked_for = 0.0
        self._nonce = secrets.token_hex(16)
        self.state = HandshakeState.HELLO_SENT if listener else HandshakeState.AWAIT_HELLO

    def hello(self, linked_for: float) -> str:
        """The listener's first message."""
        return self._dump(
            {
                "hello": VERSION,
                "identity": list(self.local),
                "linked_for": linked_for,
                "nonce": self._nonce,
            }
        )

    def receive(self, text: str) -> str | None:
        try:
            message = orjson.loads(text)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            return self._step(message)
        except HandshakeError:
            self.state = HandshakeState.FAILED
            raise
        except (ValueError, TypeError, KeyError) as exc:
            self.state = HandshakeState.FAILED
            raise HandshakeError(LinkClose.PROTOCOL_ERROR, f"malformed handshake: {exc}") from None

    def _step(self, message: dict[str, Any]) -> str | None:
        if self.state is HandshakeState.AWAIT_HELLO:
            self._check_version(message, "hello")
            self.peer = Identity.parse(message["identity"])
            self.peer_linked_for = float(message["linked_for"])
            self.state = HandshakeState.AUTH_SENT
            mac = _mac(self.secret, "dialer", message["nonce"], self.local, self.peer)
            return self._dump(
                {"auth": VERSION, "identity": list(self.local), "nonce": self._nonce, "mac": mac}
            )
        if self.state is HandshakeState.HELLO_SENT:
            self._check_version(message, "auth")
            peer = Identity.parse(message["identity"])
            expected = _mac(self.secret, "dialer", self._nonce, peer, self.local)
            if not hmac.compare_digest(str(message["mac"]), expected):
                raise HandshakeError(
                    LinkClose.AUTH_FAILED, f"{peer.name} does not know the cluster secret"
                )
            self.peer = peer
            self.state = HandshakeState.OPEN
            mac = _mac(self.secret, "listener", message["nonce"], self.local, peer)
            return self._dump({"welcome": VERSION, "mac": mac})
        if self.state is HandshakeState.AUTH_SENT:
            assert self.peer is not None
            expected = _mac(self.secret, "listener", self._nonce, self.peer, self.local)
            if not hmac.compare_digest(str(message.get("mac")), expected):
                raise HandshakeError(
                    LinkClose.AUTH_FAILED, f"{self.peer.name} does not know the cluster secret"
                )
            self.state = HandshakeState.OPEN
            return None
        raise HandshakeError(
            LinkClose.PROTOCOL_ERROR, f"handshake message in state {self.state.value}"
        )

    @staticmethod
    def _check_version(message: dict[str, Any], kind: str) -> None:
        if kind not in message:
            raise HandshakeError(LinkClose.PROTOCOL_ERROR, f"expected a {kind} message")
        if message[kind] != VERSION:
            raise HandshakeError(
                LinkClose.PROTOCOL_ERROR,
                f"link protocol version {message[kind]!r}, expected {VERSION}",
            )

    @staticmethod
    def _dump(message: dict[str, Any]) -> str:
        return orjson.dumps(message).decode()
