"""The gateway's public routes: the Phoenix socket and the HTTP API."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from ws_gateway.api import broadcast, history, presence
from ws_gateway.endpoint import socket_endpoint

SOCKET_PATH = "/socket/websocket"

ROUTES: list[BaseRoute] = [
    WebSocketRoute(SOCKET_PATH, socket_endpoint),
    Route("/api/broadcast", broadcast, methods=["POST"]),
    Route("/api/history", history, methods=["GET"]),
    Route("/api/presence", presence, methods=["GET"]),
]
