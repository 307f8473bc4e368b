"""The Phoenix serializers, without sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.pg.frames import json_values
from ws_gateway.serializers import (
    V1,
    V2,
    Broadcast,
    ClientFrameError,
    Message,
    Serializer,
    encode_reply,
    negotiate,
)


def unframe(data: bytes) -> bytes:
    """The message inside a short unmasked server frame (a 2-byte header)."""
    assert data[1] < 126
    return data[2:]


def decode_text(data: str, serializer: Serializer) -> Message:
    return serializer.decode(data.encode(), True)


def decode_binary(data: bytes) -> Message:
    return V2.decode(data, False)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, V1),
        ("1.0.0", V1),
        ("1.0.7", V1),
        ("2.0.0", V2),
        ("2.0.3", V2),
        ("2.1.0", None),
        ("3.0.0", None),
        ("2.0", None),
        ("2.0.x", None),
        ("banana", None),
        ("", None),
    ],
)
def test_vsn_negotiation(given: str | None, expected: Serializer | None) -> None:
    assert negotiate(given) is expected


def test_v2_frames_as_the_official_client_sends_them() -> None:
    assert decode_text('["6","6","room:lobby","phx_join",{"nick":"n1"}]', V2) == Message(
        "6", "6", "room:lobby", "phx_join", {"nick": "n1"}, b'{"nick":"n1"}'
    )
    assert decode_text('[null,"9","phoenix","heartbeat",{}]', V2) == Message(
        None, "9", "phoenix", "heartbeat", {}, b"{}"
    )


def test_v2_ignores_elements_after_the_fifth() -> None:
    message = decode_text('["1","2","t","e",{},"extra"]', V2)
    assert (message.payload, message.raw) == ({}, None)  # no bytes to forward: re-encoded


def test_payloads_keep_the_bytes_the_client_sent() -> None:
    frame = ' [ "1" , null,"t\\"q",  "publish", ["ev" , {"n": 12345678901234567890123} ]\n] '
    message = decode_text(frame, V2)
    assert message.payload == ["ev", {"n": 1.2345678901234568e22}]
    assert message.raw == b'["ev" , {"n": 12345678901234567890123} ]'
    frame = '{"payload": {"n": 99999999999999999999, "s": "}"} ,"topic":"t","event":"e","ref":"1"}'
    assert decode_text(frame, V1).raw == b'{"n": 99999999999999999999, "s": "}"}'


def test_v1_frames() -> None:
    frame = '{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1"}'
    assert decode_text(frame, V1) == Message(None, "1", "room:lobby", "phx_join", {})
    frame = '{"topic":"t","event":"e","payload":[],"ref":null,"join_ref":"4"}'
    assert decode_text(frame, V1) == Message("4", None, "t", "e", [], b"[]")


@pytest.mark.parametrize(
    ("frame", "serializer", "code", "reason"),
    [
        ("{", V2, 1007, "frame is not valid JSON"),
        ("[1,2", V1, 1007, "frame is not valid JSON"),
        ('{"a":1}', V2, 1003, "expected a [join_ref, ref, topic, event, payload] array"),
        (
            '["1","2","t","e"]',
            V2,
            1003,
            "expected a [join_ref, ref, topic, event, payload] array",
        ),
        ('[7,"2","t","e",{}]', V2, 1003, "join_ref must be a string or null"),
        ('["1",2,"t","e",{}]', V2, 1003, "ref must be a string or null"),
        ('["1","2",null,"e",{}]', V2, 1003, "topic must be a string"),
        ('["1","2","t",{},{}]', V2, 1003, "event must be a string"),
        (
            '["1","2","t","e",{}]',
            V1,
            1003,
            "expected an object with topic, event, payload and ref",
        ),
        (
            '{"topic":"t","event":"e","payload":{}}',
            V1,
            1003,
            "expected an object with topic, event, payload and ref",
        ),
    ],
)
def test_bad_text_frames(frame: str, serializer: Serializer, code: int, reason: str) -> None:
    with pytest.raises(ClientFrameError) as err:
        decode_text(frame, serializer)
    assert (err.value.code, err.value.reason) == (code, reason)


def test_binary_push_from_the_official_client() -> None:
    # channel.push("bin_up", <de ad>) on join_ref 6 with ref 8 (protocol page, section 5)
    frame = bytes.fromhex("0001010a06") + b"68room:lobbybin_up" + b"\xde\xad"
    assert decode_binary(frame) == Message("6", "8", "room:lobby", "bin_up", b"\xde\xad")


def test_binary_sizes_count_bytes_not_characters() -> None:
    topic = "salle:été".encode()
    frame = bytes([0, 0, 1, len(topic), 1]) + b"1" + topic + b"e" + b"\x00"
    assert decode_binary(frame) == Message(None, "1", "salle:été", "e", b"\x00")


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"\x00\x01", 1003, "binary frame too short"),
        (b"\x01\x00\x00\x00\x00", 1003, "binary frame kind 1 is not a push"),
        (b"\x00\x00\x00\x09\x01abc", 1003, "binary frame shorter than its header says"),
        (b"\x00\x00\x00\x01\x01\xffe", 1007, "binary frame header is not UTF-8"),
    ],
)
def test_bad_binary_frames(frame: bytes, code: int, reason: str) -> None:
    with pytest.raises(ClientFrameError) as err:
        decode_binary(frame)
    assert (err.value.code, err.value.reason) == (code, reason)


def test_replies_and_pushes() -> None:
    assert orjson.loads(unframe(encode_reply(V2, "6", "7", "t", "ok", {}))) == [
        "6",
        "7",
        "t",
        "phx_reply",
        {"status": "ok", "response": {}},
    ]
    assert orjson.loads(unframe(encode_reply(V1, "6", "7", "t", "error", {"reason": "x"}))) == {
        "topic": "t",
        "event": "phx_reply",
        "payload": {"status": "error", "response": {"reason": "x"}},
        "ref": "7",
    }
    assert orjson.loads(unframe(V2.encode("6", "6", "t", "phx_close", {}))) == [
        "6",
        "6",
        "t",
        "phx_close",
        {},
    ]


def test_broadcasts_share_everything_but_the_join_ref() -> None:
    broadcast = Broadcast('topics:"quoted"', "event", b'{"message":"hi"}', binary=False)
    body = ['topics:"quoted"', "event", {"message": "hi"}]
    for join_ref in ("1", None, 'a"b'):
        frame = V2.fastlane(broadcast, join_ref)
        assert frame is not None
        assert orjson.loads(unframe(frame)) == [join_ref, None, *body]
    assert orjson.loads(unframe(V1.fastlane(broadcast, "1") or b"")) == {
        "topic": 'topics:"quoted"',
        "event": "event",
        "payload": {"message": "hi"},
        "ref": None,
    }


def test_lanes_v2_by_join_ref_v1_one_for_all() -> None:
    assert V2.lane("1") != V2.lane("2")
    assert V2.lane(None) != V1.lane(None)
    assert V1.lane("1") == V1.lane("2")


def test_binary_broadcast_is_a_binary_push_with_the_join_ref() -> None:
    broadcast = Broadcast("room:lobby", "bin_push", b"\x04\x05", binary=True)
    # The protocol page's server push "bin_push" <04 05> with join_ref 6.
    frame = V2.fastlane(broadcast, "6")
    assert frame is not None and frame[0] == 0x82
    assert unframe(frame) == bytes.fromhex("00010a08") + b"6room:lobbybin_push\x04\x05"
    frame = V2.fastlane(broadcast, None)
    assert frame is not None
    assert unframe(frame) == bytes.fromhex("00000a08") + b"room:lobbybin_push\x04\x05"
    assert V1.fastlane(broadcast, None) is None


def test_v1_refuses_binary_frames() -> None:
    with pytest.raises(ClientFrameError) as err:
        V1.decode(b"\x00\x00\x00\x01\x01te", False)
    assert (err.value.code, err.value.reason) == (1003, "binary frames need vsn=2.0.0")


# Fuzzing: whatever a client sends, a serializer answers with a Message or a
# ClientFrameError carrying a close code, nothing else.

SERIALIZERS = st.sampled_from([V1, V2])
FRAME_CODES = {1003, 1007}
texts = st.one_of(st.text(max_size=30), st.sampled_from(["", "phoenix", "x" * 300, "\u202e"]))
refs = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(SERIALIZERS, st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_are_a_message_or_a_close(
    serializer: Serializer, data: bytes, text: bool
) -> None:
    try:
        message = serializer.decode(data, text)
    except ClientFrameError as exc:
        assert exc.code in FRAME_CODES and exc.reason
    else:
        assert isinstance(message.topic, str) and isinstance(message.event, str)


@given(SERIALIZERS, json_values)
def test_any_json_is_a_message_or_a_close(serializer: Serializer, value: Any) -> None:
    try:
        serializer.decode(orjson.dumps(value), True)
    except ClientFrameError as exc:
        assert exc.code == 1003  # valid JSON of the wrong shape: unsupported data


@given(refs, refs, texts, texts, json_values)
def test_frames_of_the_right_shape_with_any_fields(
    join_ref: Any, ref: Any, topic: str, event: str, payload: Any
) -> None:
    for serializer, frame in (
        (V2, orjson.dumps([join_ref, ref, topic, event, payload])),
        (
            V1,
            orjson.dumps(
                {
                    "join_ref": join_ref,
                    "ref": ref,
                    "topic": topic,
                    "event": event,
                    "payload": payload,
                }
            ),
        ),
    ):
        well_typed = all(r is None or isinstance(r, str) for r in (join_ref, ref))
        try:
            message = serializer.decode(frame, True)
        except ClientFrameError as exc:
            assert not well_typed and exc.code == 1003
            continue
        assert well_typed
        assert (message.join_ref, message.ref, message.topic, message.event) == (
            join_ref,
            ref,
            topic,
            event,
        )
        # What is forwarded is exactly the payload's own bytes.
        if message.raw is not None:
            assert orjson.loads(message.raw) == orjson.loads(orjson.dumps(payload))


@given(
    st.text(max_size=20),
    st.text(max_size=20),
    json_values,
    st.one_of(st.none(), st.text(max_size=5)),
)
def test_broadcasts_decode_to_what_was_sent(
    topic: str, event: str, payload: Any, join_ref: str | None
) -> None:
    encoded = orjson.dumps(payload)
    broadcast = Broadcast(topic, event, encoded, binary=False)
    v2 = V2.fastlane(broadcast, join_ref)
    v1 = V1.fastlane(broadcast, join_ref)
    assert v2 is not None and v1 is not None
    assert orjson.loads(unframe_any(v2)) == [join_ref, None, topic, event, orjson.loads(encoded)]
    assert orjson.loads(unframe_any(v1)) == {
        "topic": topic,
        "event": event,
        "payload": orjson.loads(encoded),
        "ref": None,
    }


def unframe_any(data: bytes) -> bytes:
    """The message inside an unmasked server frame of any length."""
    size = data[1]
    if size < 126:
        return data[2:]
    return data[4:] if size == 126 else data[10:]
