"""A topic's history, without a network: numbering, trimming, recovery, moving streams."""

from __future__ import annotations

import itertools

from app.counters import Counters
from app.link.codec import Entry
from app.link.interface import Recovery
from topic_server.history import History, Snapshot


def history(max_bytes: int = 1 << 20) -> History:
    epochs = (f"e{i}" for i in itertools.count(1))
    return History(max_bytes, Counters(), lambda: next(epochs))


def test_messages_are_numbered_without_gaps_in_one_epoch() -> None:
    h = history()
    offsets = [h.append("t", 10, 60, 100.0 + i, "ev", False, b"{}").offset for i in range(3)]
    assert offsets == [1, 2, 3]
    assert h.streams["t"].epoch == "e1"
    assert h.append("u", 10, 60, 100.0, "ev", False, b"{}").offset == 1  # per topic
    assert h.streams["u"].epoch == "e2"


def test_recovery_gives_what_came_after_or_says_it_cannot() -> None:
    h = history()
    for i in range(5):
        h.append("t", 3, 60, 100.0, "ev", False, b'{"i":%d}' % i)
    # Size 3 keeps offsets 3, 4 and 5.
    assert [e.offset for e in h.since("t", "e1", 2, 100, 100.0).entries] == [3, 4, 5]
    assert h.since("t", "e1", 4, 100, 100.0) == Recovery(
        True, "e1", 5, (Entry(5, 100.0, "ev", False, b'{"i":4}'),)
    )
    assert h.since("t", "e1", 5, 100, 100.0) == Recovery(True, "e1", 5, ())
    assert h.since("t", "e1", 1, 100, 100.0) == Recovery(False, "e1", 5, ())  # 2 is trimmed
    assert h.since("t", "other", 4, 100, 100.0) == Recovery(False, "e1", 5, ())
    assert h.since("t", "e1", 9, 100, 100.0) == Recovery(False, "e1", 5, ())  # ahead of it
    assert h.since("nothing", "e1", 0, 100, 100.0) == Recovery(False, "", 0, ())
    assert [e.offset for e in h.since("t", "e1", 2, 2, 100.0).entries] == [3, 4]  # the limit


def test_reading_the_current_epoch_gives_what_is_kept() -> None:
    h = history()
    for _ in range(5):
        h.append("t", 3, 60, 100.0, "ev", False, b"{}")
    read = h.since("t", "", 0, 100, 100.0)
    assert (read.recovered, [e.offset for e in read.entries]) == (False, [3, 4, 5])
    assert h.since("t", "", 3, 100, 100.0).recovered


def test_messages_older_than_the_ttl_go() -> None:
    h = history()
    h.append("t", 10, 30, 100.0, "ev", False, b"{}")
    h.append("t", 10, 30, 120.0, "ev", False, b"{}")
    assert h.since("t", "e1", 0, 100, 125.0).recovered
    assert not h.since("t", "e1", 0, 100, 131.0).recovered  # offset 1 is past its ttl now
    assert [e.offset for e in h.since("t", "e1", 1, 100, 131.0).entries] == [2]
    h.trim(151.0)
    assert len(h) == 0 and h.bytes == 0
    assert h.counters.history_trimmed == 2
    # The position stays: the next message is 3, in the same epoch.
    assert h.append("t", 10, 30, 152.0, "ev", False, b"{}").offset == 3


def test_the_node_bound_drops_the_oldest_anywhere() -> None:
    h = history(max_bytes=30)
    h.append("a", 100, 60, 1.0, "e", False, b"x" * 9)  # 10 bytes each, event included
    h.append("b", 100, 60, 2.0, "e", False, b"x" * 9)
    h.append("a", 100, 60, 3.0, "e", False, b"x" * 9)
    h.append("b", 100, 60, 4.0, "e", False, b"x" * 9)
    assert h.bytes == 30
    assert [e.at for e in h.streams["a"].entries] == [3.0]
    assert [e.at for e in h.streams["b"].entries] == [2.0, 4.0]
    assert h.counters.history_trimmed == 1


def test_copies_follow_their_stream_or_ask_for_all_of_it() -> None:
    owner, copy = history(), history()
    first = owner.append("t", 10, 60, 1.0, "ev", False, b"{}")
    assert not copy.add("t", "e1", first, 10, 60)  # no stream yet: send the whole stream
    s = owner.streams["t"]
    copy.install("t", s.snapshot(), 1.0)
    second = owner.append("t", 10, 60, 2.0, "ev", False, b"{}")
    assert copy.add("t", "e1", second, 10, 60)
    assert copy.streams["t"].snapshot() == owner.streams["t"].snapshot()
    gap = owner.append("t", 10, 60, 3.0, "ev", False, b"{}")._replace(offset=9)
    assert not copy.add("t", "e1", gap, 10, 60)
    assert not copy.add("t", "other", second._replace(offset=3), 10, 60)


def test_an_installed_stream_keeps_its_position_even_empty() -> None:
    h = history()
    h.install("t", Snapshot("old", 41, 10, 60.0, ()), 0.0)
    assert h.append("t", 10, 60, 1.0, "ev", False, b"{}").offset == 42
    assert h.streams["t"].epoch == "old"
