from __future__ import annotations

import sys

from app.pg import Member, NodeId, new_incarnation


def test_node_id_is_a_frozen_hashable_pair() -> None:
    a = NodeId("a", "00ff")
    assert a == NodeId("a", "00ff") and hash(a) == hash(NodeId("a", "00ff"))
    assert a != NodeId("a", "0100")
    assert (a.name, a.incarnation) == ("a", "00ff")


def test_member_identity_ordering_and_owner() -> None:
    m1 = Member("a", "00ff", 1)
    m2 = Member("a", "00ff", 2)
    other_run = Member("a", "0100", 1)
    assert m1 < m2 and sorted([m2, m1]) == [m1, m2]
    assert m1 != other_run  # same local id, older incarnation: a different member
    assert len({m1, Member("a", "00ff", 1), m2}) == 2
    assert m1.owner == NodeId("a", "00ff")


def test_member_is_compact() -> None:
    m = Member("a", "00ff", 1)
    assert not hasattr(m, "__dict__")
    assert sys.getsizeof(m) == sys.getsizeof(("a", "00ff", 1))


def test_incarnations_are_16_hex_chars_and_fresh() -> None:
    seen = {new_incarnation() for _ in range(100)}
    assert len(seen) == 100
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in seen)
