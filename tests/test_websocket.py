"""`app.served.websocket.ServedWebSocket` against the uvicorn release it is pinned to, and
the `DetachedWebSocket` it hands its connections over to.

The handover reads uvicorn's private attributes, so these tests exercise each behaviour
directly, in one process, through a real uvicorn server on a loopback port: detaching from
ASGI, closing at once with a full write buffer, and closing with 1001 on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from app.clock import RunningLoop
from app.counters import Counters
from app.served.detached import (
    GOING_AWAY,
    MAX_REASON,
    DetachedWebSocket,
    close_reason,
    frame,
)
from app.served.keepalive import KeepAlive
from app.served.websocket import EXTENSION, ServedWebSocket

pytestmark = pytest.mark.anyio

Endpoint = Callable[[WebSocket], Awaitable[None]]


class Received:
    """A detached socket's receiver that keeps what it gets."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.ended = asyncio.Event()

    def received(self, data: bytes, text: bool) -> None:
        self.messages.append((data, text))

    def closed(self) -> None:
        self.ended.set()


@contextlib.asynccontextmanager
async def serve(
    endpoint: Endpoint, close_timeout: float = 10.0
) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """A uvicorn server with `ServedWebSocket` on a free loopback port, for one test."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    keepalive: KeepAlive[DetachedWebSocket] = KeepAlive(
        RunningLoop(), Counters(), 20.0, 20.0, close_timeout=close_timeout
    )
    config = uvicorn.Config(
        app,
        ws=ServedWebSocket.configured(keepalive),
        ws_ping_interval=None,
        lifespan="off",
        log_level="warning",
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(5):
            while not server.started:
                await asyncio.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def detaching(
    receiver: Received, after_a_message: bool = False
) -> tuple[asyncio.Future[DetachedWebSocket], Endpoint]:
    """An endpoint that accepts a connection and detaches it (once its first message has
    queued up the ASGI way, `after_a_message`), and the detached socket it will make."""
    detached: asyncio.Future[DetachedWebSocket] = asyncio.get_running_loop().create_future()

    def receiver_for(opened: DetachedWebSocket) -> Received:
        detached.set_result(opened)
        return receiver

    async def endpoint(websocket: WebSocket) -> None:
        conn: ServedWebSocket = websocket.scope["extensions"][EXTENSION]
        await websocket.accept()
        while after_a_message and conn.queue.empty():
            await asyncio.sleep(0.01)
        conn.detach(receiver_for)

    return detached, endpoint


async def test_detach_delivers_queued_then_live_messages_and_the_end() -> None:
    receiver = Received()
    detached, endpoint = detaching(receiver, after_a_message=True)
    async with serve(endpoint) as (_, port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            await client.send("first")
            conn = await asyncio.wait_for(detached, 5)
            await client.send(b"\x00second")
            # The ASGI app has returned, and the connection still carries frames both ways.
            conn.transport.write(frame(b"from the server"))
            assert await asyncio.wait_for(client.recv(), 5) == "from the server"
            async with asyncio.timeout(5):
                while len(receiver.messages) < 2:
                    await asyncio.sleep(0.01)
            assert receiver.messages == [(b"first", True), (b"\x00second", False)]
            assert not receiver.ended.is_set()
        await asyncio.wait_for(receiver.ended.wait(), 5)


async def test_close_now_sends_the_close_at_once_and_aborts_a_silent_client() -> None:
    detached, endpoint = detaching(Received())
    async with serve(endpoint, close_timeout=0.3) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        async with asyncio.timeout(5):
            while protocol.state is not OPEN:  # the handshake's response
                protocol.receive_data(await reader.read(65536))
        conn = await asyncio.wait_for(detached, 5)
        # The client stops reading: the server's writes pile up in its transport's buffer.
        chunk = frame(b"x" * 65536)
        while conn.transport.get_write_buffer_size() < 4 * 1024 * 1024:
            conn.transport.write(chunk)
        assert conn.transport.get_write_buffer_size() > 0
        conn.close_now(1013, "slow consumer")
        assert conn.closing
        conn.close_now(1013, "twice")  # a second call does nothing
        # Read everything without answering the close: the server aborts after close_timeout.
        data = bytearray()
        async with asyncio.timeout(10):
            while chunk_read := await reader.read(1 << 20):
                data += chunk_read
        writer.close()
        protocol.receive_data(bytes(data))
        frames = [event for event in protocol.events_received() if isinstance(event, Frame)]
        assert frames[-1].opcode is Opcode.CLOSE
        assert Close.parse(frames[-1].data) == Close(1013, "slow consumer")
        assert sum(1 for f in frames if f.opcode is Opcode.CLOSE) == 1


async def test_shutdown_closes_detached_sockets_with_going_away() -> None:
    receiver = Received()

    async def endpoint(websocket: WebSocket) -> None:
        conn: ServedWebSocket = websocket.scope["extensions"][EXTENSION]
        await websocket.accept()
        conn.detach(lambda opened: receiver)

    async with serve(endpoint) as (server, port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            await client.send("hello")  # the endpoint has run once this is answered below
            await asyncio.sleep(0.1)
            server.should_exit = True
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), 10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                GOING_AWAY,
                "server shutting down",
            )
        await asyncio.wait_for(receiver.ended.wait(), 10)


@pytest.mark.parametrize("cut", [0, 3])
async def test_frames_read_before_the_handover_are_followed_to_a_frame_boundary(cut: int) -> None:
    """uvicorn's websockets reads what arrives before the handover; the detached socket
    reads whole frames itself from the first frame boundary after that (here the handover
    comes at one, or `cut` bytes into a frame)."""
    receiver = Received()
    detached, endpoint = detaching(receiver, after_a_message=True)
    async with serve(endpoint) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        async with asyncio.timeout(5):
            while protocol.state is not OPEN:
                protocol.receive_data(await reader.read(65536))
        for n in range(3):
            protocol.send_text(f"message {n}".encode())
        first, second, third = protocol.data_to_send()
        writer.write(first + second[:cut])  # one read for uvicorn's websockets
        conn = await asyncio.wait_for(detached, 5)
        assert conn.reading is (cut == 0)
        writer.write(second[cut:] + third)
        async with asyncio.timeout(5):
            while len(receiver.messages) < 3:
                await asyncio.sleep(0.01)
        assert receiver.messages == [(f"message {n}".encode(), True) for n in range(3)]
        assert conn.reading  # whole frames, past the handover
        writer.close()
        await asyncio.wait_for(receiver.ended.wait(), 5)


@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        ("slow consumer", "slow consumer"),
        ("x" * 200, "x" * MAX_REASON),
        ("é" * 100, "é" * (MAX_REASON // 2)),  # whole characters only
    ],
)
def test_close_reasons_are_cut_to_what_a_close_frame_carries(reason: str, sent: str) -> None:
    assert close_reason(reason) == sent
    assert Close.parse(Close(4002, close_reason(reason)).serialize()).reason == sent
