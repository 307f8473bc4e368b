"""The load test's Socket.IO client (`--protocol socketio`) and its echo window, fed bytes."""

from __future__ import annotations

import time

import orjson
import pytest

from app.tools.loadtest.options import OptionError, Target, parse_target
from app.tools.loadtest.scenarios import ConnSpec
from app.tools.loadtest.socketio import SocketIOSession
from app.tools.loadtest.tally import Tally
from app.tools.loadtest.websocket import accept_key
from tests.test_loadtest import FakeTransport, _phase, server_frame


def open_session(spec: ConnSpec, window: int = 2) -> tuple[SocketIOSession, Tally, FakeTransport]:
    tally = Tally(list(spec.topics), slots=1, epoch_ns=time.monotonic_ns())
    target = parse_target("ws://127.0.0.1:5100", "--url", "socketio")
    session = SocketIOSession(target, spec, 0, tally, 60, window, lambda: None, echo=True)
    transport = FakeTransport()
    session.connection_made(transport)  # type: ignore[arg-type]
    assert transport.written.startswith(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1")
    transport.written = b""
    accept = accept_key(session.key).decode()
    session.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        + f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    return session, tally, transport


def texts(transport: FakeTransport) -> list[bytes]:
    return [payload for _, payload in transport.take()]


def delivery(seq: int, slot: int = 0) -> bytes:
    body = {"m": f"{slot}:{seq}:{time.monotonic_ns()}", "p": "x"}
    return server_frame(b"42" + orjson.dumps(["load", body]))


def test_connects_the_namespace_then_joins_and_answers_pings() -> None:
    session, tally, transport = open_session(ConnSpec(0, (0,), -1, 0, 0.0))
    assert texts(transport) == []  # nothing before Engine.IO's open packet
    session.data_received(server_frame(b'0{"sid":"a","pingInterval":25000,"pingTimeout":20000}'))
    assert texts(transport) == [b"40"]
    session.data_received(server_frame(b'40{"sid":"b"}'))
    assert texts(transport) == [b'421["join",{"topic":"loadtest:0"}]']
    session.data_received(server_frame(b'431["ok"]'))
    assert tally.joined[0] == 1
    session.data_received(server_frame(b"2"))
    assert texts(transport) == [b"3"]
    session.data_received(delivery(1) + delivery(2))
    assert (tally.delivered, tally.unique[0]) == (2, 2)


def test_a_closed_loop_publisher_waits_for_its_own_messages_to_come_back() -> None:
    session, tally, transport = open_session(ConnSpec(0, (0,), 0, 4, 0.0), window=2)
    session.data_received(server_frame(b"0{}") + server_frame(b"40{}") + server_frame(b'431["ok"]'))
    transport.take()
    session.start_publishing(time.monotonic_ns(), 0)
    sent = texts(transport)
    assert [frame[:3] for frame in sent] == [b"422", b"423"]
    event, body = orjson.loads(sent[0][3:])
    assert (event, body["topic"], body["event"]) == ("publish", "loadtest:0", "load")
    assert body["payload"]["m"].split(":")[:2] == ["0", "1"]
    session.data_received(server_frame(b'432["ok"]') + server_frame(b'433["ok"]'))
    assert texts(transport) == []  # acknowledged, but not received back yet: no room
    session.data_received(delivery(1))
    assert [frame[:3] for frame in texts(transport)] == [b"424"]
    session.data_received(server_frame(b'434["no"]'))
    assert tally.errors == {"publish_error: ['no']": 1}
    assert (tally.sent, tally.acked) == (3, 2)


def test_socketio_needs_a_url_and_one_topic_per_socket() -> None:
    with pytest.raises(OptionError, match="--protocol socketio needs a --url"):
        _phase("--protocol", "socketio")
    url = ["--protocol", "socketio", "--url", "ws://127.0.0.1:5100"]
    with pytest.raises(OptionError, match="one topic per socket"):
        _phase(*url, "--topics", "2")
    assert _phase(*url, "--topics", "2", "--publishers", "2").targets == (
        Target("127.0.0.1", 5100, "/socket.io/?EIO=4&transport=websocket"),
    )
