"""A gateway's reading of pg events about topic servers (`ring_move`), without asyncio."""

from __future__ import annotations

import pytest

from app.pg import EventKind, Member
from ws_gateway.node import Linked, Move, ring_move

NOW = "inc-2"  # the incarnation of ts-a linked now
CURRENT = Member("ts-a", "inc-2", 1)
OLDER = Member("ts-a", "inc-1", 1)  # before a restart


@pytest.mark.parametrize(
    ("kind", "member", "linked", "move"),
    [
        ("join", CURRENT, Linked(NOW, closed=False), Move.UP),
        ("join", CURRENT, Linked(NOW, closed=True), None),  # its link is closing already
        ("leave", CURRENT, Linked(NOW, closed=False), Move.DOWN),
        ("leave", CURRENT, Linked(NOW, closed=True), Move.DOWN),
        ("join", OLDER, Linked(NOW, closed=False), None),
        ("leave", OLDER, Linked(NOW, closed=False), None),  # must not unlink the new one
        ("join", OLDER, Linked(NOW, closed=True), None),
        ("leave", OLDER, Linked(NOW, closed=True), None),
        ("join", CURRENT, None, None),  # not linked any more
        ("leave", CURRENT, None, None),
    ],
)
def test_only_events_about_the_incarnation_linked_now_move_the_ring(
    kind: EventKind, member: Member, linked: Linked | None, move: Move | None
) -> None:
    assert ring_move(kind, member, linked) is move
