"""channels.toml: loading, every refusal a one-line error, and matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.link.interface import Kept
from tests.support import ROOT
from ws_gateway.access import rules
from ws_gateway.access.rules import JoinMode, PublishMode, RulesError


def load(tmp_path: Path, text: str) -> rules.Rules:
    path = tmp_path / "channels.toml"
    path.write_text(text)
    return rules.load(path)


def test_the_shipped_rules_let_anyone_join_and_publish_everywhere() -> None:
    shipped = rules.load(rules.DEFAULT)
    for topic in ("topics:matrix", "room:lobby", "chat:lobby"):
        rule = shipped.match(topic)
        assert rule is not None
        assert (rule.join, rule.publish, rule.echo) == (JoinMode.ANYONE, PublishMode.MEMBERS, True)
        assert rule.allows("publish") and not rule.allows("new_msg")
    assert not shipped.uses_hooks()


def test_the_shipped_rules_keep_history_and_presence_for_the_demo_chat_only() -> None:
    shipped = rules.load(rules.DEFAULT)
    chat, other = shipped.match("chat:lobby"), shipped.match("room:lobby")
    assert chat is not None and other is not None
    assert chat.presence and chat.kept == Kept(100, 3600.0)
    assert not other.presence and other.kept is None


def test_the_readme_shows_the_shipped_rules() -> None:
    rules_text = rules.DEFAULT.read_text()
    shown = rules_text[rules_text.index("[[channel]]") :]
    assert f"```toml\n{shown}```" in (ROOT / "README.md").read_text()


def test_first_match_decides(tmp_path: Path) -> None:
    found = load(
        tmp_path,
        """
        [[channel]]
        topic = "room:lobby"
        join = "anyone"
        events = "any"
        [[channel]]
        topic = "room:*"
        join = "users"
        publish = "hook"
        echo = false
        presence = true
        [[channel]]
        topic = "user:{sub}:inbox*"
        join = "token"
        [[channel]]
        topic = "user:{sub}"
        join = "users"
        events = ["typing", "publish"]
        """,
    )
    lobby, room, inbox, user = found.rules
    assert found.match("room:lobby") is lobby and lobby.events is None
    assert found.match("room:42") is room and not room.echo and room.presence
    assert not lobby.presence
    assert found.match("room:") is room
    assert found.match("rooms:42") is None
    assert found.match("user:alice") is user and user.owner("user:alice") == "alice"
    assert user.allows("typing") and user.allows("publish") and not user.allows("other")
    assert found.match("user:bob:inbox:7") is inbox and inbox.owner("user:bob:inbox:7") == "bob"
    assert found.match("user:bob:outbox") is user
    assert room.owner("room:42") is None
    assert found.uses_hooks()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not toml [", "DPS_CHANNELS: cannot read"),
        ("", "declares no [[channel]]"),
        ("rules = 1", "unknown key 'rules'"),
        ('[[channel]]\ntopic = "a"\nmode = "x"', "#1 (topic 'a'): unknown key 'mode'"),
        ("[[channel]]\njoin = 'anyone'", "#1: topic must be a non-empty string"),
        ('[[channel]]\ntopic = "a"\njoin = "everyone"', "join must be one of 'anyone', 'users'"),
        ('[[channel]]\ntopic = "a"\npublish = "all"', "publish must be one of 'members'"),
        ('[[channel]]\ntopic = "a"\necho = "no"', "echo must be true or false"),
        ('[[channel]]\ntopic = "a"\npresence = 1', "presence must be true or false"),
        ('[[channel]]\ntopic = "a"\nevents = "some"', 'events must be "publish", "any" or'),
        ('[[channel]]\ntopic = "a"\nevents = ["phx_join"]', "'phx_join' is not an event"),
        ('[[channel]]\ntopic = "a*b"', "* only at its end"),
        ('[[channel]]\ntopic = "{sub}:{sub}"', "{sub} once"),
        ('[[channel]]\ntopic = "phoenix"', "reserved for heartbeats"),
        (f'[[channel]]\ntopic = "{"x" * 256}"', "longer than 255 bytes"),
        (
            '[[channel]]\ntopic = "*"\n[[channel]]\ntopic = "a"',
            "#2 (topic 'a'): never matches: rule #1",
        ),
        (
            '[[channel]]\ntopic = "a:*"\n[[channel]]\ntopic = "a:b*"',
            "never matches: rule #1 ('a:*')",
        ),
        ('[[channel]]\ntopic = "a:*"\n[[channel]]\ntopic = "a:{sub}"', "never matches"),
        ('[[channel]]\ntopic = "u:{sub}"\n[[channel]]\ntopic = "u:admin"', "never matches"),
        ('[[channel]]\ntopic = "u:{sub}"\n[[channel]]\ntopic = "u:{sub}:x*"', "never matches"),
        ('[[channel]]\ntopic = "u:{sub}"\n[[channel]]\ntopic = "u:a*"', "never matches"),
        ('[[channel]]\ntopic = "x"\n[[channel]]\ntopic = "x"', "never matches"),
    ],
)
def test_unusable_files_are_one_line_errors(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(RulesError, match=re.escape(problem)) as err:
        load(tmp_path, text)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(("DPS_CHANNELS", str(tmp_path)))


def test_rules_that_only_look_alike_are_kept(tmp_path: Path) -> None:
    found = load(
        tmp_path,
        """
        [[channel]]
        topic = "a:b*"
        [[channel]]
        topic = "a:*"
        [[channel]]
        topic = "u:admin"
        [[channel]]
        topic = "u:{sub}"
        [[channel]]
        topic = "u:*"
        """,
    )
    assert len(found.rules) == 5  # "u:*" still decides for "u:" itself


def test_locate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert rules.locate(None) == rules.DEFAULT
    (tmp_path / "channels.toml").write_text("")
    assert rules.locate(None) == Path("channels.toml")
    assert rules.locate(Path("/x.toml")) == Path("/x.toml")
