"""pg frames between nodes: builders, validating parsers, and the anti-entropy digest.

A frame is a plain JSON value (lists, str, int), so a link can encode it with orjson.
Every frame starts with the same header: `[kind, scope, instance, ...]`, where
`instance` numbers the sender's runs of that scope within its node incarnation (the
stand-in for a fresh Erlang pid when a scope restarts). The sender's node identity is
not in the frame: the link it arrives on names it. Members travel as the sender's
local ids only, since a node announces nothing but its own members. Groups are strings.

| frame | layout |
| --- | --- |
| discover | `["discover", scope, instance, version, reply]` (reply 1: "discover me back") |
| sync | `["sync", scope, instance, [[group, [id, ...]], ...]]` (ids repeat per membership) |
| join | `["join", scope, instance, group, [id, ...]]` |
| leave | `["leave", scope, instance, [id, ...], [group, ...]]` (each id, once per listed group) |
| scope_down | `["scope_down", scope, instance]` |
| digest | `["digest", scope, instance, digest]` |

Parsers check shapes and types completely before anything is applied, raising
`PgFrameError` (the peer's fault: the node logs it and drops the frame). They take any
value orjson decodes, of any depth, and never recurse into it: every check looks at a
fixed number of levels, iteratively.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b
from operator import itemgetter
from typing import Any, Final, TypeAlias

import orjson

from app.pg.table import Multiset, expand

__all__ = [
    "DIGEST",
    "DISCOVER",
    "JOIN",
    "LEAVE",
    "PROTOCOL_VERSION",
    "SCOPE_DOWN",
    "SYNC",
    "PgFrame",
    "PgFrameError",
    "digest",
    "digest_frame",
    "discover",
    "header",
    "join",
    "leave",
    "local_ids",
    "parse_digest",
    "parse_discover",
    "parse_join",
    "parse_leave",
    "parse_sync",
    "scope_down",
    "sync",
]

# A frame as it leaves orjson.loads: nothing is known about it until it is parsed.
PgFrame: TypeAlias = list[Any]

PROTOCOL_VERSION: Final = 1

DISCOVER: Final = "discover"
SYNC: Final = "sync"
JOIN: Final = "join"
LEAVE: Final = "leave"
SCOPE_DOWN: Final = "scope_down"
DIGEST: Final = "digest"

_local_id = itemgetter(2)


class PgFrameError(ValueError):
    """A malformed frame from a peer."""


def local_ids(members: Multiset) -> list[int]:
    """The members' local ids, each repeated by its count."""
    return list(map(_local_id, expand(members)))


# Builders.


def discover(scope: str, instance: int, *, reply: bool) -> PgFrame:
    return [DISCOVER, scope, instance, PROTOCOL_VERSION, int(reply)]


def sync(scope: str, instance: int, groups: dict[str, Multiset]) -> PgFrame:
    return [SYNC, scope, instance, [[g, local_ids(ms)] for g, ms in groups.items()]]


def join(scope: str, instance: int, group: str, ids: list[int]) -> PgFrame:
    return [JOIN, scope, instance, group, ids]


def leave(scope: str, instance: int, ids: list[int], groups: list[str]) -> PgFrame:
    return [LEAVE, scope, instance, ids, groups]


def scope_down(scope: str, instance: int) -> PgFrame:
    return [SCOPE_DOWN, scope, instance]


def digest_frame(scope: str, instance: int, value: str) -> PgFrame:
    return [DIGEST, scope, instance, value]


# Parsers.


def header(frame: object) -> tuple[str, str, int]:
    """`(kind, scope, instance)` of any frame."""
    if (
        type(frame) is not list
        or len(frame) < 3
        or type(frame[0]) is not str
        or type(frame[1]) is not str
        or type(frame[2]) is not int
    ):
        raise PgFrameError(f"bad frame header: {_abbrev(frame)}")
    return frame[0], frame[1], frame[2]


def parse_discover(frame: PgFrame) -> tuple[int, bool]:
    """`(version, reply)`. The version is returned unchecked, for the caller to judge."""
    _arity(frame, 5)
    version, reply = frame[3], frame[4]
    if type(version) is not int or reply not in (0, 1) or type(reply) is not int:
        raise PgFrameError(f"bad discover: {_abbrev(frame)}")
    return version, bool(reply)


def parse_sync(frame: PgFrame) -> list[tuple[str, list[int]]]:
    _arity(frame, 4)
    entries = frame[3]
    if type(entries) is not list:
        raise PgFrameError(f"bad sync: {_abbrev(frame)}")
    out = []
    for entry in entries:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str:
            raise PgFrameError(f"bad sync entry: {_abbrev(entry)}")
        out.append((entry[0], _ids(entry[1])))
    return out


def parse_join(frame: PgFrame) -> tuple[str, list[int]]:
    _arity(frame, 5)
    group = frame[3]
    if type(group) is not str:
        raise PgFrameError(f"bad join group: {_abbrev(frame)}")
    return group, _ids(frame[4])


def parse_leave(frame: PgFrame) -> tuple[list[int], list[str]]:
    _arity(frame, 5)
    groups = frame[4]
    if type(groups) is not list or not _all_of_type(groups, str):
        raise PgFrameError(f"bad leave groups: {_abbrev(frame)}")
    return _ids(frame[3]), groups


def parse_digest(frame: PgFrame) -> str:
    _arity(frame, 4)
    value = frame[3]
    if type(value) is not str:
        raise PgFrameError(f"bad digest: {_abbrev(frame)}")
    return value


def _arity(frame: PgFrame, n: int) -> None:
    if len(frame) != n:
        raise PgFrameError(f"{frame[0]} frame needs {n} fields: {_abbrev(frame)}")


def _ids(value: object) -> list[int]:
    if type(value) is not list or not _all_of_type(value, int):
        raise PgFrameError(f"bad member ids: {_abbrev(value)}")
    return value


def _all_of_type(values: Iterable[object], t: type) -> bool:
    # map/set run in C: checking a 100,000-member sync costs about a millisecond.
    return set(map(type, values)) <= {t}


def _abbrev(value: object) -> str:
    """`value` for a log line, as JSON cut to 200 characters. orjson writes it in C,
    never recursing in Python: a frame is as deep as its sender made it, and `repr`
    would raise RecursionError on one nested about 1,000 levels."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # deeper than orjson writes (254), or not JSON
        return f"(a {type(value).__name__}, nested too deep or not JSON)"
    return text if len(text) <= 200 else text[:200] + "..."


# Anti-entropy.


def digest(groups: dict[str, Multiset]) -> str:
    """A digest of one owner's memberships, equal on two nodes iff the states are equal.

    Canonical form: groups sorted by name, each with its sorted local ids (repeated per
    membership); hashed with BLAKE2b-128. Python's `hash` would not do: it is salted
    per process.
    """
    canonical = sorted([g, sorted(local_ids(ms))] for g, ms in groups.items())
    return blake2b(orjson.dumps(canonical), digest_size=16).hexdigest()
