"""Start the role chosen by DPS_APP and serve it until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from app.counters import Counters
from app.link import OwnerLink
from app.memory_link import MemoryLink
from app.settings import Settings
from topic_server.server import TopicServer
from ws_gateway import web
from ws_gateway.connection import Connection
from ws_gateway.gateway import Gateway

log = logging.getLogger("dps")


class SingleOwner:
    """The embedded router: one topic server owns every topic."""

    __slots__ = ("link",)

    def __init__(self) -> None:
        self.link: OwnerLink | None = None

    def owner_of(self, topic: str) -> OwnerLink | None:
        return self.link


def node_name(settings: Settings) -> str:
    return f"{settings.host}:{settings.port}"


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.app != "all":
        log.error("DPS_APP=%s: not yet available; use DPS_APP=all", settings.app)
        return 2
    counters = Counters()
    router = SingleOwner()
    name = node_name(settings)
    gateway = Gateway(name, router, counters)
    router.link = MemoryLink(gateway, TopicServer(name, counters))
    config = uvicorn.Config(
        web.build(gateway, settings),
        host=settings.host,
        port=settings.port,
        ws=Connection,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="debug" if settings.log_level == "debug" else "warning",
        backlog=4096,
        timeout_graceful_shutdown=5,
    )
    log.info(
        "DPS %s serving ws://%s:%d/socket/websocket", settings.app, settings.host, settings.port
    )
    server = uvicorn.Server(config)

    # uvicorn handles SIGINT and SIGTERM while it serves (closing every socket, see
    # ws_gateway.connection), then re-raises the signal to the handler it found installed.
    # This handler is that one: a signal before or after serving also just asks the server
    # to stop, so a requested stop exits with status 0.
    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    server.run()
    return 0
