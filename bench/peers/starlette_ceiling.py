"""Peer: the one-process ceiling of a Python stack. Starlette under uvicorn, no Redis.

Topics are sets of sockets in memory. A publish encodes its message once and awaits
`send_text` to every subscriber in turn (ASGI's one send per socket), then acknowledges
the publish. Sockets speak the Phoenix frames of `phoenix_frames`. No cluster can beat one
process that skips every hop; this is what DPS's cluster is measured against.
"""

from __future__ import annotations

import phoenix_frames
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn_app import serve


def build(redis_url: str) -> Starlette:
    topics: dict[str, set[WebSocket]] = {}

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        joined: set[str] = set()
        try:
            while True:
                join_ref, ref, topic, event, payload = phoenix_frames.parse(await ws.receive_text())
                if event == "phx_join":
                    topics.setdefault(topic, set()).add(ws)
                    joined.add(topic)
                elif event == "publish":
                    message = phoenix_frames.broadcast(topic, payload)
                    for subscriber in tuple(topics.get(topic, ())):
                        try:
                            await subscriber.send_text(message)
                        except (WebSocketDisconnect, RuntimeError, OSError):
                            topics[topic].discard(subscriber)  # gone: its own loop cleans up
                elif event != "heartbeat":
                    await ws.send_text(phoenix_frames.refusal(join_ref, ref, topic, "unknown"))
                    continue
                await ws.send_text(phoenix_frames.reply(join_ref, ref, topic))
        except WebSocketDisconnect:
            pass
        finally:
            for topic in joined:
                topics[topic].discard(ws)

    return Starlette(routes=[WebSocketRoute("/socket/websocket", endpoint)])


if __name__ == "__main__":
    serve(__doc__ or "", build)
