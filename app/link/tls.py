"""TLS for node links (DPS_LINK_TLS_CERT, DPS_LINK_TLS_KEY, DPS_LINK_TLS_CA).

Both ends present a certificate and verify the other's against the cluster's CA, on top
of the shared-secret handshake. The dialer checks that the topic server's certificate
names the host it dials (its address in Redis or ring.toml). The listening end serves
TLS on its whole port, so `/healthz` and `/metrics` stay reachable without a client
certificate (CERT_OPTIONAL: a certificate that is presented must verify), and its link
endpoint refuses a dialer that presented none.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from app.settings import Settings, SettingsError

FILES = ("link_tls_cert", "link_tls_key", "link_tls_ca")


def _paths(settings: Settings) -> tuple[Path, ...] | None:
    return settings.together(FILES, "TLS links take all three files")


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """What a dialer presents and verifies; None without TLS. Raises `SettingsError`."""
    paths = _paths(settings)
    if paths is None:
        return None
    cert, key, ca = paths
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"DPS_LINK_TLS_*: cannot load {cert}, {key} or {ca}: {exc}") from None
    return context


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's TLS options for a node that listens for links; {} without TLS."""
    paths = _paths(settings)
    if paths is None:
        return {}
    cert, key, ca = paths
    return {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_ca_certs": str(ca),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
    }
