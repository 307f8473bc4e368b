"""The Phoenix socket endpoint end to end: a real DPS process and `websockets` clients."""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request

import orjson
import pytest
import websockets

from tests.support import Server, connect, http_post

pytestmark = pytest.mark.anyio

OK = {"status": "ok", "response": {}}
TOPIC = "topics:matrix"


def reply(join_ref: str | None, ref: str, topic: str = TOPIC, payload: object = OK) -> list[object]:
    return [join_ref, ref, topic, "phx_reply", payload]


def error(reason: str, **more: str) -> dict[str, object]:
    return {"status": "error", "response": {"reason": reason, **more}}


async def test_publish_reaches_every_subscriber_with_its_own_join_ref(server: Server) -> None:
    async with connect(server.ws()) as a, connect(server.ws()) as b, connect(server.ws()) as c:
        await a.join(TOPIC, "1")
        await b.join(TOPIC, "7")
        await c.join("topics:other", "1")
        body = {"message": "red pill or blue pill?"}
        await b.send(["7", "2", TOPIC, "publish", ["event", body]])
        got_b = [await b.recv(), await b.recv()]
        assert sorted(got_b, key=str) == sorted(
            [["7", None, TOPIC, "event", body], reply("7", "2")], key=str
        )
        assert await a.recv() == ["1", None, TOPIC, "event", body]
        await c.expect_silence()


async def test_publisher_that_has_not_joined_gets_unmatched_topic(server: Server) -> None:
    async with connect(server.ws()) as a:
        await a.send(["1", "5", "room:nowhere", "publish", ["event", {}]])
        assert await a.recv() == reply(None, "5", "room:nowhere", error("unmatched topic"))


async def test_heartbeat_is_answered_whatever_is_joined(server: Server) -> None:
    async with connect(server.ws()) as a:
        await a.send([None, "9", "phoenix", "heartbeat", {}])
        assert await a.recv() == reply(None, "9", "phoenix")


async def test_leave_replies_then_closes_and_stops_deliveries(server: Server) -> None:
    async with connect(server.ws()) as a, connect(server.ws()) as b:
        await a.join(TOPIC, "1")
        await b.join(TOPIC, "1")
        await a.send(["1", "3", TOPIC, "phx_leave", {}])
        assert await a.recv() == reply("1", "3")
        assert await a.recv() == ["1", "1", TOPIC, "phx_close", {}]
        await a.send(["1", "4", TOPIC, "phx_leave", {}])  # not joined any more: ok, no close
        assert await a.recv() == reply("1", "4")
        await b.publish(TOPIC, "event", {"n": 1})
        await b.recv()
        await b.recv()
        await a.expect_silence()


async def test_duplicate_join_replies_then_closes_the_old_instance(server: Server) -> None:
    async with connect(server.ws()) as a, connect(server.ws()) as b:
        await a.join(TOPIC, "6")
        await b.join(TOPIC, "1")
        await a.send(["19", "19", TOPIC, "phx_join", {}])
        assert await a.recv() == reply("19", "19")
        assert await a.recv() == ["6", "6", TOPIC, "phx_close", {}]
        # Still subscribed once, now under the new join_ref.
        await b.publish(TOPIC, "event", {"n": 1})
        assert await a.recv() == ["19", None, TOPIC, "event", {"n": 1}]
        await a.expect_silence()
        # A push naming the old instance is stale: dropped without a reply.
        await a.send(["6", "20", TOPIC, "publish", ["event", {}]])
        await a.expect_silence()


