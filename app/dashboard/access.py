"""Who may see a node's dashboard when DPS_API_KEY is set (without it: anyone, as /cluster).

A browser cannot put a bearer header on an EventSource, and a key in a URL ends up in
the browser's history, in proxies' logs and in Referer headers. So a person enters the
key once, in the login form, and gets a session cookie: an expiry time and an HMAC of it
under the key. The cookie is HttpOnly (page scripts never see it), SameSite=Strict (no
other site's page can use it) and scoped to /dashboard; it never holds the key, and
changing the key ends every session. Tools still send `Authorization: Bearer <key>`.

Another node's dashboard asks this one for its snapshot with a token derived from the
cluster secret every node shares (`PEER_HEADER`), so the dashboards of a cluster see one
another whether or not each node has an API key, or the same one.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr
from starlette.requests import Request

from app.ops import authorized

COOKIE = "dps_dashboard"
COOKIE_PATH = "/dashboard"
SESSION = 12 * 3600  # seconds a login lasts
PEER_HEADER = "x-dps-peer"


def _mac(key: SecretStr, message: str) -> str:
    return hmac.new(key.get_secret_value().encode(), message.encode(), hashlib.sha256).hexdigest()


def matches(given: str, key: SecretStr) -> bool:
    """Whether the key a person entered is the key (compared in constant time)."""
    return hmac.compare_digest(given.encode(), key.get_secret_value().encode())


def session_cookie(key: SecretStr, now: float) -> str:
    expires = int(now) + SESSION
    return f"{expires}.{_mac(key, f'dps dashboard session {expires}')}"


def valid_session(key: SecretStr, cookie: str, now: float) -> bool:
    expires, _, mac = cookie.partition(".")
    if not expires.isdigit() or int(expires) <= now:
        return False
    expected = _mac(key, f"dps dashboard session {expires}")
    return hmac.compare_digest(mac.encode(), expected.encode())


def peer_token(secret: SecretStr) -> str:
    return _mac(secret, "dps dashboard peer")


def viewer(request: Request, key: SecretStr | None, now: float) -> bool:
    """Whether the request may see the dashboard: no key set, the bearer key, or a session."""
    if authorized(request, key):
        return True
    assert key is not None  # authorized() lets every request through without one
    return valid_session(key, request.cookies.get(COOKIE, ""), now)


def peer(request: Request, secret: SecretStr | None) -> bool:
    """Whether the request comes from a node of this cluster (it knows the secret)."""
    given = request.headers.get(PEER_HEADER)
    if secret is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), peer_token(secret).encode())
