"""Channel rules, `channels.toml`: who may join a topic, who may publish to it, and how.

An ordered list of `[[channel]]` tables; the first rule whose `topic` matches a topic
decides for it, and a topic that matches no rule cannot be joined.

    topic     "room:lobby" (exactly), "room:*" (a prefix), "*" (every topic), or a
              pattern with one "{sub}", e.g. "user:{sub}": it matches every topic of
              that shape, and only the socket whose token's `sub` fills the
              placeholder may join it (so "user:alice" is alice's alone)
    join      "anyone" (anonymous sockets too), "users" (sockets with a valid connect
              token), "token" (a join token for this topic, and for this socket's
              `sub` when the token names one), "hook" (the application decides)
    publish   "members" (sockets joined to the topic), "nobody" (only the HTTP API),
              "hook"
    events    "publish" (the default: `publish` pushes with [event, object]), "any"
              (besides `publish`, every other push is broadcast as itself), or a list
              of the events clients may push ("publish" in it allows the envelope)
    echo      true (the default): a sender receives its own broadcasts; false: not
              (Phoenix's broadcast_from)
    history_size, history_ttl
              keep the topic's last `history_size` messages (1 to 100000; 100 when only
              the ttl is given) for `history_ttl` seconds (up to 30 days; 3600 when only
              the size is given): clients recover what they missed (`topic_server.history`)
    presence  false (the default); true: sockets joined to the topic are tracked, and
              receive `presence_state` and `presence_diff` (see `ws_gateway.presence`)

`load` refuses, with one line naming the file, the rule and the problem: a file that
does not parse, an unknown key or value, a topic no client can join, and a rule that can
never match because an earlier one matches every topic it would.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from app.link.interface import Kept
from app.settings import ConfigError
from ws_gateway.serializers.protocol import MAX_FIELD_BYTES

SUB = "{sub}"
DEFAULT = Path(__file__).with_name("channels.toml")


class RulesError(ConfigError):
    """A channels.toml that cannot be used."""


class JoinMode(StrEnum):
    ANYONE = "anyone"
    USERS = "users"
    TOKEN = "token"
    HOOK = "hook"


class PublishMode(StrEnum):
    MEMBERS = "members"
    NOBODY = "nobody"
    HOOK = "hook"


PUBLISH = "publish"  # the envelope event: ["event", object] broadcast as "event"


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    topic: str
    join: JoinMode
    publish: PublishMode
    events: frozenset[str] | None  # the events clients may push; None: any
    echo: bool
    pattern: re.Pattern[str]
    kept: Kept | None = None  # the history rule; None: no history
    presence: bool = False

    def matches(self, topic: str) -> bool:
        """Whether this rule decides for `topic` (whoever asks)."""
        return self.pattern.fullmatch(topic) is not None

    def owner(self, topic: str) -> str | None:
        """The `sub` a "{sub}" topic belongs to; None for rules without "{sub}"."""
        found = self.pattern.fullmatch(topic)
        return found.group("sub") if found is not None and SUB in self.topic else None

    def allows(self, event: str) -> bool:
        return self.events is None or event in self.events

    @property
    def head(self) -> str:
        """The literal text every matching topic starts with."""
        return self.topic.split(SUB)[0].removesuffix("*")

    def covers(self, later: Rule) -> bool:
        """Whether this rule matches every topic `later` would (so `later` never decides)."""
        if SUB not in later.topic and not later.topic.endswith("*"):
            return self.matches(later.topic)
        if self.topic.endswith("*") and SUB not in self.topic:  # a prefix
            return later.head.startswith(self.head)
        if self.topic.endswith(SUB):  # a prefix followed by at least one character
            rest = later.topic.removeprefix(self.head)
            longer = rest.startswith(SUB) or len(later.head) > len(self.head)
            return rest != later.topic and longer
        return self.topic == later.topic


class Rules:
    __slots__ = ("path", "rules")

    def __init__(self, rules: list[Rule], path: Path) -> None:
        self.rules = rules
        self.path = path

    def match(self, topic: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(topic):
                return rule
        return None

    def uses_hooks(self) -> bool:
        return any(r.join is JoinMode.HOOK or r.publish is PublishMode.HOOK for r in self.rules)


def locate(setting: Path | None) -> Path:
    """DPS_CHANNELS, else channels.toml in the working directory, else the shipped one."""
    if setting is not None:
        return setting
    here = Path("channels.toml")
    return here if here.is_file() else DEFAULT


KEYS = {"topic", "join", "publish", "events", "echo", "presence", "history_size", "history_ttl"}
HISTORY_SIZE = (100, 100_000)  # the default, and the most
HISTORY_TTL = (3600.0, 30 * 86400.0)


def load(path: Path) -> Rules:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"DPS_CHANNELS: cannot read {path}: {exc}") from None
    unknown = set(data) - {"channel"}
    if unknown:
        raise RulesError(
            f"{path}: unknown key {sorted(unknown)[0]!r} (expected [[channel]] tables)"
        )
    tables = data.get("channel", [])
    if not isinstance(tables, list) or not tables:
        raise RulesError(f"{path}: declares no [[channel]]")
    rules: list[Rule] = []
    for number, table in enumerate(tables, 1):
        where = f"{path}: [[channel]] #{number}"
        if not isinstance(table, dict):
            raise RulesError(f"{where}: expected a table")
        if isinstance(table.get("topic"), str):
            where += f" (topic {table['topic']!r})"
        try:
            rule = _rule(table)
        except ValueError as exc:
            raise RulesError(f"{where}: {exc}") from None
        for earlier_number, earlier in enumerate(rules, 1):
            if earlier.covers(rule):
                raise RulesError(
                    f"{where}: never matches: rule #{earlier_number} ({earlier.topic!r}) "
                    "matches every topic it would"
                )
        rules.append(rule)
    return Rules(rules, path)


def _rule(table: dict[str, Any]) -> Rule:
    unknown = set(table) - KEYS
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} (accepts {', '.join(sorted(KEYS))})")
    topic = table.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    join = _choice(table, "join", JoinMode, JoinMode.ANYONE)
    publish = _choice(table, "publish", PublishMode, PublishMode.MEMBERS)
    echo, presence = _flag(table, "echo", True), _flag(table, "presence", False)
    events = _events(table.get("events", PUBLISH))
    return Rule(topic, join, publish, events, echo, _pattern(topic), _kept(table), presence)


def _flag(table: dict[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _kept(table: dict[str, Any]) -> Kept | None:
    size, ttl = table.get("history_size"), table.get("history_ttl")
    if size is None and ttl is None:
        return None
    size = HISTORY_SIZE[0] if size is None else size
    ttl = HISTORY_TTL[0] if ttl is None else ttl
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= HISTORY_SIZE[1]:
        raise ValueError(f"history_size must be an integer from 1 to {HISTORY_SIZE[1]}")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= HISTORY_TTL[1]:
        raise ValueError(f"history_ttl must be seconds above 0, up to {HISTORY_TTL[1]:g}")
    return Kept(size, float(ttl))


E = TypeVar("E", JoinMode, PublishMode)


def _choice(table: dict[str, Any], key: str, kind: type[E], default: E) -> E:
    value = table.get(key, default)
    try:
        return kind(value)
    except ValueError:
        accepts = ", ".join(repr(v.value) for v in kind)
        raise ValueError(f"{key} must be one of {accepts}, not {value!r}") from None


def _events(value: Any) -> frozenset[str] | None:
    if value == "any":
        return None
    if value == PUBLISH:
        return frozenset((PUBLISH,))
    if not isinstance(value, list) or not value:
        raise ValueError('events must be "publish", "any" or a non-empty list of event names')
    for event in value:
        if not isinstance(event, str) or not event or event.startswith("phx_"):
            raise ValueError(f"events: {event!r} is not an event clients may push")
        if len(event.encode()) > MAX_FIELD_BYTES:
            raise ValueError(f"events: {event[:20]!r}... is longer than {MAX_FIELD_BYTES} bytes")
    return frozenset(value)


def _pattern(topic: str) -> re.Pattern[str]:
    if topic.count(SUB) > 1:
        raise ValueError(f"topic may hold {SUB} once")
    if "*" in topic[:-1]:
        raise ValueError("topic may hold * only at its end")
    if len(topic.replace(SUB, "").replace("*", "").encode()) > MAX_FIELD_BYTES:
        raise ValueError(f"topic is longer than {MAX_FIELD_BYTES} bytes: no client can join it")
    if topic == "phoenix":
        raise ValueError("topic 'phoenix' is reserved for heartbeats: no client can join it")
    star = topic.endswith("*")
    head, _, tail = topic.removesuffix("*").partition(SUB)
    regex = re.escape(head)
    if SUB in topic:
        regex += "(?P<sub>.+?)" + re.escape(tail)
    return re.compile(regex + (".*" if star else ""), re.DOTALL)