async def test_unknown_event_and_malformed_publish_get_error_replies(server: Server) -> None:
    async with connect(server.ws()) as a:
        await a.join(TOPIC)
        await a.send(["1", "2", TOPIC, "shout", {}])
        assert await a.recv() == reply("1", "2", payload=error("unknown event"))
        for ref, payload in [
            ("3", {"not": "a list"}),
            ("4", ["event"]),
            ("5", ["event", "not an object"]),
            ("6", ["", {}]),
            ("7", ["phx_close", {}]),
            ("8", [7, {}]),
        ]:
            await a.send(["1", ref, TOPIC, "publish", payload])
            answer = await a.recv()
            assert answer[:4] == ["1", ref, TOPIC, "phx_reply"]
            assert answer[4]["status"] == "error"
            assert answer[4]["response"]["reason"] == "malformed payload"
            assert answer[4]["response"]["detail"]
        # The channel is still joined and working.
        await a.publish(TOPIC, "event", {"ok": True})
        assert [await a.recv(), await a.recv()]


async def test_bad_topics_are_refused_with_a_reason(server: Server) -> None:
    async with connect(server.ws()) as a:
        for ref, topic in [("1", ""), ("2", "t" * 256), ("3", "phoenix")]:
            await a.send([ref, ref, topic, "phx_join", {}])
            answer = await a.recv()
            assert answer[:4] == [ref, ref, topic, "phx_reply"]
            assert answer[4]["status"] == "error"
        await a.send(["4", "4", "é" * 127, "phx_join", {}])  # 254 bytes: fine
        assert (await a.recv())[4] == OK


async def test_too_many_channels(server: Server) -> None:
    async with connect(server.ws()) as a:
        for i in range(100):
            await a.send([str(i), str(i), f"t:{i}", "phx_join", {}])
        for _ in range(100):
            assert (await a.recv())[4] == OK
        await a.send(["x", "x", "t:100", "phx_join", {}])
        assert await a.recv() == reply("x", "x", "t:100", error("too many channels joined"))


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        ("not json", 1007, "frame is not valid JSON"),
        ('{"a": 1}', 1003, "expected a [join_ref, ref, topic, event, payload] array"),
        ('["1", "1", "t"]', 1003, "expected a [join_ref, ref, topic, event, payload] array"),
        ('[1, "1", "t", "phx_join", {}]', 1003, "join_ref must be a string or null"),
        ('["1", "1", 5, "phx_join", {}]', 1003, "topic must be a string"),
        (b"\x07\x00\x00\x00\x00", 1003, "binary frame kind 7 is not a push"),
    ],
)
async def test_bad_frames_close_only_that_socket(
    server: Server, frame: str | bytes, code: int, reason: str
) -> None:
    async with connect(server.ws()) as bad, connect(server.ws()) as good:
        await good.join(TOPIC)
        await bad.join(TOPIC)
        await bad.send(frame)
        assert await bad.closed() == (code, reason)
        await good.publish(TOPIC, "event", {"still": "here"})
        assert len([await good.recv(), await good.recv()]) == 2


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(server: Server) -> None:
    """Whole frames are read without websockets' UTF-8 check: the serializer's decoding
    refuses them instead, with the same close code."""
    async with connect(server.ws()) as bad:
        await bad.join(TOPIC)
        await bad.conn.send(b'["1", "2", "t", "publish", ["e", {"x": "\xff"}]]', text=True)
        assert await bad.closed() == (1007, "frame is not valid JSON")


async def test_oversized_frame_closes_with_1009(spawn: object) -> None:
    server = spawn({"DPS_MAX_FRAME_BYTES": "4096"})  # type: ignore[operator]
    async with connect(server.ws()) as a, connect(server.ws()) as b:
        await b.join(TOPIC)
        await a.join(TOPIC)
        await a.send(["1", "2", TOPIC, "publish", ["event", {"x": "y" * 5000}]])
        code, _ = await a.closed()
        assert code == 1009
        await b.publish(TOPIC, "event", {"small": True})
        assert len([await b.recv(), await b.recv()]) == 2


