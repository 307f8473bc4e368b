"""The collector: it runs only while someone watches, asks the other nodes, and never
waits for a viewer that stopped reading."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.dashboard.collector import VIEWER_QUEUE, Dashboard, Viewer
from app.ring import Declared, RingConfig
from app.roles.embedded import EmbeddedNode
from app.settings import Settings
from tests.support import PATIENCE, Server

pytestmark = pytest.mark.anyio


async def frame_where(viewer: Viewer, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first frame the viewer is sent that passes `check` (within PATIENCE frames)."""
    for _ in range(int(PATIENCE)):
        data = await viewer.frames.get()
        assert data is not None, "the viewer's stream ended"
        for block in data.split(b"\n\n"):
            if block.startswith(b"event: frame\n"):
                frame: dict[str, Any] = orjson.loads(block.partition(b"data: ")[2])
                if check(frame):
                    return frame
    raise AssertionError("no such frame")


def status(frame: dict[str, Any], name: str) -> tuple[str, str | None] | None:
    for node in frame["nodes"]:
        if node["name"] == name:
            return node["status"], node["reason"]
    return None


async def test_the_collector_asks_other_nodes_while_someone_watches(
    spawn: Callable[..., Server],
) -> None:
    peer = spawn({"DPS_NODE": "ts-x"})
    declared = {"ts-x": Declared("ts-x", 1, f"127.0.0.1:{peer.port}")}
    settings = Settings(node="here")
    dashboard = Dashboard(EmbeddedNode(settings), settings, RingConfig(declared, 160, Path(".")))
    viewer = dashboard.join()
    assert viewer is not None
    try:
        await frame_where(viewer, lambda frame: status(frame, "ts-x") == ("up", None))
        peer.stop(signal.SIGKILL)
        down = await frame_where(viewer, lambda frame: status(frame, "ts-x") != ("up", None))
        state, reason = status(down, "ts-x") or ("?", None)
        assert state == "down"
        assert reason is not None and reason.startswith("cannot connect")
        assert [node["name"] for node in down["nodes"]] == ["here", "ts-x"]
    finally:
        dashboard.leave(viewer)
    assert dashboard._task is None  # nobody watches: nothing runs


def test_a_viewer_that_stops_reading_is_ended_not_waited_for() -> None:
    viewer = Viewer()
    for n in range(VIEWER_QUEUE + 1):
        viewer.send(b"frame %d" % n)
    assert viewer.ended
    assert viewer.frames.get_nowait() is None
    assert viewer.frames.empty()
