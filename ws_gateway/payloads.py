"""Payloads are forwarded as the client's own bytes, never re-encoded.

A frame is parsed once, by orjson, which also validates it. Re-encoding the parsed payload
would cost a second pass and change it: integers beyond 64 bits come back as floats, and
orjson writes at most 254 levels of nesting where it reads 1,024. So the bytes of the
payload are cut out of the validated frame instead:

- `v2_payload`: the fifth element of a V2 array, found with one regular expression over
  the four short fields before it (the hot path), or, first, after those fields as
  orjson writes them, which is how clients write them (`after_head`);
- `member`: the value of one member of an object (V1 frames, `/api/broadcast` bodies,
  hook answers), with the standard library's JSON scanner;
- `envelope_body`: the object of a `publish` payload `[event, object]`;
- `without`: an object without some of its members (presence metas, whose `phx_ref` and
  `online_at` are the server's).

Each of them is given bytes that are valid JSON and returns the exact bytes of the value.
`too_deep` bounds nesting (DPS_MAX_PAYLOAD_DEPTH): counting brackets answers at once for
nearly every payload; only a payload with more brackets than the bound is walked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

import orjson

_STRING = rb'"(?:[^"\\]|\\.)*"'
_WS = rb"[ \t\n\r]*"
_V2_HEAD = re.compile(
    _WS
    + rb"\["
    + rb"".join(_WS + field + _WS + rb"," for field in (rb"(?:null|" + _STRING + rb")",) * 2)
    + rb"".join(_WS + _STRING + _WS + rb"," for _ in range(2))
    + _WS,
    re.DOTALL,
)
_ENVELOPE_HEAD = re.compile(_WS + rb"\[" + _WS + _STRING + _WS + rb"," + _WS, re.DOTALL)
_BLANKS = frozenset(" \t\n\r")  # an empty slice at the end is not in it
_BLANK_BYTES = frozenset(b" \t\n\r")
# The standard library's C scanner: (value, end index) of the JSON value at a start index.
# Every JSONDecoder has one, but the type stubs do not say so.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _before_closing(data: bytes, start: int) -> bytes | None:
    """`data[start:]` without the whitespace and the one `]` that end it."""
    end = len(data)
    if end > start + 1 and data[-1] == 0x5D and data[-2] not in _BLANK_BYTES:
        return data[start:-1]  # as clients write it: nothing after the value but the `]`
    while end > start and data[end - 1] in b" \t\n\r":
        end -= 1
    if end <= start or data[end - 1] != ord("]"):
        return None
    end -= 1
    while end > start and data[end - 1] in b" \t\n\r":
        end -= 1
    return data[start:end]


def after_head(array: bytes, head: list[Any]) -> bytes | None:
    """The last element's bytes of the valid JSON array `array`, whose elements before it
    are `head`, when `array` writes them as orjson does (no blanks, the same escapes: a
    client's JSON.stringify); else None. Cheaper than a regular expression over them."""
    start = orjson.dumps(head)
    start = start[:-1] + b"," if head else b"["
    return _before_closing(array, len(start)) if array.startswith(start) else None


def v2_payload(frame: bytes, fields: list[Any]) -> bytes | None:
    """The payload bytes of a valid 5-element V2 frame whose first four fields, `fields`,
    are strings or null; None for any other shape."""
    found = after_head(frame, fields)
    if found is not None:
        return found
    head = _V2_HEAD.match(frame)
    return None if head is None else _before_closing(frame, head.end())


def envelope_body(payload: bytes) -> bytes | None:
    """The object's bytes in a valid `[event, object]` publish payload."""
    head = _ENVELOPE_HEAD.match(payload)
    return None if head is None else _before_closing(payload, head.end())


def _skip(text: str, i: int) -> int:
    """The index of the first character from `i` on that is not JSON whitespace."""
    while text[i : i + 1] in _BLANKS:
        i += 1
    return i


def _members(text: str) -> Iterator[tuple[str, int, int, int]]:
    """For each member of the valid JSON object `text` (none if it is another value): its
    name, and where the member starts, its value starts and its value ends."""
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        return
    i = _skip(text, i + 1)
    while text[i : i + 1] == '"':
        begin = i
        name, i = _scan(text, i)
        start = _skip(text, _skip(text, i) + 1)  # past the colon
        _, i = _scan(text, start)
        yield name, begin, start, i
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)


def member(data: bytes, key: str) -> bytes | None:
    """The bytes of the value of `key` in the valid JSON object `data` (the last, if the key
    repeats, as parsers keep it), or None when it has none."""
    text = data.decode()
    found = None
    for name, _, start, end in _members(text):
        if name == key:
            found = (start, end)
    return None if found is None else text[found[0] : found[1]].encode()


def without(data: bytes, keys: Collection[str]) -> bytes:
    """The valid JSON object `data` without its members named in `keys`."""
    text = data.decode()
    kept = [text[begin:end] for name, begin, _, end in _members(text) if name not in keys]
    return ("{" + ",".join(kept) + "}").encode()


def too_deep(raw: bytes | None, value: Any, limit: int) -> bool:
    """Whether `value` (parsed from `raw`, if known) nests objects and arrays deeper than
    `limit`."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if not isinstance(value, dict | list):
        return False
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                level.append((child, depth + 1))
    return False
