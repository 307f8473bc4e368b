"""docker-compose.yml: it parses, and every node's environment is one DPS accepts.

Docker itself is not available where the tests run; this checks what can be checked
without it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml

from app import settings
from app.ring import load
from tests.support import ROOT


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data["services"]


def resolved(value: str) -> str:
    """Compose's ${VAR:-default} as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_redis_7_and_two_nodes_of_each_role() -> None:
    services = compose()
    assert services["redis"]["image"].startswith("redis:7")
    roles = {name: s["environment"]["DPS_APP"] for name, s in services.items() if name != "redis"}
    assert sorted(roles.values()) == ["ts", "ts", "ws", "ws"]
    published = sorted(p.split(":")[0] for s in services.values() for p in s.get("ports", []))
    assert published == ["4000", "4001"]


@pytest.mark.parametrize("name", ["ts-a", "ts-b", "ws-a", "ws-b"])
def test_each_nodes_environment_is_accepted(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    environment = compose()[name]["environment"]
    known = {settings.env_name(field) for field in settings.Settings.model_fields}
    assert set(environment) <= known, f"unknown settings: {set(environment) - known}"
    for variable in list(os.environ):
        if variable.startswith("DPS_") or variable == "REDIS_URL":
            monkeypatch.delenv(variable)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, resolved(str(value)))
    node = settings.load()
    assert node.node_name == name
    if node.app == "ts":
        assert name in load(ROOT / "ring.toml").servers
