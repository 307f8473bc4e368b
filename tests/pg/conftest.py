"""Fixtures for the pg tests (the Hypothesis profiles are the whole tree's, in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.pg import Node
from tests.pg.network import MemoryNetwork


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
