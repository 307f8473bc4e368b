"""The gateway's Starlette application: the Phoenix socket, the broadcast API, health."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from app.settings import Settings
from ws_gateway.api import broadcast
from ws_gateway.endpoint import socket_endpoint
from ws_gateway.gateway import Gateway


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def cluster(request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    return JSONResponse(
        {
            "node": gateway.name,
            "role": request.app.state.settings.app,
            "counters": gateway.counters.snapshot(),
        }
    )


def build(gateway: Gateway, settings: Settings) -> Starlette:
    app = Starlette(
        routes=[
            WebSocketRoute("/socket/websocket", socket_endpoint),
            Route("/api/broadcast", broadcast, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", healthz),
            Route("/cluster", cluster),
        ]
    )
    app.state.gateway = gateway
    app.state.settings = settings
    return app
