"""`--protocol socketio`: the load test's client socket speaking Socket.IO instead of Phoenix.

For comparing DPS with servers built on python-socketio (bench/peers/): Engine.IO 4 and
Socket.IO 5 over a WebSocket, the default namespace, events acknowledged with "ok".

    server  0{"sid": ..., "pingInterval": ...}    client  40                  (namespace)
    server  40{"sid": ...}                        client  42<ref>["join",{"topic":T}]
    server  43<ref>["ok"]                                  (the join's acknowledgement)
    client  42<ref>["publish",{"topic":T,"event":E,"payload":{...}}]
    server  43<ref>["ok"]                                  (published)
    server  42["E",{...}]                                  (a delivery, to every socket of T)
    server  2                                     client  3   (Engine.IO's keep-alive)

A delivery is found by its marker as a Phoenix one is; it does not name its topic, so every
socket joins one topic (the options refuse more topics than fan-out publishers). The server's
pings keep the connection alive, so the load test sends no heartbeats of its own.
"""

from __future__ import annotations

import orjson

from app.tools.loadtest.scenarios import EVENT
from app.tools.loadtest.session import LoadSession

ACK = b"43"
OK = ["ok"]


class SocketIOSession(LoadSession):
    TAIL = b'"}}]'  # closes the payload object, the publish's object, the event array

    def _join_frame(self, ref: bytes, name: bytes) -> bytes:
        return b'42%s["join",{"topic":%s}]' % (ref, name)

    def _publish_prefix(self, join_ref: bytes, name: bytes) -> tuple[bytes, bytes]:
        mid = b'["publish",{"topic":%s,"event":"%s","payload":{"m":"%d:' % (
            name,
            EVENT.encode(),
            self.spec.slot,
        )
        return b"42", mid

    def on_open(self) -> None:
        self._count_open()  # the joins wait for the namespace to be connected

    def heartbeat(self, now: int) -> None:
        """None: Engine.IO's pings, answered in `_control`, keep the connection alive."""

    def _control(self, frame: bytes) -> None:
        if frame == b"2":
            self.send_text(b"3")
        elif frame.startswith(ACK):
            digits = len(frame) - len(frame[2:].lstrip(b"0123456789")) - 2
            try:
                ref, answer = int(frame[2 : 2 + digits]), orjson.loads(frame[2 + digits :])
            except (ValueError, orjson.JSONDecodeError):
                self.tally.errors["bad_frame"] += 1
                return
            self._reply(ref, answer == OK, "" if answer == OK else str(answer)[:80])
        elif frame.startswith(b"40"):
            self._join()
        elif frame.startswith(b"0"):
            self.send_text(b"40")
        elif frame.startswith(b"44"):  # the namespace refused us: the joins never happen
            self.tally.errors["join_error: Socket.IO connect refused"] += 1
            self._settle()
        else:
            self.tally.errors[f"socketio_packet_{frame[:2].decode(errors='replace')}"] += 1
