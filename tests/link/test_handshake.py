"""The link handshake, without sockets."""

from __future__ import annotations

import orjson
import pytest

from app.link.codec import LinkClose
from app.link.handshake import (
    Handshake,
    HandshakeError,
    HandshakeState,
    Identity,
    _mac,
)
from app.settings import Role

TS = Identity("ts-a", Role.TOPIC_SERVER, "inc-1")
WS = Identity("ws-a", Role.GATEWAY, "inc-2")


def run(listener: Handshake, dialer: Handshake) -> None:
    auth = dialer.receive(listener.hello(12.5))
    assert auth is not None
    welcome = listener.receive(auth)
    assert welcome is not None
    assert dialer.receive(welcome) is None


def test_both_ends_open_and_learn_who_the_other_is() -> None:
    listener, dialer = Handshake(TS, "secret!!", listener=True), Handshake(WS, "secret!!", False)
    run(listener, dialer)
    assert listener.state is dialer.state is HandshakeState.OPEN
    assert (listener.peer, dialer.peer, dialer.peer_linked_for) == (WS, TS, 12.5)


def test_a_dialer_with_the_wrong_secret_is_refused() -> None:
    listener, dialer = Handshake(TS, "secret!!", listener=True), Handshake(WS, "wrong!!!", False)
    auth = dialer.receive(listener.hello(0))
    assert auth is not None
    with pytest.raises(HandshakeError) as err:
        listener.receive(auth)
    assert err.value.code == LinkClose.AUTH_FAILED
    assert listener.state is HandshakeState.FAILED


def test_a_listener_with_the_wrong_secret_is_refused() -> None:
    impostor, dialer = Handshake(TS, "wrong!!!", listener=True), Handshake(WS, "secret!!", False)
    auth = dialer.receive(impostor.hello(0))
    assert auth is not None
    # The impostor cannot check the auth; it answers with a welcome signed with its secret.
    nonce = orjson.loads(auth)["nonce"]
    forged = orjson.dumps({"welcome": 1, "mac": _mac(b"wrong!!!", "listener", nonce, TS, WS)})
    with pytest.raises(HandshakeError) as err:
        dialer.receive(forged.decode())
    assert err.value.code == LinkClose.AUTH_FAILED
    assert dialer.state is HandshakeState.FAILED


def test_a_recorded_auth_cannot_be_replayed_on_another_connection() -> None:
    first, dialer = Handshake(TS, "secret!!", listener=True), Handshake(WS, "secret!!", False)
    auth = dialer.receive(first.hello(0))
    assert auth is not None
    second = Handshake(TS, "secret!!", listener=True)
    second.hello(0)
    with pytest.raises(HandshakeError) as err:
        second.receive(auth)
    assert err.value.code == LinkClose.AUTH_FAILED


@pytest.mark.parametrize(
    "message",
    ["not json", "[1]", '{"auth": 99, "identity": ["a","ws","i"], "nonce": "n", "mac": "m"}', "{}"],
)
def test_malformed_or_foreign_messages_fail_the_handshake(message: str) -> None:
    listener = Handshake(TS, "secret!!", listener=True)
    listener.hello(0)
    with pytest.raises(HandshakeError) as err:
        listener.receive(message)
    assert err.value.code == LinkClose.PROTOCOL_ERROR
