"""`app.served.keepalive`: the timing wheel of deadlines, and the one timer that runs it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.counters import Counters
from app.served.keepalive import TICKS, Deadlines, KeepAlive
from tests.clock import FakeClock


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.due: int | None = None
        self.ran: list[float] = []

    def deadline(self, now: float) -> None:
        self.ran.append(now)

    def __repr__(self) -> str:
        return self.name


def test_items_expire_at_the_start_of_the_first_slot_not_before_their_deadline() -> None:
    wheel: Deadlines[Item] = Deadlines(0.25)
    a, b, c = Item("a"), Item("b"), Item("c")
    wheel.set(b, 1.01)  # slot 5: 1.25
    wheel.set(a, 1.0)  # slot 4: 1.0
    wheel.set(c, 1.2)  # slot 5 as well, after b
    assert (a.due, b.due, c.due) == (4, 5, 5)
    assert wheel.next() == 1.0
    assert wheel.expired(0.99) == []
    assert wheel.expired(1.2) == [a]
    assert a.due is None
    assert wheel.next() == 1.25
    assert wheel.expired(5.0) == [b, c]
    assert wheel.next() is None
    assert wheel.slots == {}


def test_a_new_deadline_replaces_the_old_and_a_cleared_item_never_expires() -> None:
    wheel: Deadlines[Item] = Deadlines(1.0)
    a, b = Item("a"), Item("b")
    wheel.set(a, 3.0)
    wheel.set(b, 3.0)
    wheel.set(a, 7.5)
    wheel.clear(b)
    wheel.clear(b)  # twice: nothing more
    assert wheel.expired(7.0) == []
    assert wheel.slots == {8: {a: None}}
    assert wheel.expired(8.0) == [a]


def test_every_slot_that_fell_due_expires_at_once_earliest_first() -> None:
    wheel: Deadlines[Item] = Deadlines(0.5)
    items = [Item(str(i)) for i in range(6)]
    for i, item in reversed(list(enumerate(items))):
        wheel.set(item, i)
    assert wheel.expired(100.0) == items


def test_one_timer_runs_all_the_deadlines() -> None:
    clock = FakeClock(100.0)
    keepalive: KeepAlive[Item] = KeepAlive(clock, Counters(), ping_interval=8.0, ping_timeout=20.0)
    assert keepalive.deadlines.tick == 8.0 / TICKS
    items = [Item(str(i)) for i in range(100)]
    for i, item in enumerate(items):
        keepalive.due_at(item, 108.0 + i / 10)
    assert clock.pending == [108.0]  # one timer, for the earliest
    early = Item("early")
    keepalive.due_at(early, 104.0)
    assert clock.pending == [104.0]  # re-armed for a sooner deadline
    keepalive.forget(items[0])
    clock.advance(4.0)
    assert early.ran == [104.0]
    clock.advance(20.0)
    assert items[0].ran == []
    for i, item in enumerate(items[1:], 1):
        assert len(item.ran) == 1
        assert 108.0 + i / 10 <= item.ran[0] <= 108.0 + i / 10 + 1.0
    assert clock.pending == []


def test_a_deadline_set_while_the_timer_runs_is_run_in_its_turn() -> None:
    clock = FakeClock()
    keepalive: KeepAlive[Item] = KeepAlive(clock, Counters(), ping_interval=1.0, ping_timeout=1.0)

    class Again(Item):
        def deadline(self, now: float) -> None:
            super().deadline(now)
            if len(self.ran) < 3:
                keepalive.due_at(self, now + 1.0)

    item = Again("again")
    keepalive.due_at(item, 1.0)
    clock.advance(10.0)
    assert item.ran == [1.0, 2.0, 3.0]


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.floats(0, 50) | st.none(), st.floats(0, 5)),
        max_size=60,
    )
)
def test_each_deadline_runs_once_never_early_and_at_most_a_tick_late(
    steps: list[tuple[int, float | None, float]],
) -> None:
    """Deadlines set (a time from now) or cleared (None) on ten items, time moving on."""
    clock = FakeClock()
    keepalive: KeepAlive[Item] = KeepAlive(clock, Counters(), ping_interval=4.0, ping_timeout=9.0)
    tick = keepalive.deadlines.tick
    items = [Item(str(i)) for i in range(10)]
    expected: dict[Item, float] = {}
    for index, delay, advance in steps:
        item = items[index]
        if delay is None:
            keepalive.forget(item)
            expected.pop(item, None)
        else:
            keepalive.due_at(item, clock.now + delay)
            expected[item] = clock.now + delay
        before = {i: len(i.ran) for i in items}
        clock.advance(advance)
        for i in items:
            if len(i.ran) > before[i]:
                assert len(i.ran) == before[i] + 1
                when = expected.pop(i)
                assert when <= i.ran[-1] <= when + tick
    clock.advance(100.0)
    for item, when in expected.items():
        assert when <= item.ran[-1] <= when + tick
