"""Throttled log lines, without waiting: the clock is moved by hand."""

from __future__ import annotations

import logging

import pytest

from app import throttled_log
from app.throttled_log import ThrottledLog


def test_one_line_a_second_with_the_count_of_the_rest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    monkeypatch.setattr(throttled_log.time, "monotonic", lambda: now[0])
    note = ThrottledLog(logging.getLogger("test"), logging.WARNING)
    with caplog.at_level(logging.WARNING):
        note("dropped %d", 1)
        note("dropped %d", 2)
        note("dropped %d", 3)
        now[0] += 1.5
        note("dropped %d", 4)
        note("dropped %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 1",
        "dropped 4 (and 2 more like it since the last report)",
    ]
