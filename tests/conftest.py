"""Fixtures for the whole tree, and the Hypothesis profiles.

`default` keeps the property tests (tests/pg, the link's codec, handshake and ends) to a
few seconds each file on two cores; `long` is for a nightly or pre-release run, anywhere
in the tree: `pytest tests/pg --hypothesis-profile=long`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import Server, start_server

settings.register_profile(
    "default",
    max_examples=300,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", settings.get_profile("default"), max_examples=4000, stateful_step_count=120
)
settings.load_profile("default")


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
