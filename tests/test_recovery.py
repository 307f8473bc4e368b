"""History and recovery end to end: a real DPS process whose channels.toml keeps the
history of some topics, `websockets` clients, and the HTTP API."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients.test_websocat import EVENT, JOIN, JOIN_REPLY, PUBLISH, PUBLISH_REPLY
from tests.support import Client, Server, connect, eventually, http_get
from tests.test_api import post

pytestmark = pytest.mark.anyio

RULES = """
[[channel]]
topic = "topics:*"
history_size = 100

[[channel]]
topic = "kept:*"
history_size = 3

[[channel]]
topic = "brief:*"
history_ttl = 1

[[channel]]
topic = "*"
"""
OK = {"status": "ok", "response": {}}
MALFORMED = {
    "reason": "malformed payload",
    "detail": 'recover expects {"epoch": string, "offset": integer >= 0}',
}


def with_history(spawn: Callable[..., Server], tmp_path: Path, **env: str) -> Server:
    """The embedded default with the rules above (and `env`)."""
    path = tmp_path / "channels.toml"
    path.write_text(RULES)
    return spawn({"DPS_CHANNELS": str(path), **env})


@pytest.fixture
def server(spawn: Callable[..., Server], tmp_path: Path) -> Server:
    return with_history(spawn, tmp_path)


async def join(client: Client, topic: str, payload: Any) -> Any:
    """Join `topic` as instance "1" with `payload`; the response of its ok reply."""
    await client.send(["1", "1", topic, "phx_join", payload])
    reply = await client.recv()
    assert reply[:4] == ["1", "1", topic, "phx_reply"] and reply[4]["status"] == "ok", reply
    return reply[4]["response"]


async def publish(publisher: Client, topic: str, n: int) -> None:
    """`publisher` (joined to `topic`, without positions) publishes {"n": n} as "ev", and
    reads its own copy and the reply: the owner has numbered the message."""
    ref = await publisher.publish(topic, "ev", {"n": n})
    got = [await publisher.recv(), await publisher.recv()]
    expected = [["1", None, topic, "ev", {"n": n}], ["1", ref, topic, "phx_reply", OK]]
    assert sorted(got, key=str) == sorted(expected, key=str)


def event(position: str, topic: str, n: int) -> list[Any]:
    """The frame a socket that asked for positions gets for {"n": n}."""
    return ["1", position, topic, "ev", {"n": n}]


def read_history(server: Server, key: str | None = None, **query: Any) -> tuple[int, Any]:
    """GET /api/history with `query` (and the API key `key`); (status, body)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return http_get(f"{server.http}/api/history?{urllib.parse.urlencode(query)}", headers)


