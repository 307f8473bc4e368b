"""The Phoenix codecs, without sockets."""

from __future__ import annotations

import orjson
import pytest

from app.phoenix import (
    BroadcastFrames,
    FrameError,
    Message,
    Vsn,
    decode_binary,
    decode_text,
    encode_push,
    encode_reply,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, Vsn.V1),
        ("1.0.0", Vsn.V1),
        ("1.0.7", Vsn.V1),
        ("2.0.0", Vsn.V2),
        ("2.0.3", Vsn.V2),
        ("2.1.0", None),
        ("3.0.0", None),
        ("2.0", None),
        ("2.0.x", None),
        ("banana", None),
        ("", None),
    ],
)
def test_vsn_negotiation(given: str | None, expected: Vsn | None) -> None:
    assert Vsn.negotiate(given) is expected


def test_v2_frames_as_the_official_client_sends_them() -> None:
    assert decode_text('["6","6","room:lobby","phx_join",{"nick":"n1"}]', Vsn.V2) == Message(
        "6", "6", "room:lobby", "phx_join", {"nick": "n1"}
    )
    assert decode_text('[null,"9","phoenix","heartbeat",{}]', Vsn.V2) == Message(
        None, "9", "phoenix", "heartbeat", {}
    )


def test_v2_ignores_elements_after_the_fifth() -> None:
    assert decode_text('["1","2","t","e",{},"extra"]', Vsn.V2).payload == {}


def test_v1_frames() -> None:
    frame = '{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1"}'
    assert decode_text(frame, Vsn.V1) == Message(None, "1", "room:lobby", "phx_join", {})
    frame = '{"topic":"t","event":"e","payload":[],"ref":null,"join_ref":"4"}'
    assert decode_text(frame, Vsn.V1) == Message("4", None, "t", "e", [])


@pytest.mark.parametrize(
    ("frame", "vsn", "code", "reason"),
    [
        ("{", Vsn.V2, 1007, "frame is not valid JSON"),
        ("[1,2", Vsn.V1, 1007, "frame is not valid JSON"),
        ('{"a":1}', Vsn.V2, 1003, "expected a [join_ref, ref, topic, event, payload] array"),
        (
            '["1","2","t","e"]',
            Vsn.V2,
            1003,
            "expected a [join_ref, ref, topic, event, payload] array",
        ),
        ('[7,"2","t","e",{}]', Vsn.V2, 1003, "join_ref must be a string or null"),
        ('["1",2,"t","e",{}]', Vsn.V2, 1003, "ref must be a string or null"),
        ('["1","2",null,"e",{}]', Vsn.V2, 1003, "topic must be a string"),
        ('["1","2","t",{},{}]', Vsn.V2, 1003, "event must be a string"),
        (
            '["1","2","t","e",{}]',
            Vsn.V1,
            1003,
            "expected an object with topic, event, payload and ref",
        ),
        (
            '{"topic":"t","event":"e","payload":{}}',
            Vsn.V1,
            1003,
            "expected an object with topic, event, payload and ref",
        ),
    ],
)
def test_bad_text_frames(frame: str, vsn: Vsn, code: int, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        decode_text(frame, vsn)
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
    with pytest.raises(FrameError) as err:
        decode_binary(frame)
    assert (err.value.code, err.value.reason) == (code, reason)


def test_replies_and_pushes() -> None:
    assert orjson.loads(encode_reply(Vsn.V2, "6", "7", "t", "ok", {})) == [
        "6",
        "7",
        "t",
        "phx_reply",
        {"status": "ok", "response": {}},
    ]
    assert orjson.loads(encode_reply(Vsn.V1, "6", "7", "t", "error", {"reason": "x"})) == {
        "topic": "t",
        "event": "phx_reply",
        "payload": {"status": "error", "response": {"reason": "x"}},
        "ref": "7",
    }
    assert orjson.loads(encode_push(Vsn.V2, "6", "6", "t", "phx_close", {})) == [
        "6",
        "6",
        "t",
        "phx_close",
        {},
    ]


def test_broadcast_frames_share_everything_but_the_join_ref() -> None:
    frames = BroadcastFrames('topics:"quoted"', "event", b'{"message":"hi"}', binary=False)
    assert orjson.loads(frames.v2("1")) == [
        "1",
        None,
        'topics:"quoted"',
        "event",
        {"message": "hi"},
    ]
    assert orjson.loads(frames.v2(None)) == [
        None,
        None,
        'topics:"quoted"',
        "event",
        {"message": "hi"},
    ]
    assert orjson.loads(frames.v2('a"b')) == [
        'a"b',
        None,
        'topics:"quoted"',
        "event",
        {"message": "hi"},
    ]
    assert orjson.loads(frames.v1() or b"") == {
        "topic": 'topics:"quoted"',
        "event": "event",
        "payload": {"message": "hi"},
        "ref": None,
    }


def test_binary_broadcast_is_a_binary_push_with_the_join_ref() -> None:
    frames = BroadcastFrames("room:lobby", "bin_push", b"\x04\x05", binary=True)
    # The protocol page's server push "bin_push" <04 05> with join_ref 6.
    assert frames.v2("6") == bytes.fromhex("00010a08") + b"6room:lobbybin_push\x04\x05"
    assert frames.v2(None) == bytes.fromhex("00000a08") + b"room:lobbybin_push\x04\x05"
    assert frames.v1() is None
