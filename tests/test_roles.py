"""Serving a role: what the server does once it has started."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
import uvicorn
from starlette.applications import Starlette

from app.roles import _Server

pytestmark = pytest.mark.anyio


async def test_what_exists_once_serving_is_left_out_of_every_collection() -> None:
    # A full collection walks every object the collector tracks: the modules, the app and
    # the node exist for as long as the process, so walking them is work for nothing.
    gc.unfreeze()
    sock = socket.create_server(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(Starlette(), lifespan="off", log_level="warning"), "")
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(5):
            while not server.started:
                await asyncio.sleep(0.01)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # imports alone come to tens of thousands
        later = [object() for _ in range(1000)]  # what comes after is collected as usual
        gc.collect()
        assert gc.get_freeze_count() == frozen and gc.is_tracked(later)
    finally:
        gc.unfreeze()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
