"""Presence against a real embedded server: the frames on the wire (V2 and V1), the errors,
`GET /api/presence` and `dps presence`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import ROOT, Client, Server, connect, get_json

pytestmark = pytest.mark.anyio

CHANNELS = """
[[channel]]
topic = "room:*"
presence = true

[[channel]]
topic = "*"
"""
OK = {"status": "ok", "response": {}}


@pytest.fixture
def present(spawn: Callable[..., Server], tmp_path: Path) -> Server:
    """The embedded server, with presence on the topics room:*, a diff per turn (so that
    each step here is one diff of its own)."""
    path = tmp_path / "channels.toml"
    path.write_text(CHANNELS)
    env = {"DPS_CHANNELS": str(path), "DPS_MAX_PRESENCE_META": "64", "DPS_API_KEY": "k"}
    return spawn({**env, "DPS_PRESENCE_INTERVAL": "0"})


class Meta:
    """A meta as the server makes it: the client's fields, a phx_ref and online_at."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):
            return False
        mine = {k: v for k, v in other.items() if k not in ("phx_ref", "online_at")}
        return (
            mine == self.fields
            and isinstance(other.get("phx_ref"), str)
            and isinstance(other.get("online_at"), int)
        )

    def __repr__(self) -> str:
        return f"Meta({self.fields})"


def metas(frame: Any, key: str) -> list[dict[str, Any]]:
    return list(frame[key]["metas"])


async def join(client: Client, topic: str, join_ref: str, presence: Any) -> Any:
    """Join; the ok reply must come first, then presence_state, which is returned. (The diff
    of the socket's own join reaches the gateway before its state, which holds it: the
    socket does not get it.)"""
    await client.send([join_ref, join_ref, topic, "phx_join", {"presence": presence}])
    assert await client.recv() == [join_ref, join_ref, topic, "phx_reply", OK]
    state = await client.recv()
    assert state[:4] == [join_ref, None, topic, "presence_state"]
    return state[4]


async def diff(client: Client, topic: str, join_ref: str) -> Any:
    frame = await client.recv()
    assert frame[:4] == [join_ref, None, topic, "presence_diff"]
    return frame[4]


async def presence_api(server: Server, topic: str, key: str | None = "k") -> tuple[int, Any]:
    def get() -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{server.http}/api/presence?topic={topic}",
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    return await asyncio.to_thread(get)


async def test_joins_updates_and_leaves_as_phoenix_sends_them(present: Server) -> None:
    async with connect(present.ws()) as alice, connect(present.ws()) as bob:
        state = await join(alice, "room:1", "1", {"key": "alice", "meta": {"tab": 1}})
        assert state == {"alice": {"metas": [Meta(tab=1)]}}
        [mine] = metas(state, "alice")

        # A second socket sees both; the first gets the diff of its join.
        state = await join(bob, "room:1", "4", {"key": "bob"})
        assert state == {"alice": {"metas": [mine]}, "bob": {"metas": [Meta()]}}
        [bobs] = metas(state, "bob")
        assert await diff(alice, "room:1", "1") == {
            "joins": {"bob": {"metas": [bobs]}},
            "leaves": {},
        }

        # An update: the old meta leaves and the new one joins, naming the old, in one diff.
        await bob.send(["4", "5", "room:1", "presence_update", {"away": True}])
        assert await bob.recv() == ["4", "5", "room:1", "phx_reply", OK]
        update = await diff(alice, "room:1", "1")
        assert update["leaves"] == {"bob": {"metas": [bobs]}}
        [new] = metas(update["joins"], "bob")
        assert new == {**Meta(away=True).fields, **new} and new["phx_ref_prev"] == bobs["phx_ref"]
        assert new["phx_ref"] != bobs["phx_ref"]
        assert await diff(bob, "room:1", "4") == update

        # The API answers the owner's view.
        assert await presence_api(present, "room:1") == (
            200,
            {"alice": {"metas": [mine]}, "bob": {"metas": [new]}},
        )

        # A leave: a diff with the leave, to the others.
        await bob.send(["4", "6", "room:1", "phx_leave", {}])
        assert await bob.recv() == ["4", "6", "room:1", "phx_reply", OK]
        assert await bob.recv() == ["4", "4", "room:1", "phx_close", {}]
        assert await diff(alice, "room:1", "1") == {
            "joins": {},
            "leaves": {"bob": {"metas": [new]}},
        }
        await bob.expect_silence()

    async with connect(present.ws()) as carol:
        state = await join(carol, "room:1", "1", {})  # alice left with her socket: carol alone
        [key] = state
        assert key not in ("alice", "bob") and state[key]["metas"] == [Meta()]


