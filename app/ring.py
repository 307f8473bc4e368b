"""The ring: `ring.toml`, and which live topic server owns a topic.

`RingConfig` is the declared ring (names, weights, optional static addresses, virtual
nodes). `Ring` is the consistent-hash ring (uhashring) over the declared servers that are
alive right now: every gateway builds the same ring from the same live set, so every
gateway names the same owner, and when a server leaves, only its own topics move.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from uhashring import HashRing

from app.settings import ConfigError

PACKAGED = Path(__file__).with_name("ring.toml")


class RingError(ConfigError):
    """A ring.toml that cannot be used."""


@dataclass(frozen=True, slots=True)
class Declared:
    name: str
    weight: int
    address: str | None


@dataclass(frozen=True, slots=True)
class RingConfig:
    servers: dict[str, Declared]
    vnodes: int
    path: Path


def locate(setting: Path | None) -> Path:
    """DPS_RING, else ring.toml in the working directory, else the one shipped with DPS."""
    if setting is not None:
        return setting
    here = Path("ring.toml")
    return here if here.is_file() else PACKAGED


def load(path: Path) -> RingConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RingError(f"DPS_RING: cannot read {path}: {exc}") from None
    vnodes = data.get("vnodes", 160)
    if not isinstance(vnodes, int) or not 1 <= vnodes <= 10_000:
        raise RingError(f"{path}: vnodes must be an integer from 1 to 10000")
    servers: dict[str, Declared] = {}
    for entry in data.get("topic_server", []):
        name, weight, address = entry.get("name"), entry.get("weight", 1), entry.get("address")
        if not isinstance(name, str) or not name:
            raise RingError(f"{path}: every [[topic_server]] needs a name")
        if name in servers:
            raise RingError(f"{path}: topic server {name!r} is declared twice")
        if not isinstance(weight, int) or not 1 <= weight <= 1000:
            raise RingError(f"{path}: {name}: weight must be an integer from 1 to 1000")
        if address is not None and (not isinstance(address, str) or ":" not in address):
            raise RingError(f"{path}: {name}: address must be 'host:port'")
        servers[name] = Declared(name, weight, address)
    if not servers:
        raise RingError(f"{path}: declares no [[topic_server]]")
    return RingConfig(servers, vnodes, path)


HASH_SPACE = 2**128  # uhashring's default hash, md5, places points in [0, 2**128)


class Ring:
    __slots__ = ("_ring", "members")

    def __init__(self, config: RingConfig, live: Iterable[str]) -> None:
        self.members = frozenset(name for name in live if name in config.servers)
        nodes = {
            name: {"weight": config.servers[name].weight, "vnodes": config.vnodes}
            for name in sorted(self.members)
        }
        self._ring = HashRing(nodes=nodes) if nodes else None

    def owner(self, topic: str) -> str | None:
        return None if self._ring is None else str(self._ring.get_node(topic))

    def shares(self) -> dict[str, float]:
        """The fraction of all topics each member owns: a topic hashing between two points
        of the ring belongs to the point after it (the first point past the last wraps)."""
        if self._ring is None:
            return {}
        points = sorted(self._ring.get_points())
        arcs = dict.fromkeys(sorted(self.members), 0)
        previous = points[-1][0] - HASH_SPACE
        for position, name in points:
            arcs[name] += position - previous
            previous = position
        return {name: arc / HASH_SPACE for name, arc in arcs.items()}
