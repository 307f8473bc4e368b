"""Peer: python-socketio's AsyncServer with its AsyncRedisManager, under uvicorn.

Run two or more processes on one Redis; the manager relays every emit through Redis
pub/sub to the others. Events of the default namespace, each acknowledged with "ok":

    join     {"topic": T}                          enter room T
    publish  {"topic": T, "event": E, "payload": P} emit E with P to room T (every process)

`dps loadtest --protocol socketio --url ws://127.0.0.1:PORT` drives it.
"""

from __future__ import annotations

from typing import Any

import socketio
from uvicorn_app import serve


def build(redis_url: str) -> Any:
    server = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(redis_url),
        logger=False,
        engineio_logger=False,
    )

    @server.event
    async def join(sid: str, data: dict[str, Any]) -> str:
        await server.enter_room(sid, data["topic"])
        return "ok"

    @server.event
    async def publish(sid: str, data: dict[str, Any]) -> str:
        await server.emit(data["event"], data["payload"], room=data["topic"])
        return "ok"

    return socketio.ASGIApp(server)


if __name__ == "__main__":
    serve(__doc__ or "", build)
