"""Configuration: environment variables first, each refused at start-up with one clear line.

Every setting is a field of `Settings`; its description says which values it accepts, and
`load()` turns any validation error into `DPS_<NAME>: invalid value '...' (accepts ...)`.
The README's configuration table lists the same names and defaults (a test keeps them in step).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class ConfigError(Exception):
    """Configuration that cannot be used (a setting, or a file one names); the message is
    the one line to print before exiting with status 2."""


class SettingsError(ConfigError):
    """A bad setting."""


class Role(StrEnum):
    """What a node does (DPS_APP), and what it says it is when it links to another."""

    EMBEDDED = "all"  # gateway and topic server in one process, linked in memory
    GATEWAY = "ws"
    TOPIC_SERVER = "ts"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DPS_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    app: Role = Field(
        Role.EMBEDDED, description="all (gateway and topic server in one process), ws or ts"
    )
    workers: str | None = Field(
        None,
        pattern=r"^(auto|[1-9][0-9]{0,2})$",
        description="a number of gateway processes, 1 to 999, or auto (one per core)",
    )
    worker_set: Path | None = Field(
        None, description="the path of the worker set's description (set by dps --workers)"
    )
    host: str = Field("127.0.0.1", min_length=1, description="an interface address to bind")
    port: int = Field(4000, ge=1, le=65535, description="a TCP port, 1-65535")
    tls_cert: Path | None = Field(
        None, description="the path of a PEM certificate (chain) for wss:// client sockets"
    )
    tls_key: Path | None = Field(
        None, description="the path of the PEM private key of DPS_TLS_CERT"
    )
    node: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$",
        description="a node name: letters, digits and _ . : - (at most 100)",
    )
    ring: Path | None = Field(None, description="the path of a ring.toml file")
    redis_url: str | None = Field(
        None,
        validation_alias="REDIS_URL",
        pattern=r"^(redis|rediss|unix)://",
        description="a redis://, rediss:// or unix:// URL",
    )
    cluster_secret: SecretStr | None = Field(
        None,
        min_length=8,
        description="a shared secret of at least 8 characters, the same on every node",
    )
    advertise: str | None = Field(
        None,
        pattern=r"^[^\s:]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$",
        description="host:port where other nodes reach this one",
    )
    link_timeout: float = Field(
        1.2,
        ge=0.2,
        le=60,
        description="seconds of silence before a link is declared down; also the longest a "
        "starting gateway waits to be ready before it listens",
    )
    link_queue: int = Field(
        16 * MIB,
        ge=64 * 1024,
        le=1024 * MIB,
        description="bytes that may wait to be sent on one node link, 65536 to 1073741824",
    )
    link_tls_cert: Path | None = Field(
        None, description="the path of this node's PEM certificate (chain) for TLS links"
    )
    link_tls_key: Path | None = Field(
        None, description="the path of the PEM private key of DPS_LINK_TLS_CERT"
    )
    link_tls_ca: Path | None = Field(
        None, description="the path of the PEM CA certificate every node's certificate is from"
    )
    lease_ttl: float = Field(
        3.0, ge=0.5, le=300, description="seconds a node's Redis lease lives unrenewed"
    )
    handover: float = Field(
        2.0, ge=0, le=300, description="seconds a joining topic server waits to take its topics"
    )
    max_frame_bytes: int = Field(
        MIB, ge=1024, le=64 * MIB, description="bytes per client frame, 1024 to 67108864"
    )
    socket_queue: int = Field(
        MIB,
        ge=4096,
        le=256 * MIB,
        description="bytes waiting to be written to one socket, 4096 to 268435456",
    )
    max_sockets: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="client sockets one gateway holds at most (unset: the descriptor limit "
        "less 256)",
    )
    idle_timeout: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="seconds without a message from a client socket before it is closed "
        "(0: never), 0 to 3600",
    )
    ping_interval: float = Field(
        20.0, gt=0, le=600, description="seconds between pings to client sockets, above 0 up to 600"
    )
    frames_per_turn: int = Field(
        16,
        ge=1,
        le=10_000,
        description="frames of one socket handled per turn of the event loop, 1 to 10000",
    )
    publish_rate: float = Field(
        20.0, gt=0, le=1_000_000, description="publishes per second one socket may sustain"
    )
    publish_burst: int = Field(
        20, ge=1, le=1_000_000, description="publishes one socket may make at once"
    )
    join_rate: float = Field(
        10.0, gt=0, le=1_000_000, description="joins per second one socket may sustain"
    )
    join_burst: int = Field(
        100, ge=1, le=1_000_000, description="joins one socket may make at once"
    )
    max_channels: int = Field(
        100, ge=1, le=10_000, description="channels one socket may join, 1 to 10000"
    )
    max_payload_depth: int = Field(
        64, ge=1, le=1000, description="nesting levels a published payload may have, 1 to 1000"
    )
    presence_interval: float = Field(
        0.05,
        ge=0,
        le=10,
        description="seconds a topic's owner gathers presence changes into one diff per topic "
        "(0: each turn of the event loop), 0 to 10",
    )
    max_presence_meta: int = Field(
        1024,
        ge=2,
        le=65536,
        description="bytes of the meta object a socket's presence may carry, 2 to 65536",
    )
    handshake_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="seconds a connection may take to send its request (an upgrade, or an "
        "HTTP request and its body), above 0 up to 300",
    )
    history_max_bytes: int = Field(
        256 * MIB,
        ge=0,
        le=1024 * 1024 * MIB,
        description="bytes of history one topic server keeps at most (oldest trimmed first)",
    )
    publish_timeout: float = Field(
        5.0, gt=0, le=300, description="seconds to wait for the topic owner, above 0 up to 300"
    )
    api_key: SecretStr | None = Field(
        None,
        description="a bearer token for POST /api/broadcast and GET /cluster (unset: none)",
    )
    metrics_key: SecretStr | None = Field(
        None, description="a bearer token for GET /metrics (unset: /metrics is open)"
    )
    jwt_secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="an HMAC key of at least 32 characters for connect and join tokens",
    )
    jwt_public_key: Path | None = Field(
        None, description="the path of a PEM public key (RSA, EC or Ed25519) for tokens"
    )
    jwt_audience: str | None = Field(None, min_length=1, description="the `aud` tokens must name")
    jwt_issuer: str | None = Field(None, min_length=1, description="the `iss` tokens must name")
    allow_anonymous: bool = Field(
        False, description="1 to accept sockets without a token when a JWT key is set, else 0"
    )
    channels: Path | None = Field(None, description="the path of a channels.toml file")
    hook_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="the http:// or https:// base URL of the application's hooks",
    )
    hook_connect: bool = Field(
        False, description="1 to ask the connect hook about every new socket, else 0"
    )
    hook_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds a hook may take, above 0 up to 60"
    )
    hook_concurrency: int = Field(
        64, ge=1, le=10_000, description="hook calls in flight at most, 1 to 10000"
    )
    allowed_origins: str | None = Field(
        None,
        pattern=r"^\s*(\*|https?://[^\s,/]+)(\s*,\s*(\*|https?://[^\s,/]+))*\s*$",
        description="comma-separated origins (https://host[:port]) browsers may connect from, or *",
    )
    demo: bool = Field(True, description="1 to serve the demo chat page at / on gateways, else 0")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error"
    )

    def ignored(self) -> list[str]:
        """Settings given that this role does not use: cluster settings on `all`; on a
        worker set, those of a cluster that spans machines (it is one, on loopback)."""
        if self.app is not Role.EMBEDDED:
            return []
        unused = WORKER_SET_IGNORES if self.worker_count else CLUSTER_ONLY
        return sorted(env_name(field) for field in unused & self.model_fields_set)

    def problem(self) -> str | None:
        """Why these settings cannot run, or None."""
        if self.app is not Role.EMBEDDED and self.cluster_secret is None:
            # Every node of a cluster needs it, on loopback too: any local process can
            # reach a loopback port. (A worker set makes one when none is given.)
            accepts = Settings.model_fields["cluster_secret"].description
            return f"DPS_CLUSTER_SECRET: required with DPS_APP={self.app} (accepts {accepts})"
        if self.workers is not None and self.app is not Role.EMBEDDED:
            return (
                f"DPS_WORKERS: not with DPS_APP={self.app} (a worker set runs its own gateways "
                "and topic servers: leave DPS_APP unset)"
            )
        if self.app is Role.TOPIC_SERVER and (self.tls_cert or self.tls_key):
            return (
                "DPS_TLS_CERT/DPS_TLS_KEY: for client sockets, which topic servers do not "
                "serve (their port carries node links: DPS_LINK_TLS_*)"
            )
        return None

    def together(self, fields: tuple[str, ...], what: str) -> tuple[Path, ...] | None:
        """The paths of settings that go together (all given, or none: None). Raises
        `SettingsError` naming the missing ones, for `what`."""
        given = [getattr(self, field) for field in fields]
        if all(path is None for path in given):
            return None
        missing = [env_name(f) for f, path in zip(fields, given, strict=True) if path is None]
        if missing:
            raise SettingsError(f"{', '.join(missing)}: needed too ({what})")
        return tuple(given)

    @property
    def worker_count(self) -> int | None:
        """Gateway processes of a worker set (DPS_WORKERS), or None: one process."""
        if self.workers is None:
            return None
        if self.workers == "auto":
            return len(os.sched_getaffinity(0))
        return int(self.workers)

    @property
    def beyond_loopback(self) -> bool:
        """Whether this node listens on an interface other hosts can reach."""
        return not _loopback(self.host)

    @property
    def advertise_address(self) -> str:
        """Where other nodes dial this one."""
        if self.advertise is not None:
            return self.advertise
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def node_name(self) -> str:
        return self.node or f"{self.host}:{self.port}"


CLUSTER_ONLY = {
    "ring",
    "redis_url",
    "cluster_secret",
    "advertise",
    "link_timeout",
    "link_queue",
    "link_tls_cert",
    "link_tls_key",
    "link_tls_ca",
    "lease_ttl",
    "handover",
}


# A worker set is a cluster on loopback with its own ring, secret and addresses.
WORKER_SET_IGNORES = {
    "node",
    "ring",
    "redis_url",
    "advertise",
    "lease_ttl",
    "link_tls_cert",
    "link_tls_key",
    "link_tls_ca",
}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field(loc: str) -> str:
    """The field an error location names (aliased fields are reported by alias)."""
    for field, info in Settings.model_fields.items():
        if loc in (field, info.validation_alias):
            return field
    return loc


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else "DPS_" + field.upper()


def default_text(field: str) -> str:
    """A setting's default as the README's table and `dps serve --help` show it."""
    default = Settings.model_fields[field].default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(int(default))  # as the variables take it: 0 or 1
    return str(default).removesuffix(".0")


def describe() -> str:
    """Every setting with its default and the values it accepts, for `dps serve --help`."""
    lines = ["settings (environment variables; the README's Configuration says more):"]
    for field, info in Settings.model_fields.items():
        lines.append(f"  {env_name(field):<22}default {default_text(field)}")
        lines.append(f"  {'':<22}{info.description}")
    return "\n".join(lines)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """DPS_* variables that name no setting (most likely typos)."""
    known = {env_name(field) for field in Settings.model_fields}
    return sorted(name for name in environ if name.startswith("DPS_") and name not in known)


def load(workers: str | None = None) -> Settings:
    """Read the settings from the environment, `workers` (`dps --workers`) over
    DPS_WORKERS; a bad value raises `SettingsError`."""
    try:
        settings = Settings() if workers is None else Settings(workers=workers)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field(str(first["loc"][0]))
        accepts = Settings.model_fields[field].description
        raise SettingsError(
            f"{env_name(field)}: invalid value {first['input']!r} (accepts {accepts})"
        ) from None
    problem = settings.problem()
    if problem is not None:
        raise SettingsError(problem)
    return settings
