"""Fixtures for tests in a real browser: Debian's Chromium, driven by Playwright.

Playwright's own browser builds cannot be downloaded here, so these tests drive
/usr/bin/chromium, from Debian's `chromium` package (`make test` installs it when it
can). Without it they fail with one line saying what to install: they never skip.

Every test saves screenshots under its temporary folder; with DPS_DOCS_SCREENSHOTS=1 the
ones the README shows are written to docs/ too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from tests.browser import chromium

# The cluster fixtures, for tests that need nodes of their own choosing.
from tests.cluster.conftest import node, redis  # noqa: F401
from tests.support import ROOT

VIEWPORT = {"width": 1360, "height": 860}


class Shoot(Protocol):
    async def __call__(self, page: Page, name: str, docs: bool = False) -> Path: ...


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with a fresh profile; every page of it is on a loopback origin,
    and the test fails if any of them asks for anything elsewhere."""
    if not os.access(chromium.PATH, os.X_OK):
        pytest.fail(chromium.MISSING, pytrace=False)
    requested: list[str] = []
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=chromium.PATH,
            args=chromium.FLAGS,
            headless=True,
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        context.on("request", lambda request: requested.append(request.url))
        try:
            yield context
        finally:
            await context.close()
    elsewhere = [url for url in requested if not url.startswith("http://127.0.0.1:")]
    assert not elsewhere, f"the pages asked for {elsewhere}"


@pytest.fixture
def shoot(tmp_path: Path) -> Shoot:
    """`await shoot(page, name, docs)`: a full-page screenshot, tmp_path/name.png (and,
    for one the README shows, docs/name.png with DPS_DOCS_SCREENSHOTS=1)."""

    async def screenshot(page: Page, name: str, docs: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        await page.screenshot(path=path, full_page=True)
        if docs and os.environ.get("DPS_DOCS_SCREENSHOTS") == "1":
            shutil.copyfile(path, ROOT / "docs" / path.name)
        return path

    return screenshot
