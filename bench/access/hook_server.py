"""A hook server that allows everything at once, to measure what hooks cost DPS itself.

python bench/access/hook_server.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ALLOW = b'{"allow":true}'


async def hook(request: Request) -> Response:
    await request.body()
    return Response(ALLOW, media_type="application/json")


app = Starlette(routes=[Route("/hooks/{kind}", hook, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
        loop="uvloop", http="httptools",
    )  # fmt: skip
