"""Configuration: environment variables first, each refused at start-up with one clear line.

Every setting is a field of `Settings`; its description says which values it accepts, and
`load()` turns any validation error into `DPS_<NAME>: invalid value '...' (accepts ...)`.
The README's configuration table lists the same names and defaults (a test keeps them in step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class SettingsError(Exception):
    """A bad setting; the message is the one line to print."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DPS_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    app: Literal["all", "ws", "ts"] = Field(
        "all", description="all (gateway and topic server in one process), ws or ts"
    )
    host: str = Field("127.0.0.1", min_length=1, description="an interface address to bind")
    port: int = Field(4000, ge=1, le=65535, description="a TCP port, 1-65535")
    max_frame_bytes: int = Field(
        MIB, ge=1024, le=64 * MIB, description="bytes per client frame, 1024 to 67108864"
    )
    socket_queue: int = Field(
        MIB,
        ge=4096,
        le=256 * MIB,
        description="bytes waiting to be written to one socket, 4096 to 268435456",
    )
    publish_timeout: float = Field(
        5.0, gt=0, le=300, description="seconds to wait for the topic owner, above 0 up to 300"
    )
    api_key: SecretStr | None = Field(
        None, description="a bearer token for POST /api/broadcast (unset: no key required)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error"
    )


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else "DPS_" + field.upper()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """DPS_* variables that name no setting (most likely typos)."""
    known = {env_name(field) for field in Settings.model_fields}
    return sorted(name for name in environ if name.startswith("DPS_") and name not in known)


def load() -> Settings:
    """Read the settings from the environment; a bad value raises `SettingsError`."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0])
        accepts = Settings.model_fields[field].description
        raise SettingsError(
            f"{env_name(field)}: invalid value {first['input']!r} (accepts {accepts})"
        ) from None
