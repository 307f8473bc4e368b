"""Who may connect: origins, connect tokens (param or subprotocol), anonymous sockets."""

from __future__ import annotations

import base64

import jwt

from app.counters import Counters
from ws_gateway.access import rules
from ws_gateway.access.policy import Admitted, Policy, Refused, bearer, parse_origins
from ws_gateway.access.tokens import Verifier

SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0
OPEN = rules.load(rules.DEFAULT)


def policy(
    verifier: Verifier | None = None, anonymous: bool = False, origins: str | None = None
) -> Policy:
    return Policy(
        OPEN,
        verifier,
        lambda: NOW,
        Counters(),
        allow_anonymous=anonymous,
        origins=parse_origins(origins),
    )


def hs256() -> Verifier:
    return Verifier(SECRET.encode(), ("HS256",), None, None)


def subprotocol(token: str) -> str:
    return "base64url.bearer.phx." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def test_without_a_key_everyone_connects_anonymously() -> None:
    assert policy().admit(None, {}, []) == Admitted(None, None)
    assert policy().admit(None, {"token": "whatever"}, []) == Admitted(None, None)


def test_a_token_as_param_or_subprotocol_names_the_user() -> None:
    token = jwt.encode({"sub": "alice", "exp": NOW + 30}, SECRET)
    p = policy(hs256())
    assert p.admit(None, {"token": token}, []) == Admitted("alice", NOW + 30)
    assert p.admit(None, {}, ["phoenix", subprotocol(token)]) == Admitted("alice", NOW + 30)
    assert bearer(["phoenix"]) is None


def test_refusals_say_why_and_never_hold_the_token() -> None:
    p = policy(hs256())
    expired = jwt.encode({"sub": "alice", "exp": NOW - 1}, SECRET)
    no_sub = jwt.encode({"name": "alice"}, SECRET)
    cases = {
        "no token": p.admit(None, {}, ["phoenix"]),
        "token refused: expired": p.admit(None, {"token": expired}, []),
        "token refused: no sub claim": p.admit(None, {"token": no_sub}, []),
        "token refused: malformed token": p.admit(None, {}, ["base64url.bearer.phx.!!"]),
    }
    for reason, admission in cases.items():
        assert admission == Refused(reason)
        assert expired not in admission.reason


def test_anonymous_sockets_when_allowed_but_a_bad_token_is_still_refused() -> None:
    p = policy(hs256(), anonymous=True)
    assert p.admit(None, {}, []) == Admitted(None, None)
    assert p.admit(None, {"token": "junk"}, []) == Refused("token refused: malformed token")


def test_origins() -> None:
    p = policy(origins="https://chat.example.com, http://localhost:8080")
    assert p.admit("https://chat.example.com", {}, []) == Admitted(None, None)
    assert p.admit("HTTPS://Chat.Example.com/", {}, []) == Admitted(None, None)
    assert p.admit("http://localhost:8080", {}, []) == Admitted(None, None)
    assert p.admit(None, {}, []) == Admitted(None, None)  # not a browser
    assert p.admit("https://evil.example", {}, []) == Refused(
        "origin 'https://evil.example' is not allowed"
    )
    assert policy(origins="*").admit("https://evil.example", {}, []) == Admitted(None, None)
    assert parse_origins(None) is None and parse_origins("https://a.b, *") is None
