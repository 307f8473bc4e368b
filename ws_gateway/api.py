"""The HTTP API of a gateway, for backends: `POST /api/broadcast` publishes, as Phoenix
apps call `Endpoint.broadcast` (the answer waits for the topic's owner to accept the
message); `GET /api/history` reads what a topic with history keeps; `GET
/api/presence?topic=...` answers with the topic's presence, as its owner has it. All need
`Authorization: Bearer <DPS_API_KEY>` when DPS_API_KEY is set.
"""

from __future__ import annotations

import asyncio
import base64

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from app.link.interface import Outcome, Recovery
from app.ops import authorized, unauthorized
from app.served.http import BodyRefused, read_body
from app.settings import Settings
from ws_gateway import payloads
from ws_gateway.access.policy import Policy
from ws_gateway.channels import MAX_OFFSET, event_problem, payload_bytes, topic_problem
from ws_gateway.gateway import NO_OWNER, Gateway

HISTORY_LIMIT = 10_000  # messages one /api/history answer holds at most


def _error(status: int, reason: str, close: bool = False) -> JSONResponse:
    """An error answer; with `close`, the connection ends with it (a body left unread)."""
    headers = {"connection": "close"} if close else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _body(request: Request, settings: Settings) -> bytes | JSONResponse:
    """The request's body, or the answer for a body too large or too slow to arrive."""
    limit, timeout = settings.max_frame_bytes, settings.handshake_timeout
    body = await read_body(request, limit, timeout)
    if body is BodyRefused.TOO_LARGE:
        return _error(413, f"body larger than DPS_MAX_FRAME_BYTES ({limit} bytes)", close=True)
    if body is BodyRefused.TOO_SLOW:
        reason = f"body not received within DPS_HANDSHAKE_TIMEOUT ({timeout:g} s)"
        return _error(408, reason, close=True)
    return body


def _number(text: str, below: int) -> int | None:
    """The integer `text` spells in decimal digits, if below `below`; else None. Neither
    str.isdigit, which takes digits int() refuses ("²"), nor int() alone, which takes signs,
    spaces and underscores, and refuses more than 4300 digits."""
    if not text.isdecimal() or len(text) > len(str(below)):
        return None
    value = int(text)
    return value if value < below else None


async def broadcast(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if not authorized(request, settings.api_key):
        return unauthorized("DPS_API_KEY")
    try:
        data = await _body(request, settings)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read it
    if isinstance(data, JSONResponse):
        return data
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, 'body must be an object {"topic": ..., "event": ..., "payload": ...}')
    topic, event, payload = body.get("topic"), body.get("event"), body.get("payload", {})
    if not isinstance(topic, str):
        return _error(400, "topic must be a string")
    problem = topic_problem(topic) or event_problem(event)
    if problem is None and not isinstance(payload, dict):
        problem = "payload must be a JSON object"
    if problem is not None:
        return _error(400, problem)
    assert isinstance(event, str)
    raw = payloads.member(data, "payload") if "payload" in body else b"{}"
    encoded = payload_bytes(payload, raw, settings.max_payload_depth)
    if isinstance(encoded, str):
        return _error(400, encoded)
    gateway: Gateway = request.app.state.gateway
    policy: Policy = request.app.state.policy
    rule = policy.rules.match(topic)
    kept = None if rule is None else rule.kept
    outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    gateway.publish(topic, event, encoded, False, outcome.set_result, kept=kept)
    result = await outcome
    if isinstance(result, str):
        return _error(503, result)
    answer = {"status": "ok", "topic": topic, "owner": result.owner, "seq": result.seq}
    if result.position is not None:
        answer["epoch"], answer["offset"] = result.position
    return JSONResponse(answer)


async def history(request: Request) -> Response:
    """`GET /api/history?topic=T&since=OFFSET&limit=N`: what topic T keeps after OFFSET."""
    settings: Settings = request.app.state.settings
    if not authorized(request, settings.api_key):
        return unauthorized("DPS_API_KEY")
    params = request.query_params
    topic = params.get("topic")
    if topic is None:
        return _error(400, "topic is required")
    problem = topic_problem(topic)
    if problem is not None:
        return _error(400, problem)
    since = _number(params.get("since", "0"), MAX_OFFSET)
    limit = _number(params.get("limit", str(HISTORY_LIMIT)), HISTORY_LIMIT + 1)
    if since is None or limit is None or limit < 1:
        return _error(400, f"since must be an offset >= 0, limit from 1 to {HISTORY_LIMIT}")
    gateway: Gateway = request.app.state.gateway
    read: asyncio.Future[Recovery | str] = asyncio.get_running_loop().create_future()
    gateway.recover(topic, ("", since), limit, read.set_result)
    found = await read
    if isinstance(found, str):
        return _error(503, found)
    messages = [
        {
            "offset": entry.offset,
            "at": entry.at,
            "event": entry.event,
            "payload": base64.b64encode(entry.payload).decode()
            if entry.binary
            else orjson.Fragment(entry.payload),
            "binary": entry.binary,
        }
        for entry in found.entries
    ]
    body = {
        "topic": topic,
        "epoch": found.epoch,
        "offset": found.last,
        "complete": found.recovered,
        "messages": messages,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def presence(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if not authorized(request, settings.api_key):
        return unauthorized("DPS_API_KEY")
    topic = request.query_params.get("topic")
    if topic is None:
        return _error(400, "topic is missing: GET /api/presence?topic=...")
    problem = topic_problem(topic)
    if problem is not None:
        return _error(400, problem)
    policy: Policy = request.app.state.policy
    rule = policy.rules.match(topic)
    if rule is None or not rule.presence:
        return _error(
            404, "no presence on this topic: its channel rule does not say presence = true"
        )
    gateway: Gateway = request.app.state.gateway
    owner = gateway.router.owner_of(topic)
    if owner is None:
        return _error(503, NO_OWNER)
    answer: asyncio.Future[bytes | str] = asyncio.get_running_loop().create_future()
    owner.presence(topic, answer.set_result)
    state = await answer
    if isinstance(state, str):
        return _error(503, state)
    return Response(state, media_type="application/json")
