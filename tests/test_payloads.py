"""Payload bytes cut out of valid JSON (ws_gateway/payloads.py): the members of an object,
and an object without some of them, as the client wrote them."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tests.pg.frames import json_values
from ws_gateway.payloads import after_head, member, v2_payload, without


def test_member_is_the_exact_bytes_of_the_last_value_of_a_key() -> None:
    data = b'{ "a" : 1.50 , "b": {"c": [1, 2]}, "a": 12345678901234567890123 }'
    assert member(data, "b") == b'{"c": [1, 2]}'
    assert member(data, "a") == b"12345678901234567890123"
    assert member(data, "z") is None
    assert member(b"[1]", "a") is None


def test_without_drops_the_named_members_and_keeps_the_others_as_written() -> None:
    data = b'{ "phx_ref": "x", "n" : 1.50,\n"s": "\\u00e9", "online_at": 1 }'
    assert without(data, {"phx_ref", "online_at"}) == b'{"n" : 1.50,"s": "\\u00e9"}'
    assert without(b'{"phx_ref": 1}', {"phx_ref"}) == b"{}"
    assert without(b"{}", {"phx_ref"}) == b"{}"


@given(st.dictionaries(st.sampled_from(["a", "b", "phx_ref", "é"]), json_values, max_size=4))
def test_without_is_the_object_without_those_keys(value: dict[str, object]) -> None:
    for data in (orjson.dumps(value), json.dumps(value, indent=1).encode()):
        assert json.loads(without(data, {"phx_ref", "b"})) == {
            k: v for k, v in json.loads(data).items() if k not in ("phx_ref", "b")
        }


def test_after_head_is_the_last_element_when_the_head_is_written_as_orjson_writes_it() -> None:
    head = [None, "1", "room:é", "publish"]
    frame = orjson.dumps(head)[:-1] + b',["e", {"n": 1.50}] ]'
    assert after_head(frame, head) == b'["e", {"n": 1.50}]'
    assert after_head(b'[null, "1","room:\\u00e9","publish",{}]', head) is None  # other blanks
    assert after_head(b'[null,"1","room:\\u00e9","publish",{}]', head) is None  # other escapes


REFS = st.one_of(st.none(), st.text())


@given(st.tuples(REFS, REFS, st.text(), st.text()), json_values)
def test_v2_payload_is_the_fifth_element_as_written(
    fields: tuple[str | None, ...], payload: object
) -> None:
    head: list[str | None] = list(fields)
    value = orjson.dumps(payload)
    compact = orjson.dumps(head)[:-1] + b"," + value + b"]"
    spaced = json.dumps(head)[:-1].encode() + b" , " + value + b" ]\n"
    assert v2_payload(compact, head) == value  # the head as clients write it
    assert v2_payload(spaced, head) == value  # found by the regular expression