async def history(server: Server, key: str | None = None, **query: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(read_history, server, key, **query)


async def epoch_of(server: Server, topic: str) -> str:
    status, body = await history(server, topic=topic, limit=1)
    assert status == 200 and body["epoch"], body
    return str(body["epoch"])


async def test_the_readme_session_is_unchanged_on_a_topic_with_history(server: Server) -> None:
    async with connect(server.ws()) as one, connect(server.ws()) as two:
        await one.send(JOIN)
        assert await one.conn.recv() == JOIN_REPLY
        await two.send(JOIN)
        assert await two.conn.recv() == JOIN_REPLY
        await two.send(PUBLISH)
        assert sorted([await two.conn.recv(), await two.conn.recv()]) == sorted(
            [EVENT, PUBLISH_REPLY]
        )
        assert await one.conn.recv() == EVENT
        await one.expect_silence()
    # The topic does keep history: the message is there, at offset 1.
    status, body = await history(server, topic="topics:matrix")
    assert status == 200
    assert [(m["offset"], m["payload"]) for m in body["messages"]] == [
        (1, {"message": "red pill or blue pill?"})
    ]


async def test_a_socket_that_asks_for_positions_gets_them_in_the_ref_slot(server: Server) -> None:
    topic = "topics:positions"
    async with connect(server.ws()) as reader, connect(server.ws()) as publisher:
        assert await join(reader, topic, {"positions": True}) == {}
        await publisher.join(topic)
        for n in (1, 2, 3):
            await publish(publisher, topic, n)
        epoch = await epoch_of(server, topic)
        assert [await reader.recv() for _ in range(3)] == [
            event(f"{epoch}:{n}", topic, n) for n in (1, 2, 3)
        ]
        await reader.expect_silence()


async def test_a_client_that_comes_back_recovers_what_it_missed_then_live_ones(
    server: Server,
) -> None:
    topic = "topics:chat"
    async with connect(server.ws()) as publisher:
        await publisher.join(topic)
        async with connect(server.ws()) as reader:
            # phoenix.js with `params: () => ({recover: last})`, before it has a position.
            assert await join(reader, topic, {"recover": None}) == {}
            for n in (1, 2):
                await publish(publisher, topic, n)
            first, second = await reader.recv(), await reader.recv()
        epoch, offset = second[1].split(":")
        assert (first, second) == (event(f"{epoch}:1", topic, 1), event(f"{epoch}:2", topic, 2))
        for n in (3, 4, 5):  # while it is away
            await publish(publisher, topic, n)
        async with connect(server.ws()) as back:
            recover = {"recover": {"epoch": epoch, "offset": int(offset)}}
            assert await join(back, topic, recover) == {
                "recovered": True,
                "epoch": epoch,
                "offset": 5,
            }
            assert [await back.recv() for _ in range(3)] == [
                event(f"{epoch}:{n}", topic, n) for n in (3, 4, 5)
            ]
            await publish(publisher, topic, 6)
            assert await back.recv() == event(f"{epoch}:6", topic, 6)
            await back.expect_silence()  # each message once


async def away(server: Server, topic: str, missed: int) -> str:
    """A reader joins `topic` with positions, sees message 1 and leaves; `missed` more are
    published meanwhile. The epoch it saw."""
    async with connect(server.ws()) as publisher, connect(server.ws()) as reader:
        await publisher.join(topic)
        await join(reader, topic, {"positions": True})
        await publish(publisher, topic, 1)
        epoch, offset = (await reader.recv())[1].split(":")
        assert offset == "1"
        await reader.conn.close()
        for n in range(2, 2 + missed):
            await publish(publisher, topic, n)
    return epoch


async def test_a_recovery_while_messages_flow_misses_nothing_and_repeats_nothing(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    limits = {"DPS_PUBLISH_RATE": "1000", "DPS_PUBLISH_BURST": "1000"}  # 46 publishes at once
    server = with_history(spawn, tmp_path, **limits)
    topic = "topics:flow"
    epoch = await away(server, topic, missed=5)  # it saw 1; 2 to 6 went by
    async with connect(server.ws()) as publisher, connect(server.ws()) as back:
        await publisher.join(topic)
        # Publishes pipelined on one socket, the recovering join in the middle of them on
        # another: the server handles them interleaved, however the frames arrive.
        for n in range(7, 27):
            await publisher.send(["1", f"p{n}", topic, "publish", ["ev", {"n": n}]])
        await back.send(["1", "1", topic, "phx_join", {"recover": {"epoch": epoch, "offset": 1}}])
        for n in range(27, 47):
            await publisher.send(["1", f"p{n}", topic, "publish", ["ev", {"n": n}]])
        reply = await back.recv()
        assert reply[:4] == ["1", "1", topic, "phx_reply"]
        assert reply[4]["response"]["recovered"] is True
        assert 6 <= reply[4]["response"]["offset"] <= 46
        # The missed ones, then the live ones: every offset once, in order.
        assert [await back.recv() for _ in range(2, 47)] == [
            event(f"{epoch}:{n}", topic, n) for n in range(2, 47)
        ]
        await back.expect_silence()
        # Every publish was accepted (the publisher's own copies and replies, read to the end).
        replies = [frame for frame in [await publisher.recv() for _ in range(80)] if frame[1]]
        assert replies == [["1", f"p{n}", topic, "phx_reply", OK] for n in range(7, 47)]


async def test_a_gap_trimmed_by_size_is_not_recovered(server: Server) -> None:
    topic = "kept:room"  # history_size = 3: offsets 1 and 2 are gone after 5
    epoch = await away(server, topic, missed=4)
    async with connect(server.ws()) as back, connect(server.ws()) as publisher:
        recover = {"recover": {"epoch": epoch, "offset": 1}}
        assert await join(back, topic, recover) == {
            "recovered": False,
            "epoch": epoch,
            "offset": 5,
        }
        await back.expect_silence()  # no partial replay
        await publisher.join(topic)
        await publish(publisher, topic, 6)
        assert await back.recv() == event(f"{epoch}:6", topic, 6)  # joined all the same
        # A client 2 behind is still covered: 3, 4 and 5 are kept (and 6 now).
        recover = {"recover": {"epoch": epoch, "offset": 3}}
        async with connect(server.ws()) as covered:
            assert (await join(covered, topic, recover))["recovered"] is True
            assert [await covered.recv() for _ in range(3)] == [
                event(f"{epoch}:{n}", topic, n) for n in (4, 5, 6)
            ]


async def test_a_client_without_a_position_gets_everything_kept(server: Server) -> None:
    """Epoch "": a page just opened (the demo chat) gets what the topic keeps, trimmed or
    not, then the live messages; a topic that has kept nothing answers no position."""
    nothing = {"recover": {"epoch": "", "offset": 0}}
    async with connect(server.ws()) as first:
        assert await join(first, "kept:fresh", nothing) == {
            "recovered": False,
            "epoch": "",
            "offset": 0,
        }
        await first.expect_silence()
    topic = "kept:opened"  # history_size = 3
    async with connect(server.ws()) as publisher:
        await publisher.join(topic)
        for n in (1, 2):
            await publish(publisher, topic, n)
        epoch = await epoch_of(server, topic)
        async with connect(server.ws()) as opened:
            reply = {"recovered": True, "epoch": epoch, "offset": 2}
            assert await join(opened, topic, nothing) == reply
            assert [await opened.recv() for _ in (1, 2)] == [
                event(f"{epoch}:{n}", topic, n) for n in (1, 2)
            ]
            await publish(publisher, topic, 3)
            assert await opened.recv() == event(f"{epoch}:3", topic, 3)
            await opened.expect_silence()
        for n in (4, 5):  # 1 and 2 are trimmed
            await publish(publisher, topic, n)
        async with connect(server.ws()) as reloaded:
            reply = {"recovered": False, "epoch": epoch, "offset": 5}
            assert await join(reloaded, topic, nothing) == reply
            assert [await reloaded.recv() for _ in (3, 4, 5)] == [
                event(f"{epoch}:{n}", topic, n) for n in (3, 4, 5)
            ]
            await reloaded.expect_silence()


async def test_a_gap_trimmed_by_age_is_not_recovered(server: Server) -> None:
    topic = "brief:room"  # history_ttl = 1
    epoch = await away(server, topic, missed=1)

    def expired() -> bool:
        return read_history(server, topic=topic)[1]["messages"] == []

    await eventually(expired, "message 2 past its ttl of 1 s")
    async with connect(server.ws()) as back:
        recover = {"recover": {"epoch": epoch, "offset": 1}}
        assert await join(back, topic, recover) == {
            "recovered": False,
            "epoch": epoch,
            "offset": 2,
        }
        await back.expect_silence()


async def test_an_unknown_epoch_is_not_recovered(server: Server) -> None:
    topic = "topics:epochs"
    async with connect(server.ws()) as client:
        recover = {"recover": {"epoch": "0123456789ab", "offset": 0}}
        # Nothing ever published: there is no stream yet.
        assert await join(client, topic, recover) == {"recovered": False, "epoch": "", "offset": 0}
        assert (await post(server, {"topic": topic, "event": "ev", "payload": {"n": 1}}))[0] == 200
        epoch = await epoch_of(server, topic)
        assert await client.recv() == event(f"{epoch}:1", topic, 1)
        assert epoch != "0123456789ab"
        await client.send(["2", "2", topic, "phx_join", recover])
        assert await client.recv() == [
            "2",
            "2",
            topic,
            "phx_reply",
            {"status": "ok", "response": {"recovered": False, "epoch": epoch, "offset": 1}},
        ]
        assert await client.recv() == ["1", "1", topic, "phx_close", {}]
        await client.expect_silence()


async def test_a_malformed_recover_gets_an_error_reply(server: Server) -> None:
    async with connect(server.ws()) as client:
        bad = {"recover": {"epoch": "0123456789ab", "offset": "3"}}
        await client.send(["1", "1", "topics:bad", "phx_join", bad])
        assert await client.recv() == [
            "1",
            "1",
            "topics:bad",
            "phx_reply",
            {"status": "error", "response": MALFORMED},
        ]
        await client.send(["1", "2", "topics:bad", "publish", ["ev", {}]])
        assert (await client.recv())[4]["response"] == {"reason": "unmatched topic"}


async def test_broadcast_answers_carry_the_position_on_topics_with_history(
    server: Server,
) -> None:
    owner = f"127.0.0.1:{server.port}"
    answers = [
        await post(server, {"topic": "kept:api", "event": "ev", "payload": {"n": n}})
        for n in (1, 2)
    ]
    epoch = await epoch_of(server, "kept:api")
    assert answers == [
        (
            200,
            {
                "status": "ok",
                "topic": "kept:api",
                "owner": owner,
                "seq": n,
                "epoch": epoch,
                "offset": n,
            },
        )
        for n in (1, 2)
    ]
    # Without history: no position.
    status, body = await post(server, {"topic": "plain", "event": "ev", "payload": {}})
    assert (status, body) == (200, {"status": "ok", "topic": "plain", "owner": owner, "seq": 3})


async def test_history_reads_what_a_topic_keeps(server: Server) -> None:
    started = time.time()
    for topic, count in (("topics:log", 4), ("kept:log", 5)):
        for n in range(1, count + 1):
            message = {"topic": topic, "event": f"ev{n}", "payload": {"n": n}}
            assert (await post(server, message))[0] == 200
    epoch = await epoch_of(server, "topics:log")
    status, body = await history(server, topic="topics:log")
    assert (status, body["topic"], body["epoch"]) == (200, "topics:log", epoch)
    assert (body["offset"], body["complete"]) == (4, True)
    fields = ("offset", "event", "payload", "binary")
    assert [{k: m[k] for k in fields} for m in body["messages"]] == [
        {"offset": n, "event": f"ev{n}", "payload": {"n": n}, "binary": False} for n in range(1, 5)
    ]
    assert all(started - 1 <= m["at"] <= time.time() + 1 for m in body["messages"])

    async def read(topic: str, **query: int) -> tuple[list[int], int, bool]:
        """The offsets of the messages read, the stream's offset, and "complete"."""
        body = (await history(server, topic=topic, **query))[1]
        return [m["offset"] for m in body["messages"]], body["offset"], body["complete"]

    assert await read("topics:log", since=2) == ([3, 4], 4, True)
    assert await read("topics:log", since=1, limit=2) == ([2, 3], 4, True)  # the oldest first
    assert await read("topics:log", since=4) == ([], 4, True)
    # history_size = 3: what is kept, and "complete" says whether that is all there was.
    assert await read("kept:log") == ([3, 4, 5], 5, False)
    assert await read("kept:log", since=2) == ([3, 4, 5], 5, True)
    assert await history(server, topic="nothing:here") == (
        200,
        {"topic": "nothing:here", "epoch": "", "offset": 0, "complete": False, "messages": []},
    )


async def test_history_refuses_bad_parameters_with_400(server: Server) -> None:
    params = "since must be an offset >= 0, limit from 1 to 10000"
    for query, reason in [
        ({}, "topic is required"),
        ({"topic": ""}, "topic is empty"),
        ({"topic": "x" * 256}, "topic is longer than 255 bytes"),
        ({"topic": "t", "since": "-1"}, params),
        ({"topic": "t", "since": "abc"}, params),
        ({"topic": "t", "since": "1.5"}, params),
        ({"topic": "t", "since": "²"}, params),  # a digit to str.isdigit, not to int()
        ({"topic": "t", "limit": "³"}, params),
        ({"topic": "t", "since": str(2**63)}, params),  # more than a link frame's u64 field
        ({"topic": "t", "since": "1" * 5000}, params),  # more digits than int() reads
        ({"topic": "t", "since": "+1"}, params),
        ({"topic": "t", "since": "1_0"}, params),
        ({"topic": "t", "limit": "0"}, params),
        ({"topic": "t", "limit": "10001"}, params),
    ]:
        assert await history(server, **query) == (400, {"error": reason}), query


async def test_history_needs_the_api_key_when_set(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = with_history(spawn, tmp_path, DPS_API_KEY="s3cret")
    assert (await post(server, {"topic": "topics:k", "event": "ev"}, key="s3cret"))[0] == 200
    for key in (None, "wrong"):
        status, body = await history(server, key=key, topic="topics:k")
        assert (status, list(body)) == (401, ["error"])
    status, body = await history(server, key="s3cret", topic="topics:k")
    assert (status, [m["payload"] for m in body["messages"]]) == (200, [{}])


async def test_a_binary_message_is_recovered_as_binary(server: Server) -> None:
    topic = "topics:bin"
    head = bytes([0, 1, len(topic), 7]) + b"1" + topic.encode() + b"publish"
    async with connect(server.ws()) as publisher:
        await publisher.join(topic)
        await publish(publisher, topic, 1)
        epoch = await epoch_of(server, topic)
        push = bytes([0, 1, 2, len(topic), 7]) + b"1b1" + topic.encode() + b"publish"
        await publisher.send(push + b"\x00\xff")
        assert sorted([await publisher.recv(), await publisher.recv()], key=str) == sorted(
            [head + b"\x00\xff", ["1", "b1", topic, "phx_reply", OK]], key=str
        )
        await publish(publisher, topic, 3)
        async with connect(server.ws()) as back:
            recover = {"recover": {"epoch": epoch, "offset": 1}}
            assert await join(back, topic, recover) == {
                "recovered": True,
                "epoch": epoch,
                "offset": 3,
            }
            assert await back.recv() == head + b"\x00\xff"  # a binary frame, as it was sent
            assert await back.recv() == event(f"{epoch}:3", topic, 3)
    body = (await history(server, topic=topic, since=1))[1]
    assert body["messages"][0]["binary"] is True
    assert base64.b64decode(body["messages"][0]["payload"]) == b"\x00\xff"
    assert body["messages"][0]["event"] == "publish"
