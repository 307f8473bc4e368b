"""The gateway's public routes: the Phoenix socket, and the broadcast and presence API."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from ws_gateway.api import broadcast, presence
from ws_gateway.endpoint import socket_endpoint

SOCKET_PATH = "/socket/websocket"

ROUTES: list[BaseRoute] = [
    WebSocketRoute(SOCKET_PATH, socket_endpoint),
    Route("/api/broadcast", broadcast, methods=["POST"]),
    Route("/api/presence", presence, methods=["GET"]),
]
