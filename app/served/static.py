"""What browsers load: static files with cache headers, and pages under a content policy.

A file under a `vendor/` folder carries its version in its path (`vendor/phoenix-1.8.16/`):
it never changes, so a browser may keep it for a year without asking again. Every other
file is DPS's own and changes with an upgrade: a browser revalidates it on each use, and
its ETag makes the answer a bodiless 304 while it is unchanged. Pages are sent with a
Content-Security-Policy that allows this origin only, so a page cannot load or send
anything elsewhere, even by mistake.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# Module scripts are refused unless served as JavaScript, and Python 3.11's table has no .mjs.
mimetypes.add_type("text/javascript", ".mjs")

VENDOR = "vendor"
FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class Assets(StaticFiles):
    """A folder of static files, each answered with the cache header its kind calls for."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self.root = directory.resolve()  # as StaticFiles resolves the files it finds

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        vendored = Path(full_path).relative_to(self.root).parts[0] == VENDOR
        response.headers["cache-control"] = FOREVER if vendored else REVALIDATE
        return response


def page(html: bytes, status_code: int = 200) -> HTMLResponse:
    """An HTML page, revalidated on each visit and confined to this origin."""
    headers = {"cache-control": REVALIDATE, "content-security-policy": POLICY}
    return HTMLResponse(html, status_code, headers=headers)
