"""The demo chat's serving: the vendored phoenix client is the npm package's own, and
DPS_DEMO=0 takes the page away (the browser tests in tests/browser/ use it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.support import ROOT, Server

VENDOR = ROOT / "ws_gateway" / "demo" / "static" / "vendor"
NPM = ROOT / "tests" / "clients"


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_vendored_client_is_the_pinned_npm_package_with_its_licence() -> None:
    pinned = json.loads((NPM / "package.json").read_text())["dependencies"]["phoenix"]
    [folder] = VENDOR.iterdir()
    assert folder.name == f"phoenix-{pinned}"
    package = NPM / "node_modules" / "phoenix"
    if not package.is_dir():
        pytest.fail(f"{package} missing: run `make test` (it runs npm ci in tests/clients)")
    assert (folder / "phoenix.mjs").read_bytes() == (
        package / "priv" / "static" / "phoenix.mjs"
    ).read_bytes()
    assert (folder / "LICENSE.md").read_bytes() == (package / "LICENSE.md").read_bytes()
    chat = VENDOR.parent / "chat.js"
    assert f'from "./vendor/{folder.name}/phoenix.mjs"' in chat.read_text()
    assert f"client {pinned} " in (ROOT / "ws_gateway" / "demo" / "chat.html").read_text()


def test_the_demo_is_served_unless_turned_off(spawn: Callable[..., Server]) -> None:
    on, off = spawn(), spawn({"DPS_DEMO": "0"})
    assert [status(on.http + path) for path in ("/", "/static/chat.js")] == [200, 200]
    assert [status(off.http + path) for path in ("/", "/static/chat.js")] == [404, 404]
    assert status(off.http + "/dashboard") == 200
