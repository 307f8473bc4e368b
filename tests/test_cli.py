"""The `dps` command as a newcomer meets it: --version, serve --help, the start-up line,
and a port that is already taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version

from app.settings import Settings, default_text, env_name
from tests.support import ROOT, Server, free_port


def dps(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version() -> None:
    result = dps("--version")
    assert (result.returncode, result.stdout) == (0, f"dps {version('dps')}\n")


def test_serve_help_lists_every_setting_with_its_default_and_what_it_accepts() -> None:
    result = dps("serve", "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for field, info in Settings.model_fields.items():
        row = next((i for i, line in enumerate(lines) if line.split()[:1] == [env_name(field)]), -1)
        assert row >= 0, f"{env_name(field)} is missing from `dps serve --help`"
        assert lines[row].split()[1:] == ["default", default_text(field)]
        assert lines[row + 1].strip() == info.description


def test_the_start_up_line_names_the_url_to_connect_to(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/socket/websocket"
    assert f"serving: clients connect to {url}" in server.output()


def test_a_port_already_taken_is_one_line_naming_dps_port_and_status_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = dps(env={"DPS_PORT": str(port)})
    assert result.returncode == 2
    assert result.stderr == (
        f"DPS_PORT: 127.0.0.1:{port} is already in use "
        "(another DPS? pick another port with DPS_PORT=...)\n"
    )
    assert "serving" not in result.stdout + result.stderr


def test_a_host_that_is_not_ours_is_one_line_naming_dps_host() -> None:
    result = dps(env={"DPS_HOST": "192.0.2.1", "DPS_PORT": str(free_port())})
    assert result.returncode == 2
    assert result.stderr == "DPS_HOST: 192.0.2.1 is not an address of this machine\n"
