"""Peer: Starlette with encode/broadcaster on Redis, under uvicorn.

Run two or more processes on one Redis. Each socket speaks the Phoenix frames of
`phoenix_frames`; each topic it joins runs broadcaster's idiomatic loop in a task of its
own (`async with broadcast.subscribe(topic)`, then a `send_text` per event), and a publish
is `broadcast.publish` to Redis, acknowledged once Redis has it.

Two defects of broadcaster 0.3.1 are worked around, or joins would silently receive
nothing: `Broadcast.subscribe` registers a channel's first queue only after awaiting
Redis's SUBSCRIBE, so concurrent first joins overwrite each other's queues (joins here
enter it one at a time); and `RedisBackend.subscribe` wakes its listener before redis-py
knows of the channel, so the listener can find nothing subscribed and wait for good
(`OrderedRedisBackend` subscribes first, then wakes it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import phoenix_frames
from broadcaster import Broadcast
from broadcaster._backends.redis import RedisBackend
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn_app import serve


class OrderedRedisBackend(RedisBackend):
    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        self._ready.set()


def build(redis_url: str) -> Starlette:
    broadcast = Broadcast(backend=OrderedRedisBackend(redis_url))
    one_join_at_a_time = asyncio.Lock()

    async def relay(ws: WebSocket, topic: str, subscribed: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with one_join_at_a_time:
                subscriber = await stack.enter_async_context(broadcast.subscribe(channel=topic))
            subscribed.set()
            async for event in subscriber:
                await ws.send_text(event.message)

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        relays: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                join_ref, ref, topic, event, payload = phoenix_frames.parse(await ws.receive_text())
                if event == "phx_join" and topic not in relays:
                    subscribed = asyncio.Event()
                    relays[topic] = asyncio.create_task(relay(ws, topic, subscribed))
                    await subscribed.wait()
                elif event == "publish":
                    message = phoenix_frames.broadcast(topic, payload)
                    await broadcast.publish(channel=topic, message=message)
                elif event not in ("phx_join", "heartbeat"):
                    await ws.send_text(phoenix_frames.refusal(join_ref, ref, topic, "unknown"))
                    continue
                await ws.send_text(phoenix_frames.reply(join_ref, ref, topic))
        except WebSocketDisconnect:
            pass
        finally:
            for task in relays.values():
                task.cancel()
            await asyncio.gather(*relays.values(), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broadcast:
            yield

    return Starlette(routes=[WebSocketRoute("/socket/websocket", endpoint)], lifespan=lifespan)


if __name__ == "__main__":
    serve(__doc__ or "", build)
