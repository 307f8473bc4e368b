"""`/` on a gateway: a demo chat, for a person to see DPS work (DPS_DEMO=0 turns it off).

The page (`chat.html`, `static/`) uses the official `phoenix` JavaScript client, vendored
as the npm package ships it (`static/vendor/phoenix-<version>/`, with its licence), and
talks to the gateway that served it through the same `/socket` as any client: it is a
client like any other, with no route or privilege of its own. Nothing is built: the files
are served as they are.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from app.served import static

HERE = Path(__file__).parent
PAGE = (HERE / "chat.html").read_bytes()


async def chat(request: Request) -> Response:
    return static.page(PAGE)


ROUTES: list[BaseRoute] = [
    Route("/", chat),
    Mount("/static", static.Assets(HERE / "static")),
]
