from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import Server, start_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start DPS processes with the given environment; every one is stopped afterwards."""
    started: list[Server] = []

    def _spawn(env: dict[str, str] | None = None, ready: str = "/healthz") -> Server:
        server = start_server(tmp_path, env, ready)
        started.append(server)
        return server

    yield _spawn
    for server in started:
        server.stop()


@pytest.fixture
def server(spawn: Callable[..., Server]) -> Server:
    """The embedded default (DPS_APP=all) on a free loopback port."""
    return spawn()
