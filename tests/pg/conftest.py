"""Fixtures for the pg tests, and the Hypothesis profiles.

`default` keeps the whole tests/pg directory well under a minute on two cores; `long`
is for a nightly or pre-release run: `pytest tests/pg --hypothesis-profile=long`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from app.pg import Node
from tests.pg.network import MemoryNetwork

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


class Cluster:
    """Nodes on one `MemoryNetwork`, created by name."""

    def __init__(self) -> None:
        self.net = MemoryNetwork()
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, *scopes: str, incarnation: str | None = None) -> Node:
        node = Node(name, self.net.transport(name), incarnation)
        self.net.attach(node)
        self.nodes[name] = node
        for scope in scopes:
            node.start_scope(scope)
        return node

    def kill(self, name: str) -> None:
        """Like kill -9: no scope_down, the links just drop."""
        self.net.detach(name)
        del self.nodes[name]

    def connect(self, *names: str) -> None:
        """Link every pair of `names` and let the handshakes finish."""
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                self.net.connect(a, b)
        self.net.drain()

    def drain(self) -> int:
        return self.net.drain()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield Cluster()
