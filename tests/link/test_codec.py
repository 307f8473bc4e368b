"""Node link frames, without sockets."""

from __future__ import annotations

import pytest

from app.link import codec
from app.link.codec import (
    LinkAck,
    LinkDeliver,
    LinkFrameError,
    LinkPg,
    LinkPublish,
    LinkSubscribe,
    LinkUnsubscribe,
)


def test_a_batch_decodes_to_its_frames_in_order() -> None:
    batch = b"".join(
        [
            codec.subscribe(3, "rooms:é"),
            codec.publish(7, 42, "rooms:é", "event", False, b'{"a":1}'),
            codec.ack(7, 2**40),
            codec.deliver(9, 1.5, 42, "rooms:é", "publish", True, b"\x00\xff"),
            codec.pg(["sync", "dps", 1, [["g", [1, 2]]]]),
            codec.unsubscribe("rooms:é"),
        ]
    )
    assert list(codec.decode(batch)) == [
        LinkSubscribe(3, "rooms:é"),
        LinkPublish(7, 42, "rooms:é", "event", False, b'{"a":1}'),
        LinkAck(7, 2**40),
        LinkDeliver(9, 1.5, 42, "rooms:é", "publish", True, b"\x00\xff"),
        LinkPg(["sync", "dps", 1, [["g", [1, 2]]]]),
        LinkUnsubscribe("rooms:é"),
    ]


def test_empty_and_large_payloads() -> None:
    big = b"x" * 200_000
    empty = codec.deliver(1, 0.0, 0, "t", "e", False, b"")
    frames = empty + codec.deliver(2, 0.0, 0, "t", "e", False, big)
    assert [f.payload for f in codec.decode(frames)] == [b"", big]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "batch",
    [
        b"Z",
        codec.subscribe(1, "topic")[:-1],
        codec.publish(1, 0, "t", "e", False, b"{}")[:-1],
        codec.ack(1, 1)[:5],
        b"S\x02\xff\xfe",
        b"G\x00\x00\x00\x02{x",
    ],
)
def test_malformed_batches_are_refused(batch: bytes) -> None:
    with pytest.raises(LinkFrameError):
        list(codec.decode(batch))
