"""The link handshake, without sockets: what each side learns, when, and every refusal.

The examples show each rule once; the properties at the end feed the state machine any
text, any JSON, and genuine messages with one field changed.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.link.codec import LinkClose
from app.link.handshake import (
    VERSION,
    Handshake,
    HandshakeError,
    HandshakeState,
    Identity,
    _mac,
)
from app.settings import Role
from tests.link.inputs import FIELDS, well_formed_message
from tests.pg.frames import wild_values

TS = Identity("ts-a", Role.TOPIC_SERVER, "inc-1")
WS = Identity("ws-a", Role.GATEWAY, "inc-2")
SECRET = secrets.token_urlsafe()
LINKED_FOR = 12.5


def listener(secret: str = SECRET) -> Handshake:
    return Handshake(TS, secret, listener=True, linked_for=LINKED_FOR)


def dialer(secret: str = SECRET) -> Handshake:
    return Handshake(WS, secret, listener=False)


def send(message: str) -> bytes:
    return message.encode()


def auth_for(end: Handshake, hello: str) -> str:
    auth = end.receive(send(hello))
    assert auth is not None
    return auth


def refused(end: Handshake, message: bytes) -> HandshakeError:
    with pytest.raises(HandshakeError) as err:
        end.receive(message)
    assert end.state is HandshakeState.FAILED
    return err.value


def told(text: str) -> list[str]:
    """What of the listener's identity, or its linked_for, `text` gives away."""
    secrets_of_ts = [TS.name, TS.incarnation, f'"{TS.role.value}"', str(LINKED_FOR)]
    return [value for value in secrets_of_ts if value in text]


def test_both_ends_open_and_learn_who_the_other_is() -> None:
    ts, ws = listener(), dialer()
    welcome = ts.receive(send(auth_for(ws, ts.hello())))
    assert welcome is not None
    assert ws.receive(send(welcome)) is None
    assert ts.state is ws.state is HandshakeState.OPEN
    assert (ts.peer, ws.peer, ws.peer_linked_for) == (WS, TS, LINKED_FOR)


def test_the_hello_holds_the_version_and_a_fresh_nonce_and_nothing_else() -> None:
    ts = listener()
    hello = orjson.loads(ts.hello())
    assert hello.keys() == {"hello", "nonce"}
    assert hello["hello"] == VERSION
    assert told(ts.hello()) == []
    assert orjson.loads(listener().hello())["nonce"] != hello["nonce"]


def test_a_dialer_with_the_wrong_secret_is_refused_and_learns_nothing() -> None:
    ts, intruder = listener(), dialer(secrets.token_urlsafe())
    hello = ts.hello()
    error = refused(ts, send(auth_for(intruder, hello)))
    assert (error.code, error.reason) == (
        LinkClose.AUTH_FAILED,
        "ws-a does not know the cluster secret",
    )
    # All the intruder ever gets: the hello, then the refusal's reason in the close frame.
    assert told(hello) == told(error.reason) == []
    assert (intruder.peer, intruder.peer_linked_for) == (None, 0.0)
    assert ts.peer is None


def test_a_listener_with_the_wrong_secret_is_refused_by_the_dialer() -> None:
    ts, ws = listener(), dialer()
    hello = ts.hello()
    auth = orjson.loads(auth_for(ws, hello))
    # An impostor cannot check the auth; it answers with a welcome signed with its secret.
    nonces = (orjson.loads(hello)["nonce"], auth["nonce"])
    mac = _mac(b"another secret", "welcome", *nonces, *TS, LINKED_FOR)
    forged = {"welcome": VERSION, "identity": list(TS), "linked_for": LINKED_FOR, "mac": mac}
    error = refused(ws, orjson.dumps(forged))
    assert (error.code, error.reason) == (
        LinkClose.AUTH_FAILED,
        "the listener does not know the cluster secret",
    )
    assert (ws.peer, ws.peer_linked_for) == (None, 0.0)  # not a word of it believed


def test_a_recorded_auth_cannot_be_replayed_on_another_connection() -> None:
    first, ws = listener(), dialer()
    auth = auth_for(ws, first.hello())
    second = listener()
    second.hello()
    assert refused(second, send(auth)).code == LinkClose.AUTH_FAILED


def test_a_recorded_welcome_cannot_be_replayed_to_another_dialer() -> None:
    ts, ws = listener(), dialer()
    hello = ts.hello()
    welcome = ts.receive(send(auth_for(ws, hello)))
    assert welcome is not None
    later = dialer()
    later.receive(send(hello))  # even given the same hello, its own nonce differs
    assert refused(later, send(welcome)).code == LinkClose.AUTH_FAILED


