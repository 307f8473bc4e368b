from __future__ import annotations

import orjson
import pytest

from app.pg import Member, wire
from app.pg.wire import PgFrameError

A = "a"
m1, m2 = Member(A, "i", 1), Member(A, "i", 2)


def roundtrip(frame: wire.PgFrame) -> wire.PgFrame:
    decoded: wire.PgFrame = orjson.loads(orjson.dumps(frame))
    assert decoded == frame
    return decoded


def test_builders_make_plain_json_frames() -> None:
    assert roundtrip(wire.discover("s", 3, reply=True)) == ["discover", "s", 3, 1, 1]
    assert roundtrip(wire.sync("s", 3, {"g": {m1: 2, m2: 1}})) == [
        "sync",
        "s",
        3,
        [["g", [1, 1, 2]]],
    ]
    assert roundtrip(wire.join("s", 3, "g", [1, 1])) == ["join", "s", 3, "g", [1, 1]]
    assert roundtrip(wire.leave("s", 3, [1], ["g", "g"])) == ["leave", "s", 3, [1], ["g", "g"]]
    assert roundtrip(wire.scope_down("s", 3)) == ["scope_down", "s", 3]
    assert roundtrip(wire.digest_frame("s", 3, "ab")) == ["digest", "s", 3, "ab"]


def test_parsers_accept_what_builders_make() -> None:
    assert wire.header(wire.join("s", 3, "g", [1])) == ("join", "s", 3)
    assert wire.parse_discover(wire.discover("s", 1, reply=False)) == (wire.PROTOCOL_VERSION, False)
    assert wire.parse_sync(wire.sync("s", 1, {"g": {m1: 1}})) == [("g", [1])]
    assert wire.parse_join(wire.join("s", 1, "g", [1, 2])) == ("g", [1, 2])
    assert wire.parse_leave(wire.leave("s", 1, [2], ["g"])) == ([2], ["g"])
    assert wire.parse_digest(wire.digest_frame("s", 1, "x")) == "x"


@pytest.mark.parametrize(
    "frame",
    [
        None,
        "join",
        [],
        ["join", "s"],
        ["join", "s", "1"],
        [1, "s", 1],
        ["join", 2, 1],
        ["join", "s", True],
    ],
)
def test_bad_headers(frame: object) -> None:
    with pytest.raises(PgFrameError):
        wire.header(frame)


@pytest.mark.parametrize(
    ("parse", "frame"),
    [
        (wire.parse_discover, ["discover", "s", 1, 1]),
        (wire.parse_discover, ["discover", "s", 1, "1", 0]),
        (wire.parse_discover, ["discover", "s", 1, 1, 2]),
        (wire.parse_discover, ["discover", "s", 1, 1, True]),
        (wire.parse_sync, ["sync", "s", 1, {"g": [1]}]),
        (wire.parse_sync, ["sync", "s", 1, [["g"]]]),
        (wire.parse_sync, ["sync", "s", 1, [[1, [1]]]]),
        (wire.parse_sync, ["sync", "s", 1, [["g", [1, "2"]]]]),
        (wire.parse_sync, ["sync", "s", 1, [["g", [1.5]]]]),
        (wire.parse_join, ["join", "s", 1, 7, [1]]),
        (wire.parse_join, ["join", "s", 1, "g", 1]),
        (wire.parse_join, ["join", "s", 1, "g", [True]]),
        (wire.parse_leave, ["leave", "s", 1, [1], "g"]),
        (wire.parse_leave, ["leave", "s", 1, [1], [None]]),
        (wire.parse_leave, ["leave", "s", 1, [None], ["g"]]),
        (wire.parse_digest, ["digest", "s", 1, 5]),
        (wire.parse_digest, ["digest", "s", 1, "x", "y"]),
    ],
)
def test_bad_bodies(parse: object, frame: wire.PgFrame) -> None:
    with pytest.raises(PgFrameError):
        parse(frame)  # type: ignore[operator]


def test_digest_is_canonical_and_sensitive() -> None:
    base = wire.digest({"g": {m1: 1, m2: 2}, "h": {m1: 1}})
    assert base == wire.digest({"h": {m1: 1}, "g": {m2: 2, m1: 1}})  # order does not matter
    assert base != wire.digest({"g": {m1: 1, m2: 1}, "h": {m1: 1}})  # multiplicity does
    assert base != wire.digest({"g": {m1: 1, m2: 2}, "h2": {m1: 1}})  # group names do
    assert wire.digest({}) == wire.digest({})
    assert len(base) == 32
