"""Start the role chosen by DPS_APP and serve it until SIGINT or SIGTERM.

The one place that knows every role: it builds the node of DPS_APP (the embedded
default, a gateway or a topic server) with its Starlette routes, and serves it with
uvicorn. Nothing below it (`app`'s kernel, `ws_gateway`, `topic_server`) imports it.
"""

from __future__ import annotations

import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute

from app import dashboard, ops
from app import ring as rings
from app.clock import RunningLoop
from app.link import tls
from app.link.dialer import LINK_PATH
from app.link.listener import link_endpoint
from app.roles.embedded import EmbeddedNode
from app.served import capacity
from app.served import tls as client_tls
from app.served.detached import DetachedWebSocket
from app.served.http import ServedHttp
from app.served.keepalive import KeepAlive
from app.served.websocket import ServedWebSocket
from app.settings import ConfigError, Role, Settings, SettingsError
from topic_server.node import TopicServerNode
from ws_gateway import demo, routes
from ws_gateway.node import GatewayNode

log = logging.getLogger("dps")

# Seconds a node takes at most to drain on SIGTERM: its sockets closed with 1001 and its
# connections given this long to go before the process exits.
GRACEFUL_SHUTDOWN = 5


def build(settings: Settings) -> tuple[ops.Node, Starlette]:
    """The node for DPS_APP and its Starlette application. Raises ConfigError."""
    node: EmbeddedNode | GatewayNode | TopicServerNode
    served: list[BaseRoute]
    gateway_routes = [*routes.ROUTES, *(demo.ROUTES if settings.demo else [])]
    if settings.app is Role.EMBEDDED:
        node = EmbeddedNode(settings)
        served = gateway_routes
    elif settings.app is Role.GATEWAY:
        node = GatewayNode(settings, rings.load(rings.locate(settings.ring)), RunningLoop())
        served = gateway_routes
    else:
        node = TopicServerNode(settings, rings.load(rings.locate(settings.ring)), RunningLoop())
        endpoint = link_endpoint(node, node.options, node.accepts, node.linked_for)
        served = [WebSocketRoute(LINK_PATH, endpoint)]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        # What exists now (modules, the app, the node) lives as long as the process: out
        # of the collector's way, a full collection walks only what came since.
        gc.freeze()
        if isinstance(node, GatewayNode):
            await node.settle(settings.link_timeout)
        yield
        await node.stop()

    app = Starlette(routes=served + ops.ROUTES + dashboard.ROUTES, lifespan=lifespan)
    app.state.node = node
    app.state.settings = settings
    ring = None if isinstance(node, EmbeddedNode) else node.ring
    app.state.dashboard = dashboard.Dashboard(node, settings, ring)
    if not isinstance(node, TopicServerNode):
        app.state.gateway = node.gateway
        app.state.policy = node.policy
    return node, app


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.worker_count is not None:
        from app.roles.workers import supervise

        return supervise(settings)
    links = settings.app is Role.TOPIC_SERVER
    try:
        node, app = build(settings)
        tls_options = tls.server_options(settings) if links else client_tls.server_options(settings)
        sockets = bind(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    limits = capacity.plan(capacity.raise_descriptor_limit(), settings.max_sockets)
    app.state.capacity = limits
    log.info(
        "descriptor limit %d: at most %d client sockets and %d connections",
        limits.descriptors,
        limits.sockets,
        limits.connections,
    )
    if limits.sockets > limits.descriptors - capacity.RESERVE:
        log.warning(
            "DPS_MAX_SOCKETS=%d leaves fewer than %d of %d descriptors for links and health "
            "checks: raise the hard limit (ulimit -n) or lower DPS_MAX_SOCKETS",
            limits.sockets,
            capacity.RESERVE,
            limits.descriptors,
        )
    config = uvicorn_config(settings, node, app, limits, tls_options)
    path = LINK_PATH if links else routes.SOCKET_PATH
    url = f"{'wss' if tls_options else 'ws'}://{address(settings.host, settings.port)}{path}"
    served = "gateways link to" if links else "clients connect to"
    server = _Server(config, f"DPS {settings.app} node {node.name} serving: {served} {url}")

    # uvicorn handles SIGINT and SIGTERM while it serves (closing every socket, see
    # app.served.websocket), then re-raises the signal to the handler it found installed.
    # This handler is that one: a signal before or after serving also just asks the server
    # to stop, so a requested stop exits with status 0.
    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
    return 0


def uvicorn_config(
    settings: Settings,
    node: ops.Node,
    app: Starlette,
    limits: capacity.Capacity,
    tls_options: dict[str, Any],
) -> uvicorn.Config:
    """How uvicorn serves `app`: its protocols (see `app.served`) and their settings."""
    links = settings.app is Role.TOPIC_SERVER
    keepalive: KeepAlive[DetachedWebSocket] = KeepAlive(
        RunningLoop(),
        node.counters,
        ping_interval=settings.link_timeout / 4 if links else settings.ping_interval,
        ping_timeout=settings.link_timeout if links else settings.ping_interval,
        idle_timeout=None if links or not settings.idle_timeout else settings.idle_timeout,
    )
    return uvicorn.Config(
        app,
        ws=ServedWebSocket.configured(keepalive),
        ws_max_size=settings.link_queue if links else settings.max_frame_bytes,
        # Served sockets are detached as soon as they are accepted; their keep-alive is
        # `keepalive`'s, not uvicorn's.
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        loop="uvloop",
        http=ServedHttp.configured(settings.handshake_timeout, limits.connections, node.counters),
        lifespan="on",
        access_log=False,
        log_level="debug" if settings.log_level == "debug" else "warning",
        backlog=4096,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        **tls_options,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, saying that it serves once it does (the node started, listening)."""

    def __init__(self, config: uvicorn.Config, serving: str) -> None:
        super().__init__(config)
        self.serving = serving

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("%s", self.serving)


def bind(settings: Settings, share: bool | None = None) -> list[socket.socket]:
    """The server's sockets, bound here rather than by uvicorn so that an address that
    cannot be used is one line naming the setting to change (SettingsError), not a trace.
    One per address DPS_HOST resolves to (IPv6 ones IPv6-only), as asyncio would bind them.

    The gateways of a worker set `share` DPS_PORT (SO_REUSEPORT): each has its own
    listening socket and the kernel spreads new connections over them, so a gateway that
    dies takes only its own queue with it."""
    if share is None:
        share = settings.worker_set is not None and settings.app is Role.GATEWAY
    host, port = settings.host, settings.port
    where = address(host, port)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingsError(f"DPS_HOST: cannot resolve {host!r} ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    for family, kind, proto, _, sockaddr in dict.fromkeys(addresses):
        sock = socket.socket(family, kind, proto)
        sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            for opened in sockets:
                opened.close()
            raise SettingsError(_unusable(exc, host, where)) from None
    return sockets


def _unusable(exc: OSError, host: str, where: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"DPS_PORT: {where} is already in use "
            "(another DPS? pick another port with DPS_PORT=...)"
        )
    if exc.errno == errno.EACCES:
        return f"DPS_PORT: no permission to listen on {where} (pick a port above 1023)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"DPS_HOST: {host} is not an address of this machine"
    return f"DPS_HOST/DPS_PORT: cannot listen on {where} ({exc.strerror})"


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
