"""Starting a role: what a node does before it serves."""

from __future__ import annotations

import gc

import pytest

from app.roles import build
from app.settings import Settings

pytestmark = pytest.mark.anyio


async def test_what_exists_once_the_node_started_is_left_out_of_every_collection() -> None:
    # A full collection walks every object the collector tracks: the modules, the app and
    # the node exist for as long as the process, so walking them is work for nothing.
    gc.unfreeze()
    _, app = build(Settings())  # the embedded default
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000  # imports alone come to tens of thousands
            later = [object()]
            walked = {id(tracked) for tracked in gc.get_objects()}  # what collections walk
            assert id(app) not in walked
            assert id(later) in walked  # what comes after is collected as usual
    finally:
        gc.unfreeze()
