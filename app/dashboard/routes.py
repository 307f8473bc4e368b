"""The dashboard's routes, the same on every node: the page and its login, the stream of
frames it shows (server-sent events), this node's snapshot for the dashboards of other
nodes, and the page's static files. See `app.dashboard.access` for who may see what."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from app.dashboard import access
from app.dashboard.collector import MAX_VIEWERS, NODE_PATH, Dashboard
from app.ops import unauthorized
from app.served import http, static
from app.settings import Settings
from app.throttled_log import ThrottledLog

log = logging.getLogger("dps.dashboard")
wrong_key = ThrottledLog(log, logging.WARNING)

HERE = Path(__file__).parent
PAGE = (HERE / "dashboard.html").read_bytes()
LOGIN = (HERE / "login.html").read_bytes()
PROBLEM = b"<!-- problem -->"  # where the login page says what went wrong
LOGIN_BODY = 4096  # bytes a login form may send


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _login_page(problem: str | None = None) -> Response:
    said = b"" if problem is None else b'<p class="problem">' + problem.encode() + b"</p>"
    return static.page(LOGIN.replace(PROBLEM, said), 401)


async def page(request: Request) -> Response:
    if not access.viewer(request, _settings(request).api_key, time.time()):
        return _login_page()
    return static.page(PAGE)


async def login(request: Request) -> Response:
    settings = _settings(request)
    key = settings.api_key
    if key is None:
        return RedirectResponse("/dashboard", 303)
    try:
        form = await http.read_body(request, LOGIN_BODY, settings.handshake_timeout)
    except ClientDisconnect:
        form = http.BodyRefused.TOO_SLOW  # nobody is left to read an answer
    if form is http.BodyRefused.TOO_LARGE:
        return _login_page("That form was too large.")
    if form is http.BodyRefused.TOO_SLOW:
        return Response(status_code=400, headers={"connection": "close"})
    given = parse_qs(form.decode(errors="replace")).get("key", [""])[0]
    if not access.matches(given, key):
        client = request.client
        wrong_key("dashboard login with a wrong key from %s", client.host if client else "?")
        return _login_page("That is not the key (DPS_API_KEY).")
    response = RedirectResponse("/dashboard", 303)
    response.set_cookie(
        access.COOKIE,
        access.session_cookie(key, time.time()),
        max_age=access.SESSION,
        path=access.COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def events(request: Request) -> Response:
    if not access.viewer(request, _settings(request).api_key, time.time()):
        return unauthorized("DPS_API_KEY")
    dashboard = _dashboard(request)
    if len(dashboard.viewers) >= MAX_VIEWERS:
        return JSONResponse({"error": f"{MAX_VIEWERS} dashboards open on this node"}, 503)
    served: http.ServedHttp | None = request.scope.get("extensions", {}).get(http.EXTENSION)

    # The viewer joins once the stream is being written, so that a client gone before
    # then leaves nothing behind; the stream's end, however it comes, makes it leave.
    async def stream() -> AsyncIterator[bytes]:
        viewer = dashboard.join()
        if viewer is None:
            return
        if served is not None:
            served.on_shutdown = viewer.end
        try:
            while (data := await viewer.frames.get()) is not None:
                yield data
        finally:
            dashboard.leave(viewer)

    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


async def node_snapshot(request: Request) -> Response:
    settings = _settings(request)
    if not (
        access.peer(request, settings.cluster_secret)
        or access.viewer(request, settings.api_key, time.time())
    ):
        return unauthorized("DPS_API_KEY")
    return Response(orjson.dumps(_dashboard(request).snapshot()), media_type="application/json")


ROUTES: list[BaseRoute] = [
    Route("/dashboard", page),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/events", events),
    Route(NODE_PATH, node_snapshot),
    Mount("/dashboard/static", static.Assets(HERE / "static")),
]
