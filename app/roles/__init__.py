"""Start the role chosen by DPS_APP and serve it until SIGINT or SIGTERM.

The one place that knows every role: it builds the node of DPS_APP (the embedded
default, a gateway or a topic server) with its Starlette routes, and serves it with
uvicorn. Nothing below it (`app`'s kernel, `ws_gateway`, `topic_server`) imports it.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute

from app import ops
from app import ring as rings
from app.clock import RunningLoop
from app.link import tls
from app.link.dialer import LINK_PATH
from app.link.listener import link_endpoint
from app.roles.embedded import EmbeddedNode
from app.settings import ConfigError, Role, Settings
from app.websocket import ServedWebSocket
from topic_server.node import TopicServerNode
from ws_gateway import routes
from ws_gateway.node import GatewayNode

log = logging.getLogger("dps")

CLIENT_PING = 20.0  # seconds between pings to client sockets, and to wait for the pong


def build(settings: Settings) -> tuple[ops.Node, Starlette]:
    """The node for DPS_APP and its Starlette application. Raises ConfigError."""
    node: EmbeddedNode | GatewayNode | TopicServerNode
    served: list[BaseRoute]
    if settings.app is Role.EMBEDDED:
        node = EmbeddedNode(settings)
        served = list(routes.ROUTES)
    elif settings.app is Role.GATEWAY:
        node = GatewayNode(settings, rings.load(rings.locate(settings.ring)), RunningLoop())
        served = list(routes.ROUTES)
    else:
        node = TopicServerNode(settings, rings.load(rings.locate(settings.ring)), RunningLoop())
        endpoint = link_endpoint(node, node.options, Role.GATEWAY, node.linked_for)
        served = [WebSocketRoute(LINK_PATH, endpoint)]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop()

    app = Starlette(routes=served + ops.ROUTES, lifespan=lifespan)
    app.state.node = node
    app.state.settings = settings
    if not isinstance(node, TopicServerNode):
        app.state.gateway = node.gateway
        app.state.policy = node.policy
    return node, app


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        node, app = build(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    links = settings.app is Role.TOPIC_SERVER
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=ServedWebSocket,
        ws_max_size=settings.link_queue if links else settings.max_frame_bytes,
        ws_ping_interval=settings.link_timeout / 4 if links else CLIENT_PING,
        ws_ping_timeout=settings.link_timeout if links else CLIENT_PING,
        ws_per_message_deflate=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="debug" if settings.log_level == "debug" else "warning",
        backlog=4096,
        timeout_graceful_shutdown=5,
        **(tls.server_options(settings) if links else {}),
    )
    log.info(
        "DPS %s node %s serving on %s:%d", settings.app, node.name, settings.host, settings.port
    )
    server = uvicorn.Server(config)

    # uvicorn handles SIGINT and SIGTERM while it serves (closing every socket, see
    # app.websocket), then re-raises the signal to the handler it found installed.
    # This handler is that one: a signal before or after serving also just asks the server
    # to stop, so a requested stop exits with status 0.
    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    server.run()
    return 0
