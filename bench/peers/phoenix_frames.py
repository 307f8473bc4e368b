"""The few Phoenix V2 frames the Starlette peers speak, so that `dps loadtest` drives them as
it drives DPS: a join, a publish and a heartbeat are each answered with an ok reply, and a
published message reaches the topic's subscribers as `[null, null, topic, event, payload]`
(Phoenix's broadcast shape, encoded once per message)."""

from __future__ import annotations

from typing import Any

import orjson

OK = {"status": "ok", "response": {}}


def parse(text: str) -> tuple[Any, Any, str, str, Any]:
    """(join_ref, ref, topic, event, payload) of a client frame."""
    join_ref, ref, topic, event, payload = orjson.loads(text)
    return join_ref, ref, topic, event, payload


def reply(join_ref: Any, ref: Any, topic: str) -> str:
    return orjson.dumps([join_ref, ref, topic, "phx_reply", OK]).decode()


def refusal(join_ref: Any, ref: Any, topic: str, reason: str) -> str:
    status = {"status": "error", "response": {"reason": reason}}
    return orjson.dumps([join_ref, ref, topic, "phx_reply", status]).decode()


def broadcast(topic: str, payload: Any) -> str:
    """The message a publish's payload `[event, object]` becomes for every subscriber."""
    event, body = payload
    return orjson.dumps([None, None, topic, event, body]).decode()
