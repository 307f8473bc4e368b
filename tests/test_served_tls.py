"""TLS for client sockets (app/served/tls.py): wss:// and https:// with DPS_TLS_CERT and
DPS_TLS_KEY, certificates made by trustme for the test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
import websockets

from tests.support import ROOT, Server, client_tls, connect, free_port, get_json, server_context

pytestmark = pytest.mark.anyio


async def test_clients_connect_over_wss_and_https(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn(client_tls(trustme.CA(), tmp_path))
    context = server_context(server)
    assert f"serving: clients connect to wss://127.0.0.1:{server.port}/socket/websocket" in (
        server.output()
    )
    assert get_json(server.http + "/healthz", context) == {"status": "ok"}
    async with connect(server.ws(), ssl=context) as alice, connect(server.ws(), ssl=context) as bob:
        await alice.join("room:tls")
        await bob.join("room:tls")
        await alice.publish("room:tls", "said", {"over": "wss"})
        assert await bob.recv() == ["1", None, "room:tls", "said", {"over": "wss"}]
    # Plain WebSockets on the TLS port get no answer they can use.
    with pytest.raises((websockets.InvalidMessage, OSError)):
        async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/socket/websocket", open_timeout=5
        ):
            pass
    # A client that does not trust the certificate's CA refuses the server.
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        async with websockets.connect(server.ws(), open_timeout=5):
            pass


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DPS_PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_certificate_needs_its_key(tmp_path: Path) -> None:
    files = client_tls(trustme.CA(), tmp_path)
    result = start({"DPS_TLS_CERT": files["DPS_TLS_CERT"]})
    assert result.returncode == 2
    assert result.stderr == "DPS_TLS_KEY: needed too (TLS for client sockets takes both files)\n"


def test_a_key_of_another_certificate_is_one_line_and_status_2(tmp_path: Path) -> None:
    files = client_tls(trustme.CA(), tmp_path / "a")
    other = client_tls(trustme.CA(), tmp_path / "b")
    result = start({"DPS_TLS_CERT": files["DPS_TLS_CERT"], "DPS_TLS_KEY": other["DPS_TLS_KEY"]})
    assert result.returncode == 2
    assert result.stderr.startswith("DPS_TLS_CERT/DPS_TLS_KEY: cannot load ")
    assert result.stderr.count("\n") == 1
