"""Operations endpoints, the same on every node: /healthz, /readyz, /metrics, /cluster.

`/healthz` and `/readyz` answer anyone (probes). `/cluster` names the nodes, their
incarnations and links: with DPS_API_KEY set it needs that key, as the HTTP API does. On
a process of a worker set (`dps --workers`) it also shows the whole set, as the
supervisor last described it (DPS_WORKER_SET names its file).
`/metrics` answers anyone (Prometheus scrapes it) unless DPS_METRICS_KEY is set.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.counters import Counters
from app.metrics import CONTENT_TYPE, Metrics
from app.settings import Role


class Node(Protocol):
    """What every role's node offers to the process around it."""

    role: Role
    counters: Counters
    metrics: Metrics

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def unready(self) -> list[str]:
        """Why the node cannot do its job yet, for /readyz; empty once it can."""
        ...

    def gauges(self) -> dict[str, tuple[float, str]]:
        """Current values (with their help text) exported beside the counters."""
        ...

    def describe(self) -> dict[str, Any]:
        """Role-specific parts of /cluster."""
        ...


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    reasons = _node(request).unready()
    if not reasons:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)


def authorized(request: Request, key: SecretStr | None) -> bool:
    """Whether the request carries `Authorization: Bearer <key>` (any request, without a
    key); compared in constant time."""
    if key is None:
        return True
    given = request.headers.get("authorization", "")
    expected = "Bearer " + key.get_secret_value()
    return hmac.compare_digest(given.encode(), expected.encode())


def unauthorized(setting: str) -> JSONResponse:
    return JSONResponse(
        {"error": f"missing or wrong key (Authorization: Bearer <{setting}>)"}, status_code=401
    )


async def metrics(request: Request) -> Response:
    if not authorized(request, request.app.state.settings.metrics_key):
        return unauthorized("DPS_METRICS_KEY")
    return Response(_node(request).metrics.render(), media_type=CONTENT_TYPE)


async def cluster(request: Request) -> JSONResponse:
    if not authorized(request, request.app.state.settings.api_key):
        return unauthorized("DPS_API_KEY")
    node = _node(request)
    counters: dict[str, float] = dict(node.counters.snapshot())
    counters.update((name, value) for name, (value, _) in node.gauges().items())
    body = {"node": node.name, "role": node.role, **node.describe(), "counters": counters}
    worker_set: Path | None = request.app.state.settings.worker_set
    if worker_set is not None:
        try:
            body["workers"] = json.loads(worker_set.read_text())
        except (OSError, ValueError) as exc:
            body["workers"] = {"error": f"cannot read {worker_set}: {exc}"}
    return JSONResponse(body)


ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics),
    Route("/cluster", cluster),
]
