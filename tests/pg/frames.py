"""Hypothesis strategies for what a peer can put in a pg frame (or any JSON it sends).

`json_values` are plain JSON values, which survive `orjson.dumps` and `orjson.loads`
unchanged. `nested` stands for JSON nested deeper than Python's recursion limit, which no
orjson-built value can be (orjson writes at most 254 levels): an `orjson.Fragment` of
raw JSON text, written as it is. `pg_frames` are frames of pg's shape whose fields may
hold anything. Whatever holds a fragment is read as a peer's frame arrives, with
`arrived`.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from app.pg import wire

ORJSON_DEPTH = 1024  # the deepest JSON orjson.loads reads

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what orjson reads as int
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def nested_json(depth: int) -> bytes:
    """`depth` nested arrays, as JSON text."""
    return b"[" * depth + b"]" * depth


# Deeper than Python's recursion limit (1000) and than orjson writes; read as frames,
# inside a frame of a few levels, still within what orjson.loads reads.
nested = st.integers(990, ORJSON_DEPTH - 8).map(lambda depth: orjson.Fragment(nested_json(depth)))
wild_values = json_values | nested


def arrived(value: Any) -> Any:
    """`value` as a peer's frame arrives: written as JSON, read by orjson."""
    return orjson.loads(orjson.dumps(value))


KINDS = [wire.DISCOVER, wire.SYNC, wire.JOIN, wire.LEAVE, wire.SCOPE_DOWN, wire.DIGEST]

ids = st.lists(st.integers(1, 6), max_size=5)
groups = st.sampled_from(["g", "h", ""])


@st.composite
def well_formed(draw: st.DrawFn, scope: str) -> list[Any]:
    """A frame as a pg node sends it, for `scope` or another, from instance 1 or 2."""
    kind = draw(st.sampled_from(KINDS))
    head = [kind, draw(st.sampled_from([scope, "other"])), draw(st.integers(1, 2))]
    body: list[Any] = {
        wire.DISCOVER: lambda: [wire.PROTOCOL_VERSION, draw(st.integers(0, 1))],
        wire.SYNC: lambda: [draw(st.lists(st.tuples(groups, ids).map(list), max_size=3))],
        wire.JOIN: lambda: [draw(groups), draw(ids)],
        wire.LEAVE: lambda: [draw(ids), draw(st.lists(groups, max_size=3))],
        wire.SCOPE_DOWN: lambda: [],
        wire.DIGEST: lambda: [draw(st.text(max_size=32))],
    }[kind]()
    return head + body


@st.composite
def pg_frames(draw: st.DrawFn, scope: str) -> Any:
    """A well-formed frame for `scope` (or another), one with a field replaced, cut or
    added, or anything at all."""
    frame = draw(well_formed(scope))
    change = draw(st.sampled_from(["none", "replace", "replace inside", "cut", "add", "anything"]))
    if change == "replace":
        frame[draw(st.integers(0, len(frame) - 1))] = draw(wild_values)
    elif change == "replace inside":  # an id, a group, a sync entry
        lists = [field for field in frame if type(field) is list and field]
        if lists:
            inner = draw(st.sampled_from(lists))
            inner[draw(st.integers(0, len(inner) - 1))] = draw(wild_values)
    elif change == "cut":
        del frame[draw(st.integers(0, len(frame) - 1)) :]
    elif change == "add":
        frame.append(draw(wild_values))
    elif change == "anything":
        return draw(wild_values)
    return frame
