"""pg frames: builders, parsers (examples, then any value a peer can send), the digest."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given

from app.pg import Member, wire
from app.pg.wire import PgFrameError
from tests.pg.frames import arrived, nested_json, pg_frames

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


DEEP = orjson.loads(nested_json(1000))  # deeper than Python's recursion limit


@pytest.mark.parametrize(
    ("parse", "frame"),
    [
        (wire.header, DEEP),
        (wire.header, ["join", "s", DEEP]),
        (wire.parse_discover, ["discover", "s", 1, DEEP, 0]),
        (wire.parse_sync, ["sync", "s", 1, DEEP]),
        (wire.parse_sync, ["sync", "s", 1, [["g", DEEP]]]),
        (wire.parse_join, ["join", "s", 1, "g", DEEP]),
        (wire.parse_join, ["join", "s", 1, "g", [1, DEEP]]),
        (wire.parse_leave, ["leave", "s", 1, [1], DEEP]),
        (wire.parse_digest, ["digest", "s", 1, DEEP]),
    ],
)
def test_frames_deeper_than_python_recurses_are_refused_in_one_short_line(
    parse: Any, frame: wire.PgFrame
) -> None:
    with pytest.raises(PgFrameError) as err:
        parse(frame)
    assert len(str(err.value)) < 300


def test_values_in_errors_are_json_cut_to_200_characters() -> None:
    with pytest.raises(PgFrameError) as err:
        wire.parse_digest(["digest", "s", 1, ["x" * 500]])
    assert str(err.value) == 'bad digest: ["digest","s",1,["' + "x" * 182 + "..."
    with pytest.raises(
        PgFrameError, match=r"^bad frame header: \(a set, nested too deep or not JSON\)$"
    ):
        wire.header({1})


PARSERS = {
    wire.DISCOVER: wire.parse_discover,
    wire.SYNC: wire.parse_sync,
    wire.JOIN: wire.parse_join,
    wire.LEAVE: wire.parse_leave,
    wire.DIGEST: wire.parse_digest,
}


def strings(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def ints(value: object) -> bool:
    return type(value) is list and all(type(v) is int for v in value)


# What each parser returns, when it does not refuse the frame.
RESULTS = {
    wire.DISCOVER: lambda r: type(r[0]) is int and type(r[1]) is bool,
    wire.SYNC: lambda r: all(type(g) is str and ints(ids) for g, ids in r),
    wire.JOIN: lambda r: type(r[0]) is str and ints(r[1]),
    wire.LEAVE: lambda r: ints(r[0]) and strings(r[1]),
    wire.DIGEST: lambda r: type(r) is str,
}


@given(pg_frames("s"))
def test_any_frame_is_refused_or_parses_to_values_of_the_documented_types(frame: Any) -> None:
    frame = arrived(frame)
    try:
        kind, scope, instance = wire.header(frame)
    except PgFrameError:
        return
    assert (type(kind), type(scope), type(instance)) == (str, str, int)
    if kind not in PARSERS:
        return  # scope_down has nothing more to parse, other kinds are the scope's to refuse
    try:
        result = PARSERS[kind](frame)
    except PgFrameError:
        return
    assert RESULTS[kind](result)


def test_digest_is_canonical_and_sensitive() -> None:
    base = wire.digest({"g": {m1: 1, m2: 2}, "h": {m1: 1}})
    assert base == wire.digest({"h": {m1: 1}, "g": {m2: 2, m1: 1}})  # order does not matter
    assert base != wire.digest({"g": {m1: 1, m2: 1}, "h": {m1: 1}})  # multiplicity does
    assert base != wire.digest({"g": {m1: 1, m2: 2}, "h2": {m1: 1}})  # group names do
    assert wire.digest({}) == wire.digest({})
    assert len(base) == 32
