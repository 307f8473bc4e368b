"""TLS for client sockets (DPS_TLS_CERT, DPS_TLS_KEY): wss:// and https:// on a gateway's
port, for deployments without a proxy that terminates TLS in front of it.

Kept apart from node links' TLS (`app.link.tls`, DPS_LINK_TLS_*): clients verify the
gateway's certificate the way browsers do (a public CA, the host name they dial) and
present none, while nodes verify each other against the cluster's own CA. A gateway may
have both; a topic server serves no client sockets, and refuses DPS_TLS_* at start. Like
the link files, the two go together, and files that cannot be loaded stop the node at
start with one line.
"""

from __future__ import annotations

import ssl
from typing import Any

from app.settings import Settings, SettingsError

FILES = ("tls_cert", "tls_key")


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's TLS options for the client port; {} without TLS. Raises
    `SettingsError` when a file is missing or cannot be loaded (uvicorn would load them
    only once serving, with a traceback)."""
    paths = settings.together(FILES, "TLS for client sockets takes both files")
    if paths is None:
        return {}
    cert, key = paths
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        problem = f"DPS_TLS_CERT/DPS_TLS_KEY: cannot load {cert} or {key}: {exc}"
        raise SettingsError(problem) from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
