"""Server-side publishing over HTTP: `POST /api/broadcast`, as Phoenix apps call
`Endpoint.broadcast`. The answer waits for the topic's owner to accept the message.
"""

from __future__ import annotations

import asyncio
import hmac

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.link.interface import Outcome
from ws_gateway.channels import event_problem, topic_problem
from ws_gateway.gateway import Gateway


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def _authorized(request: Request) -> bool:
    key = request.app.state.settings.api_key
    if key is None:
        return True
    given = request.headers.get("authorization", "")
    expected = "Bearer " + key.get_secret_value()
    return hmac.compare_digest(given.encode(), expected.encode())


async def broadcast(request: Request) -> JSONResponse:
    if not _authorized(request):
        return _error(401, "missing or wrong API key (Authorization: Bearer <DPS_API_KEY>)")
    limit = request.app.state.settings.max_frame_bytes
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return _error(413, f"body larger than DPS_MAX_FRAME_BYTES ({limit} bytes)")
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
    gateway: Gateway = request.app.state.gateway
    outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    gateway.publish(topic, event, orjson.dumps(payload), False, outcome.set_result)
    result = await outcome
    if isinstance(result, str):
        return _error(503, result)
    return JSONResponse({"status": "ok", "topic": topic, "owner": result.owner, "seq": result.seq})
