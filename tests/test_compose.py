"""docker-compose.yml: it parses, every node's environment is one DPS accepts, and it is
safe by default: a required secret, gateways on loopback, healthchecks, one image.

Docker itself is not available where the tests run; this checks what can be checked
without it, and runs each node's healthcheck command against a real node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from app import settings
from app.ring import load
from tests.support import ROOT, Server, client_tls

NODES = ["ts-a", "ts-b", "ws-a", "ws-b"]
GATEWAYS = ["ws-a", "ws-b"]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data["services"]


def resolved(value: str, environ: dict[str, str]) -> str:
    """Compose's ${VAR:-default} and ${VAR:?error} as compose resolves them in `environ`."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if environ.get(name):
            return environ[name]
        if kind == "?":
            raise ValueError(f"compose refuses to start: {rest}")
        return rest

    return re.sub(r"\$\{([A-Z_]+):([-?])([^}]*)\}", one, value)


def test_redis_7_and_two_nodes_of_each_role() -> None:
    services = compose()
    assert services["redis"]["image"].startswith("redis:7")
    roles = {name: s["environment"]["DPS_APP"] for name, s in services.items() if name != "redis"}
    assert sorted(roles.values()) == ["ts", "ts", "ws", "ws"]


def test_the_cluster_secret_is_required_not_defaulted() -> None:
    for name in NODES:
        secret = compose()[name]["environment"]["DPS_CLUSTER_SECRET"]
        assert secret.startswith("${DPS_CLUSTER_SECRET:?"), f"{name}: {secret}"
        with pytest.raises(ValueError, match="DPS_CLUSTER_SECRET"):
            resolved(secret, {})


def test_gateways_are_published_on_loopback_only_and_offer_an_api_key() -> None:
    services = compose()
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert published == {"ws-a": ["127.0.0.1:4000:4000"], "ws-b": ["127.0.0.1:4001:4000"]}
    for name in GATEWAYS:
        assert services[name]["environment"]["DPS_API_KEY"] == "${DPS_API_KEY:-}"
    header = (ROOT / "docker-compose.yml").read_text().split("\nx-node")[0]
    assert "DPS_API_KEY" in header and "/cluster" in header and "/metrics" in header


def test_one_image_built_once() -> None:
    services = compose()
    built = [name for name in NODES if "build" in services[name]]
    assert len(built) == 1
    assert len({services[name]["image"] for name in NODES}) == 1


def test_every_node_and_redis_have_healthchecks_and_nodes_wait_for_redis() -> None:
    services = compose()
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in NODES:
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def healthcheck(port: int, **env: str) -> int:
    """The exit status of the nodes' healthcheck command, run as compose would."""
    command = compose()["ws-a"]["healthcheck"]["test"]
    assert command[:2] == ["CMD", "python"]
    environ = {**os.environ, "DPS_PORT": str(port), **env}
    argv = [sys.executable, *command[2:]]
    return subprocess.run(argv, env=environ, capture_output=True, timeout=30).returncode


def test_the_healthcheck_passes_on_a_ready_node_and_fails_without_one(server: Server) -> None:
    assert healthcheck(server.port) == 0
    server.stop()
    assert healthcheck(server.port) != 0


def test_the_healthcheck_asks_over_tls_a_node_that_serves_tls(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    files = client_tls(trustme.CA(), tmp_path)
    server = spawn(files)
    assert healthcheck(server.port, **files) == 0
    assert healthcheck(server.port) != 0  # plain HTTP gets no answer from a TLS port


@pytest.mark.parametrize("name", NODES)
def test_each_nodes_environment_is_accepted(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    environment = compose()[name]["environment"]
    known = {settings.env_name(field) for field in settings.Settings.model_fields}
    assert set(environment) <= known, f"unknown settings: {set(environment) - known}"
    for variable in list(os.environ):
        if variable.startswith("DPS_") or variable == "REDIS_URL":
            monkeypatch.delenv(variable)
    given = {"DPS_CLUSTER_SECRET": "a-long-random-secret"}
    for variable, value in environment.items():
        monkeypatch.setenv(variable, resolved(str(value), given))
    node = settings.load()
    assert node.node_name == name
    if node.app == "ts":
        assert name in load(ROOT / "ring.toml").servers
