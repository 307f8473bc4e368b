"""Settings: defaults, and one clear line for every bad value."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from app import settings
from tests.support import ROOT


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DPS_"):
            monkeypatch.delenv(name)
    s = settings.load()
    assert (s.app, s.host, s.port) == ("all", "127.0.0.1", 4000)
    assert s.max_frame_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DPS_APP", "gateway"),
        ("DPS_PORT", "http"),
        ("DPS_PORT", "0"),
        ("DPS_PORT", "70000"),
        ("DPS_MAX_FRAME_BYTES", "12"),
        ("DPS_SOCKET_QUEUE", "-1"),
        ("DPS_PUBLISH_TIMEOUT", "0"),
        ("DPS_LOG_LEVEL", "loud"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingsError) as err:
        settings.load()
    message = str(err.value)
    assert message.startswith(f"{name}: invalid value {value!r} (accepts ")
    assert "\n" not in message


def test_empty_values_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPS_PORT", "")
    assert settings.load().port == 4000


def test_cluster_settings_on_the_embedded_default_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379")
    monkeypatch.setenv("DPS_HANDOVER", "1")
    assert settings.load().ignored() == ["DPS_HANDOVER", "REDIS_URL"]
    monkeypatch.setenv("DPS_APP", "ws")
    monkeypatch.setenv("DPS_CLUSTER_SECRET", secrets.token_urlsafe())
    assert settings.load().ignored() == []


SECRET_ACCEPTS = "a shared secret of at least 8 characters, the same on every node"


@pytest.mark.parametrize("role", ["ws", "ts"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "0.0.0.0"])
def test_cluster_nodes_need_the_cluster_secret_wherever_they_listen(
    monkeypatch: pytest.MonkeyPatch, role: str, host: str
) -> None:
    monkeypatch.delenv("DPS_CLUSTER_SECRET", raising=False)
    monkeypatch.setenv("DPS_APP", role)
    monkeypatch.setenv("DPS_HOST", host)
    with pytest.raises(settings.SettingsError) as err:
        settings.load()
    assert str(err.value) == (
        f"DPS_CLUSTER_SECRET: required with DPS_APP={role} (accepts {SECRET_ACCEPTS})"
    )
    secret = secrets.token_urlsafe()
    monkeypatch.setenv("DPS_CLUSTER_SECRET", secret)
    cluster_secret = settings.load().cluster_secret
    assert cluster_secret is not None and cluster_secret.get_secret_value() == secret


def test_the_embedded_default_needs_no_cluster_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DPS_CLUSTER_SECRET", raising=False)
    monkeypatch.setenv("DPS_HOST", "0.0.0.0")
    assert settings.load().cluster_secret is None


def test_unknown_dps_variables_are_reported() -> None:
    assert settings.unknown_variables({"DPS_PROT": "1", "DPS_PORT": "1", "HOME": "/"}) == [
        "DPS_PROT"
    ]


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m app` with only `env` (and PATH), expected to exit at once."""
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_server_refuses_a_bad_setting_with_status_2_and_one_line() -> None:
    result = serve({"DPS_PORT": "99999"})
    assert result.returncode == 2
    assert result.stderr == "DPS_PORT: invalid value '99999' (accepts a TCP port, 1-65535)\n"


@pytest.mark.parametrize("role", ["ws", "ts"])
def test_a_cluster_node_without_the_secret_exits_with_status_2_and_one_line(role: str) -> None:
    result = serve({"DPS_APP": role, "DPS_HOST": "127.0.0.1", "DPS_NODE": "ts-a"})
    assert result.returncode == 2
    assert result.stderr == (
        f"DPS_CLUSTER_SECRET: required with DPS_APP={role} (accepts {SECRET_ACCEPTS})\n"
    )


def test_workers_are_a_count_or_auto_for_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.load().worker_count is None
    monkeypatch.setenv("DPS_WORKERS", "3")
    assert settings.load().worker_count == 3
    monkeypatch.setenv("DPS_WORKERS", "auto")
    assert settings.load().worker_count == len(os.sched_getaffinity(0))
    assert settings.load("2").worker_count == 2  # `dps --workers 2` over DPS_WORKERS
    for bad in ("0", "-1", "many", "1000"):
        monkeypatch.setenv("DPS_WORKERS", bad)
        with pytest.raises(settings.SettingsError, match=f"^DPS_WORKERS: invalid value '{bad}'"):
            settings.load()


def test_a_worker_set_is_the_default_roles_and_ignores_what_spans_machines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DPS_CLUSTER_SECRET", raising=False)
    monkeypatch.setenv("DPS_WORKERS", "2")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379")
    monkeypatch.setenv("DPS_HANDOVER", "1")
    assert settings.load().ignored() == ["REDIS_URL"]  # the handover applies within the set
    monkeypatch.setenv("DPS_APP", "ws")
    monkeypatch.setenv("DPS_CLUSTER_SECRET", secrets.token_urlsafe())
    with pytest.raises(settings.SettingsError) as err:
        settings.load()
    assert str(err.value).startswith("DPS_WORKERS: not with DPS_APP=ws")


def test_client_tls_is_refused_on_a_topic_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPS_APP", "ts")
    monkeypatch.setenv("DPS_CLUSTER_SECRET", secrets.token_urlsafe())
    monkeypatch.setenv("DPS_TLS_CERT", "/etc/dps/cert.pem")
    with pytest.raises(settings.SettingsError) as err:
        settings.load()
    assert "DPS_LINK_TLS_*" in str(err.value)
