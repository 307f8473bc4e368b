"""Identities in pg: a node incarnation (`NodeId`) and a group member (`Member`).

A node is one OS process; its identity is its name plus an *incarnation*, a random
string drawn at start, so that a restarted node is a different peer even under the
same name. A member is an entity living on exactly one node, its owner, which alone
may join or leave it. Its identity is (owner name, owner incarnation, local id); the
local id is never reused within an incarnation, and the incarnation keeps members of a
previous run unequal to new ones even where local ids repeat.

Both are `NamedTuple`s: frozen, hashable, ordered field by field, and as compact as a
plain tuple (no per-instance dict), which matters because a member exists once per
membership holder on every node of the overlay. On the wire a member travels as its
local id alone: members announced by peer P are always P's own.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

__all__ = ["Member", "NodeId", "new_incarnation"]


class NodeId(NamedTuple):
    """One run of one node: its name and the incarnation drawn when it started."""

    name: str
    incarnation: str


class Member(NamedTuple):
    """A group member: owned by node `node` in incarnation `incarnation`."""

    node: str
    incarnation: str
    local_id: int

    @property
    def owner(self) -> NodeId:
        return NodeId(self.node, self.incarnation)


def new_incarnation() -> str:
    """A fresh incarnation: 16 hex characters, unique with overwhelming probability."""
    return secrets.token_hex(8)