async def test_two_tabs_of_one_user_are_one_key_with_two_metas(present: Server) -> None:
    async with connect(present.ws()) as tab1, connect(present.ws(None)) as tab2:
        await join(tab1, "room:2", "1", {"key": "dana", "meta": {"tab": 1}})
        # The second tab speaks V1: objects, no join_ref, the same presence.
        frame = {"topic": "room:2", "event": "phx_join", "ref": "1"}
        payload = {"presence": {"key": "dana", "meta": {"tab": 2}}}
        await tab2.send({**frame, "payload": payload})
        assert await tab2.recv() == {
            "topic": "room:2",
            "event": "phx_reply",
            "payload": OK,
            "ref": "1",
        }
        state = await tab2.recv()
        assert (state["event"], state["ref"]) == ("presence_state", None)
        assert state["payload"] == {"dana": {"metas": [Meta(tab=1), Meta(tab=2)]}}
        joined = await diff(tab1, "room:2", "1")
        assert joined == {"joins": {"dana": {"metas": [Meta(tab=2)]}}, "leaves": {}}
    status, body = await presence_api(present, "room:2")
    assert (status, body) == (200, {})  # both sockets closed: both left


async def test_a_socket_without_a_key_gets_one_and_its_meta_is_bounded(present: Server) -> None:
    async with connect(present.ws()) as a:
        state = await join(a, "room:3", "1", {"meta": {"x": 1}})
        [key] = state
        assert state[key]["metas"] == [Meta(x=1)]
        await a.send(["2", "2", "room:4", "phx_join", {"presence": {"meta": {"s": "x" * 64}}}])
        detail = "the presence meta is larger than 64 bytes (DPS_MAX_PRESENCE_META)"
        response = {"reason": "malformed payload", "detail": detail}
        assert (await a.recv())[4] == {"status": "error", "response": response}
        await a.send(["1", "3", "room:3", "presence_diff", {"joins": {}, "leaves": {}}])
        assert (await a.recv())[4] == {"status": "error", "response": {"reason": "unknown event"}}


async def test_topics_without_presence_send_nothing_of_it(present: Server) -> None:
    async with connect(present.ws()) as a:
        await a.join("plain")  # the ok reply, and nothing else
        await a.send(["1", "2", "plain", "presence_update", {}])
        detail = "presence is not enabled on this topic"
        response = {"reason": "unknown event", "detail": detail}
        assert (await a.recv())[4] == {"status": "error", "response": response}
        await a.expect_silence()
    reason = "no presence on this topic: its channel rule does not say presence = true"
    assert await presence_api(present, "plain") == (404, {"error": reason})
    assert await presence_api(present, "room:1", key=None) == (
        401,
        {"error": "missing or wrong key (Authorization: Bearer <DPS_API_KEY>)"},
    )
    assert await presence_api(present, "") == (400, {"error": "topic is empty"})


def test_dps_presence_prints_the_state(present: Server) -> None:
    def presence(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "app", "presence", *args, "--url", present.http]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)

    shown = presence("room:9", "--api-key", "k")
    assert (shown.returncode, orjson.loads(shown.stdout)) == (0, {})
    refused = presence("room:9")
    assert refused.returncode == 1 and refused.stderr.startswith("401: ")
    assert get_json(present.http + "/healthz") is not None