def test_one_sides_mac_does_not_pass_for_the_others() -> None:
    ts, ws = listener(), dialer()
    hello = orjson.loads(ts.hello())
    auth = orjson.loads(auth_for(ws, orjson.dumps(hello).decode()))
    # A listener that echoes the auth's MAC as its welcome's, with the dialer's identity.
    echoed = {"welcome": VERSION, "identity": list(WS), "linked_for": 0, "mac": auth["mac"]}
    assert refused(ws, orjson.dumps(echoed)).code == LinkClose.AUTH_FAILED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("identity", ["ts-b", "ts", "inc-1"]),
        ("identity", ["ts-a", "ws", "inc-1"]),
        ("identity", ["ts-a", "ts", "inc-9"]),
        ("linked_for", 3600.0),
    ],
)
def test_a_welcome_changed_on_the_way_is_refused(field: str, value: Any) -> None:
    ts, ws = listener(), dialer()
    welcome = orjson.loads(ts.receive(send(auth_for(ws, ts.hello()))) or "")
    welcome[field] = value
    assert refused(ws, orjson.dumps(welcome)).code == LinkClose.AUTH_FAILED


def test_an_auth_changed_on_the_way_is_refused() -> None:
    ts, ws = listener(), dialer()
    auth = orjson.loads(auth_for(ws, ts.hello()))
    auth["identity"] = ["ws-b", "ws", "inc-2"]
    assert refused(ts, orjson.dumps(auth)).code == LinkClose.AUTH_FAILED


HELLO_NONCE = "0" * 32
MAC = "0" * 64


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"not json", "malformed handshake: not UTF-8 JSON"),
        (b'{"hello": 4, "nonce": "\xff"}', "malformed handshake: not UTF-8 JSON"),
        (b"[" * 1025 + b"]" * 1025, "malformed handshake: not UTF-8 JSON"),
        (b"[1]", "malformed handshake: not an object"),
        (b"{}", "malformed handshake: expected a hello message"),
        (b'{"welcome": 4}', "malformed handshake: expected a hello message"),
        (b'{"hello": 3, "nonce": "x"}', "link protocol version 3, expected 4"),
        (b'{"hello": "4", "nonce": "x"}', "link protocol version of type str, expected 4"),
        (b'{"hello": 4.0, "nonce": "x"}', "link protocol version of type float, expected 4"),
        (b'{"hello": 4}', "malformed handshake: a hello message has exactly nonce"),
        (
            b'{"hello": 4, "nonce": "%s", "identity": ["ts-a", "ts", "i"]}' % HELLO_NONCE.encode(),
            "malformed handshake: a hello message has exactly nonce",
        ),
        (b'{"hello": 4, "nonce": "abc"}', "malformed handshake: a nonce is 32 hex digits"),
        (b'{"hello": 4, "nonce": 7}', "malformed handshake: a nonce is 32 hex digits"),
    ],
)
def test_a_dialer_refuses_anything_but_a_hello_first(message: bytes, reason: str) -> None:
    error = refused(dialer(), message)
    assert (error.code, error.reason) == (LinkClose.PROTOCOL_ERROR, reason)


def auth_message(**fields: Any) -> bytes:
    message = {"auth": VERSION, "identity": list(WS), "nonce": HELLO_NONCE, "mac": MAC}
    return orjson.dumps({**message, **fields})


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (auth_message(identity="ws-a"), "an identity is [name, role, incarnation], three strings"),
        (
            auth_message(identity=["ws-a", "ws"]),
            "an identity is [name, role, incarnation], three strings",
        ),
        (
            auth_message(identity=["ws-a", "ws", 1]),
            "an identity is [name, role, incarnation], three strings",
        ),
        (auth_message(identity=["ws-a", "gateway", "i"]), "unknown role"),
        (auth_message(identity=["", "ws", "i"]), "a name is 1 to 255 printable characters"),
        (
            auth_message(identity=["ws-a", "ws", "x" * 256]),
            "a name is 1 to 255 printable characters",
        ),
        (
            auth_message(identity=["ws-a\nERROR forged", "ws", "i"]),
            "a name is 1 to 255 printable characters",
        ),
        (auth_message(nonce="A" * 32), "a nonce is 32 hex digits"),
        (auth_message(mac="0" * 63), "a mac is 64 hex digits"),
        (auth_message(mac=None), "a mac is 64 hex digits"),
    ],
)
def test_a_listener_refuses_a_malformed_auth(message: bytes, reason: str) -> None:
    ts = listener()
    ts.hello()
    error = refused(ts, message)
    assert (error.code, error.reason) == (
        LinkClose.PROTOCOL_ERROR,
        f"malformed handshake: {reason}",
    )


@pytest.mark.parametrize("linked_for", [-1.0, "12", True, None])
def test_a_dialer_refuses_a_welcome_without_a_number_of_seconds(linked_for: Any) -> None:
    ts, ws = listener(), dialer()
    welcome = orjson.loads(ts.receive(send(auth_for(ws, ts.hello()))) or "")
    welcome["linked_for"] = linked_for
    error = refused(ws, orjson.dumps(welcome))
    assert (error.code, error.reason) == (
        LinkClose.PROTOCOL_ERROR,
        "malformed handshake: linked_for is not a number of seconds",
    )


