"""The manual clock the timing tests run on."""

from __future__ import annotations

from tests.clock import FakeClock


def test_advance_runs_what_falls_due_in_deadline_order_at_its_own_time() -> None:
    clock = FakeClock(100.0)
    ran: list[tuple[str, float]] = []

    def note(name: str) -> None:
        ran.append((name, clock.time()))
        if name == "b":  # set while time moves: runs in the same advance if due
            clock.call_later(0.5, note, "c")

    clock.call_later(2.0, note, "b")
    clock.call_later(1.0, note, "a")
    clock.call_later(3.0, note, "late")
    clock.call_later(1.5, note, "cancelled").cancel()
    clock.advance(2.5)
    assert ran == [("a", 101.0), ("b", 102.0), ("c", 102.5)]
    assert clock.time() == 102.5
    assert clock.pending == [103.0]


def test_a_stall_moves_time_without_running_anything_until_the_next_advance() -> None:
    clock = FakeClock()
    ran: list[float] = []
    clock.call_later(1.0, lambda: ran.append(clock.time()))
    clock.stall(5.0)
    assert (ran, clock.time()) == ([], 5.0)
    clock.advance(0)
    assert ran == [5.0]  # overdue: it runs late, as a timer does after a pause