async def test_v1_serializer(server: Server) -> None:
    async with connect(server.ws(None)) as v1, connect(server.ws()) as v2:
        await v1.send({"topic": TOPIC, "event": "phx_join", "payload": {}, "ref": "1"})
        assert await v1.recv() == {"topic": TOPIC, "event": "phx_reply", "payload": OK, "ref": "1"}
        await v2.join(TOPIC, "3")
        await v1.send({"topic": TOPIC, "event": "publish", "payload": ["ev", {"a": 1}], "ref": "2"})
        got = [await v1.recv(), await v1.recv()]
        assert {"topic": TOPIC, "event": "ev", "payload": {"a": 1}, "ref": None} in got
        assert {"topic": TOPIC, "event": "phx_reply", "payload": OK, "ref": "2"} in got
        assert await v2.recv() == ["3", None, TOPIC, "ev", {"a": 1}]


async def test_binary_publish_is_broadcast_as_a_binary_push(server: Server) -> None:
    async with connect(server.ws()) as a, connect(server.ws()) as b:
        await a.join("room:lobby", "6")
        await b.join("room:lobby", "9")
        # The official client's frame for channel.push("publish", <de ad>), join_ref 6, ref 8.
        await a.send(bytes([0, 1, 1, 10, 7]) + b"68room:lobbypublish\xde\xad")
        assert await b.recv() == bytes([0, 1, 10, 7]) + b"9room:lobbypublish\xde\xad"
        got = [await a.recv(), await a.recv()]
        assert bytes([0, 1, 10, 7]) + b"6room:lobbypublish\xde\xad" in got
        assert ["6", "8", "room:lobby", "phx_reply", OK] in got


@pytest.mark.parametrize("vsn", ["3.0.0", "2.1.0", "banana"])
async def test_unsupported_vsn_is_refused_before_the_upgrade(server: Server, vsn: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(server.ws(vsn)):
            pass
    assert refused.value.response.status_code == 403


async def test_phoenix_subprotocol_is_answered(server: Server) -> None:
    protocols = ["phoenix", "base64url.bearer.phx.czNjcjN0LXRva2Vu"]
    async with connect(server.ws(), subprotocols=protocols) as a:  # type: ignore[arg-type]
        assert a.conn.subprotocol == "phoenix"
        await a.join(TOPIC)
    async with connect(server.ws()) as b:
        assert b.conn.subprotocol is None


async def test_slow_consumer_is_closed_while_a_fast_one_keeps_receiving(spawn: object) -> None:
    server = spawn({"DPS_SOCKET_QUEUE": "65536"})  # type: ignore[operator]
    message = {"topic": TOPIC, "event": "event", "payload": {"blob": "x" * 16_000}}
    async with connect(server.ws(), max_queue=1) as slow, connect(server.ws()) as fast:
        await slow.join(TOPIC)
        await fast.join(TOPIC)
        # The slow client stops reading: once the kernel's buffers and then its queue on
        # the server are full, the server must close it, and only it.
        for sent in range(1, 2001):
            status, _ = await asyncio.to_thread(http_post, server.http + "/api/broadcast", message)
            assert status == 200
            assert (await fast.recv())[3] == "event"
            if sent % 25 == 0 and await _counter(server, "slow_consumers_closed"):
                break
        assert await _counter(server, "slow_consumers_closed") == 1
        assert await slow.closed(timeout=15) == (1013, "slow consumer: outbound queue full")
        message["payload"] = {"after": True}
        await asyncio.to_thread(http_post, server.http + "/api/broadcast", message)
        assert (await fast.recv())[4] == {"after": True}


async def _counter(server: Server, name: str) -> int:
    def get() -> int:
        with urllib.request.urlopen(server.http + "/cluster", timeout=5) as response:
            return int(orjson.loads(response.read())["counters"][name])

    return await asyncio.to_thread(get)


async def test_sigterm_closes_sockets_with_1001_and_exits_0(server: Server) -> None:
    async with connect(server.ws()) as a:
        await a.join(TOPIC)
        server.proc.send_signal(signal.SIGTERM)
        assert (await a.closed())[0] == 1001
    assert await asyncio.to_thread(server.proc.wait, 10) == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.http + "/healthz", timeout=1)