def test_nothing_is_taken_once_open_or_failed() -> None:
    ts, ws = listener(), dialer()
    auth = auth_for(ws, ts.hello())
    welcome = ts.receive(send(auth))
    assert welcome is not None
    ws.receive(send(welcome))
    assert refused(ts, send(auth)).reason == "malformed handshake: a message in state open"
    assert refused(ws, send(welcome)).reason == "malformed handshake: a message in state open"
    failed = dialer()
    refused(failed, b"{}")
    error = refused(failed, send(listener().hello()))  # a good hello, too late
    assert error.reason == "malformed handshake: a message in state failed"


def test_there_is_no_handshake_without_a_secret_and_no_hello_from_a_dialer() -> None:
    with pytest.raises(ValueError, match="needs the cluster secret"):
        Handshake(TS, "", listener=True)
    with pytest.raises(RuntimeError, match="only a listener says hello"):
        dialer().hello()


# Properties: whatever arrives, the answer is a reply or a HandshakeError with the right
# code, never another exception, and never an open handshake without the MACs.

anything = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    wild_values.map(orjson.dumps),
    st.builds(
        lambda kind, fields: orjson.dumps({kind: VERSION, **fields}),
        st.sampled_from(list(FIELDS)),
        st.dictionaries(st.sampled_from(["identity", "nonce", "mac", "linked_for"]), wild_values),
    ),
)


@given(anything)
def test_anything_sent_to_a_listener_first_is_refused_with_the_right_code(message: bytes) -> None:
    ts = listener()
    ts.hello()
    # A well-formed auth gets as far as the MAC, which no one without the secret makes.
    code = (
        LinkClose.AUTH_FAILED if well_formed_message("auth", message) else LinkClose.PROTOCOL_ERROR
    )
    assert refused(ts, message).code == code
    assert ts.peer is None


@given(anything)
def test_anything_but_a_hello_sent_to_a_dialer_first_is_refused(message: bytes) -> None:
    ws = dialer()
    if well_formed_message("hello", message):
        auth = ws.receive(message)
        assert auth is not None and well_formed_message("auth", auth.encode())
        assert ws.state is HandshakeState.AUTH_SENT
    else:
        assert refused(ws, message).code == LinkClose.PROTOCOL_ERROR


FIELD_VALUES = st.one_of(
    wild_values,
    st.sampled_from(
        [VERSION - 1, VERSION + 1, str(VERSION), "0" * 32, "f" * 64, ["ts-b", "ts", "inc-1"]]
    ),
)


@st.composite
def changed(draw: st.DrawFn, message: dict[str, Any]) -> bytes:
    """`message` with one field added, removed or replaced."""
    field = draw(st.sampled_from([*message, "extra"]))
    out = dict(message)
    if field in out and draw(st.booleans()):
        del out[field]
    else:
        out[field] = draw(FIELD_VALUES)
    return orjson.dumps(out)


def genuine() -> tuple[Handshake, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A dialer waiting for its welcome, and the three messages of its handshake."""
    ts, ws = listener(), dialer()
    hello = ts.hello()
    auth = auth_for(ws, hello)
    welcome = ts.receive(send(auth))
    assert welcome is not None
    return ws, orjson.loads(hello), orjson.loads(auth), orjson.loads(welcome)


@given(st.data())
def test_a_hello_changed_is_refused_unless_still_a_hello(data: st.DataObject) -> None:
    _, hello, _, _ = genuine()
    message = data.draw(changed(hello))
    ws = dialer()
    if well_formed_message("hello", message):
        assert ws.receive(message) is not None
    else:
        assert refused(ws, message).code == LinkClose.PROTOCOL_ERROR


@given(st.data())
def test_an_auth_changed_is_refused_with_the_right_code(data: st.DataObject) -> None:
    _, _, auth, _ = genuine()
    message = data.draw(changed(auth))
    ts = listener()
    ts.hello()  # any auth but one for this listener's own nonce fails its MAC
    code = (
        LinkClose.AUTH_FAILED if well_formed_message("auth", message) else LinkClose.PROTOCOL_ERROR
    )
    assert refused(ts, message).code == code


@given(st.data())
def test_a_welcome_changed_is_refused_with_the_right_code(data: st.DataObject) -> None:
    ws, _, _, welcome = genuine()
    message = data.draw(changed(welcome))
    if message == orjson.dumps(welcome):
        return  # the same value drawn again: that is the genuine welcome
    code = (
        LinkClose.AUTH_FAILED
        if well_formed_message("welcome", message)
        else LinkClose.PROTOCOL_ERROR
    )
    assert refused(ws, message).code == code
    assert (ws.peer, ws.peer_linked_for) == (None, 0.0)
