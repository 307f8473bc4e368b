"""What a gateway lets clients do: who may connect, and the rules joins and publishes follow.

`admit` is the decision at connect, before the upgrade, as a pure function of the request
and the time:

- a browser (a request with an `Origin` header) must come from DPS_ALLOWED_ORIGINS, when
  it is set;
- with a JWT key set, the socket needs a valid connect token, as the `token` connect
  param (`/socket/websocket?token=...`, what phoenix.js sends for `params: {token}`) or
  in phoenix.js's `authToken` subprotocol (`base64url.bearer.phx.<token>`); its `sub`
  claim becomes the socket's user, and its `exp` when the socket is closed;
- DPS_ALLOW_ANONYMOUS=1 accepts a socket without a token as anonymous (a token that is
  there must still be valid).

Each refusal has a reason for the log line (never the token itself).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from app.counters import Counters
from app.settings import Settings
from ws_gateway.access import rules as channel_rules
from ws_gateway.access.hooks import Hooks
from ws_gateway.access.rules import Rules
from ws_gateway.access.tokens import TokenError, Verifier

log = logging.getLogger("dps.gateway")

MAX_CHANNELS = 100  # Phoenix's limit of channels per socket
MAX_PAYLOAD_DEPTH = 64
MAX_PRESENCE_META = 1024
BEARER = "base64url.bearer.phx."


class Admitted(NamedTuple):
    user: str | None  # the token's `sub`; None for an anonymous socket
    expires: float | None  # the token's `exp`


class Refused(NamedTuple):
    reason: str


Admission = Admitted | Refused


class Policy:
    __slots__ = (
        "allow_anonymous",
        "clock",
        "counters",
        "frames_per_turn",
        "hook_connect",
        "hooks",
        "join_rate",
        "max_channels",
        "max_payload_depth",
        "max_presence_meta",
        "origins",
        "publish_rate",
        "rules",
        "verifier",
    )

    def __init__(
        self,
        rules: Rules,
        verifier: Verifier | None,
        clock: Callable[[], float],
        counters: Counters,
        *,
        allow_anonymous: bool = False,
        origins: frozenset[str] | None = None,
        hooks: Hooks | None = None,
        hook_connect: bool = False,
        max_channels: int = MAX_CHANNELS,
        max_payload_depth: int = MAX_PAYLOAD_DEPTH,
        max_presence_meta: int = MAX_PRESENCE_META,
        publish_rate: tuple[float, int] = (20.0, 20),
        join_rate: tuple[float, int] = (10.0, 100),
        frames_per_turn: int = 16,
    ) -> None:
        self.rules = rules
        self.verifier = verifier
        self.clock = clock
        self.counters = counters
        self.allow_anonymous = allow_anonymous
        self.origins = origins  # None: any origin
        self.hooks = hooks
        self.hook_connect = hook_connect
        self.max_channels = max_channels
        self.max_payload_depth = max_payload_depth
        self.max_presence_meta = max_presence_meta  # bytes of a presence meta
        self.publish_rate = publish_rate  # (per second, burst), per socket
        self.join_rate = join_rate
        self.frames_per_turn = frames_per_turn  # of one socket, per turn of the event loop

    @classmethod
    def of(cls, settings: Settings, counters: Counters, clock: Callable[[], float]) -> Policy:
        """The policy the settings describe. Raises `ConfigError` (a setting, or a
        channels.toml) with the one line to print."""
        rules = channel_rules.load(channel_rules.locate(settings.channels))
        if (rules.uses_hooks() or settings.hook_connect) and settings.hook_url is None:
            needs = "DPS_HOOK_CONNECT" if settings.hook_connect else str(rules.path)
            raise channel_rules.RulesError(
                f"DPS_HOOK_URL: required by {needs} (the application's hooks)"
            )
        verifier = Verifier.of(settings)
        origins = parse_origins(settings.allowed_origins)
        if verifier is not None and origins is None and settings.beyond_loopback:
            log.warning(
                "DPS_ALLOWED_ORIGINS is not set: any web page can open a socket here with a "
                "visitor's token (cross-site WebSocket hijacking); set it to your sites' origins"
            )
        hooks = None
        if settings.hook_url is not None:
            hooks = Hooks(
                settings.hook_url,
                settings.hook_timeout,
                settings.hook_concurrency,
                settings.max_payload_depth,
                counters,
            )
        return cls(
            rules,
            verifier,
            clock,
            counters,
            allow_anonymous=settings.allow_anonymous,
            origins=origins,
            hooks=hooks,
            hook_connect=settings.hook_connect,
            max_channels=settings.max_channels,
            max_payload_depth=settings.max_payload_depth,
            max_presence_meta=settings.max_presence_meta,
            publish_rate=(settings.publish_rate, settings.publish_burst),
            join_rate=(settings.join_rate, settings.join_burst),
            frames_per_turn=settings.frames_per_turn,
        )

    def admit(
        self, origin: str | None, params: Mapping[str, str], subprotocols: Iterable[str]
    ) -> Admission:
        if (
            origin is not None
            and self.origins is not None
            and origin_key(origin) not in self.origins
        ):
            return Refused(f"origin {origin[:100]!r} is not allowed")
        token = params.get("token") or bearer(subprotocols)
        if self.verifier is None:
            return Admitted(None, None)
        if token is None:
            return Admitted(None, None) if self.allow_anonymous else Refused("no token")
        try:
            claims = self.verifier.verify(token, self.clock())
        except TokenError as exc:
            return Refused(f"token refused: {exc.reason}")
        sub, exp = claims.get("sub"), claims.get("exp")
        if not isinstance(sub, str) or not sub:
            return Refused("token refused: no sub claim")
        return Admitted(sub, exp)


def bearer(subprotocols: Iterable[str]) -> str | None:
    """The token phoenix.js 1.8 offers as a subprotocol (`authToken`), if any."""
    for offered in subprotocols:
        if offered.startswith(BEARER):
            encoded = offered[len(BEARER) :]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                return ""  # present but unreadable: refused as a malformed token
    return None


def origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def parse_origins(setting: str | None) -> frozenset[str] | None:
    """DPS_ALLOWED_ORIGINS as a set, or None for any origin (unset, or `*` among them)."""
    if setting is None:
        return None
    origins = frozenset(origin_key(part) for part in setting.split(","))
    return None if "*" in origins else origins
