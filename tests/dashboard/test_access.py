"""Dashboard sessions and the peer token (no I/O)."""

from __future__ import annotations

from pydantic import SecretStr

from app.dashboard.access import SESSION, matches, peer_token, session_cookie, valid_session

KEY = SecretStr("the-api-key")
NOW = 1_800_000_000.0


def test_a_session_lasts_its_time_under_its_key_only() -> None:
    cookie = session_cookie(KEY, NOW)
    assert "the-api-key" not in cookie
    assert valid_session(KEY, cookie, NOW + SESSION - 1)
    assert not valid_session(KEY, cookie, NOW + SESSION)
    assert not valid_session(SecretStr("another-key"), cookie, NOW)


def test_a_forged_or_stretched_session_is_refused() -> None:
    expires, _, mac = session_cookie(KEY, NOW).partition(".")
    assert not valid_session(KEY, f"{int(expires) + 3600}.{mac}", NOW)
    assert not valid_session(KEY, f"{expires}.{'0' * len(mac)}", NOW)
    for junk in ("", ".", "abc.def", "-1.x"):
        assert not valid_session(KEY, junk, NOW)


def test_keys_and_peer_tokens() -> None:
    assert matches("the-api-key", KEY) and not matches("the-api-ke", KEY)
    secret = SecretStr("cluster-secret")
    assert peer_token(secret) == peer_token(SecretStr("cluster-secret"))
    assert peer_token(secret) != peer_token(SecretStr("other-secret"))
    assert "cluster-secret" not in peer_token(secret)
