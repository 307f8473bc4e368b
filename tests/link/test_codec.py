"""Node link frames, without sockets: examples of each rule, then properties over\nwell-formed, broken and arbitrary batches (tests/link/inputs.py)."""

from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import given

from app.link import codec
from app.link.codec import (
    LinkAck,
    LinkDeliver,
    LinkFrame,
    LinkFrameError,
    LinkPg,
    LinkPresenceQuery,
    LinkPresenceState,
    LinkPublish,
    LinkSubscribe,
    LinkTrack,
    LinkUnsubscribe,
    LinkUntrack,
)
from tests.link.inputs import any_batches, batches, broken_batches, encode


def test_a_batch_decodes_to_its_frames_in_order() -> None:
    batch = b"".join(
        [
            codec.subscribe(3, "rooms:é"),
            codec.publish(7, 42, "rooms:é", "event", False, b'{"a":1}'),
            codec.ack(7, 2**40),
            codec.deliver(9, 1.5, 42, "rooms:é", "publish", True, b"\x00\xff"),
            codec.pg(["sync", "dps", 1, [["g", [1, 2]]]]),
            codec.unsubscribe("rooms:é"),
            codec.deliver(10, 2.5, 0, "rooms:é", "presence_diff", False, b"{}", presence=True),
            codec.track("rooms:é", "alice", "r2", "r1", b'{"phx_ref":"r2"}'),
            codec.track("rooms:é", "bob", "r3", None, b"{}"),
            codec.untrack("rooms:é", "alice", "r2"),
            codec.presence_query(11, "rooms:é"),
            codec.presence_state(11, b'{"bob":{"metas":[{}]}}'),
        ]
    )
    assert list(codec.decode(batch)) == [
        LinkSubscribe(3, "rooms:é"),
        LinkPublish(7, 42, "rooms:é", "event", False, b'{"a":1}'),
        LinkAck(7, 2**40),
        LinkDeliver(9, 1.5, 42, "rooms:é", "publish", True, b"\x00\xff"),
        LinkPg(["sync", "dps", 1, [["g", [1, 2]]]]),
        LinkUnsubscribe("rooms:é"),
        LinkDeliver(10, 2.5, 0, "rooms:é", "presence_diff", False, b"{}", True),
        LinkTrack("rooms:é", "alice", "r2", "r1", b'{"phx_ref":"r2"}'),
        LinkTrack("rooms:é", "bob", "r3", None, b"{}"),
        LinkUntrack("rooms:é", "alice", "r2"),
        LinkPresenceQuery(11, "rooms:é"),
        LinkPresenceState(11, b'{"bob":{"metas":[{}]}}'),
    ]


def test_empty_and_large_payloads() -> None:
    big = b"x" * 200_000
    empty = codec.deliver(1, 0.0, 0, "t", "e", False, b"")
    frames = empty + codec.deliver(2, 0.0, 0, "t", "e", False, big)
    assert [f.payload for f in codec.decode(frames)] == [b"", big]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        (b"", "empty batch"),
        (b"Z", "unknown frame kind b'Z'"),
        (codec.subscribe(1, "topic")[:-1], "frame truncated"),
        (codec.publish(1, 0, "t", "e", False, b"{}")[:-1], "frame truncated"),
        (codec.ack(1, 1)[:5], "frame truncated"),
        (codec.pg([1])[:1] + b"\xff\xff\xff\xff[1]", "frame truncated"),  # 4 GiB declared
        (b"S" + bytes(8) + b"\x02\xff\xfe", "undecodable frame: 'utf-8' codec can't decode"),
        (b"G\x00\x00\x00\x02{x", "undecodable frame: unexpected character"),
        (
            codec.publish(1, 0, "t", "e", False, b"{}").replace(
                b"\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x02"
            ),
            "unknown flags 0x02",
        ),
        (codec.deliver(1, float("inf"), 0, "t", "e", False, b"{}"), "sent_at inf is not a time"),
        (
            codec.deliver(1, 0.0, 0, "t", "e", False, b"{}").replace(
                b"\x00\x00\x00\x00\x02{}", b"\x04\x00\x00\x00\x02{}"
            ),
            "unknown flags 0x04",
        ),
        (codec.track("t", "k", "r", None, b"{}")[:-1], "frame truncated"),
        (
            b"G" + struct.pack("!I", 2050) + b"[" * 1025 + b"]" * 1025,
            "undecodable frame: depth limit exceeded",
        ),
    ],
)
def test_malformed_batches_are_refused(batch: bytes, error: str) -> None:
    with pytest.raises(LinkFrameError) as err:
        list(codec.decode(batch))
    assert str(err.value).startswith(error)


def test_a_pg_frame_as_deep_as_orjson_reads_decodes() -> None:
    text = b"[" * 1024 + b"]" * 1024
    [frame] = codec.decode(b"G" + struct.pack("!I", len(text)) + text)
    assert isinstance(frame, LinkPg) and type(frame.frame) is list


# Properties: `decode` takes exactly what the builders make, and nothing else.


@given(batches)
def test_a_batch_decodes_to_exactly_the_frames_encoded(frames: list[LinkFrame]) -> None:
    assert list(codec.decode(b"".join(map(encode, frames)))) == frames


@given(broken_batches())
def test_a_batch_with_a_broken_frame_is_refused_after_the_frames_before_it(
    broken: tuple[list[LinkFrame], bytes],
) -> None:
    good, batch = broken
    decoded: list[LinkFrame] = []
    with pytest.raises(LinkFrameError):
        decoded.extend(codec.decode(batch))
    assert decoded == good


@given(any_batches)
def test_any_bytes_are_refused_or_are_exactly_the_encoding_of_their_frames(batch: bytes) -> None:
    try:
        frames = list(codec.decode(batch))
    except LinkFrameError:
        return
    assert frames
    if not any(isinstance(frame, LinkPg) for frame in frames):
        assert b"".join(map(encode, frames)) == batch
        return
    # pg frames are JSON, which has more than one spelling (and orjson writes 254 levels
    # at most, so the deepest are only read): they decode to what they say.
    try:
        spelled = b"".join(map(encode, frames))
    except orjson.JSONEncodeError:
        return
    assert list(codec.decode(spelled)) == frames
