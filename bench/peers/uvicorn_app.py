"""How every peer is started: its ASGI app under uvicorn, with uvicorn's defaults (uvloop,
httptools) as a user would deploy it; `--redis` for the peers that fan out through Redis."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import uvicorn


def serve(description: str, build: Callable[[str], Any]) -> None:
    """Parse --host, --port and --redis, build the app with the Redis URL, and serve it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="(if it uses Redis)")
    args = parser.parse_args()
    uvicorn.run(
        build(args.redis),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
