"""The in-memory link of the embedded default: gateway and topic server in one process.

It implements both ends of `app.link.interface` as direct calls, so the embedded server
runs the same gateway and topic-server code, on the same fan-out path, as a cluster does.
"""

from __future__ import annotations

from app.link.interface import (
    Accepted,
    Delivery,
    Kept,
    OnOutcome,
    OnPresence,
    OnRecovery,
    Position,
    Recipient,
    Sequencer,
)


class MemoryLink:
    __slots__ = ("_gateway", "_server")

    def __init__(self, gateway: Recipient, server: Sequencer) -> None:
        self._gateway = gateway
        self._server = server

    # OwnerLink: the gateway's side.
    @property
    def owner(self) -> str:
        return self._server.name

    def subscribe(self, topic: str, on_outcome: OnOutcome, since: Position | None = None) -> None:
        self._server.subscribe(self, topic, since)
        on_outcome(Accepted(self._server.name, 0))

    def unsubscribe(self, topic: str) -> None:
        self._server.unsubscribe(self, topic)

    def publish(
        self,
        topic: str,
        event: str,
        payload: bytes,
        binary: bool,
        on_outcome: OnOutcome,
        exclude: int = 0,
        kept: Kept | None = None,
    ) -> None:
        if kept is not None:
            server = self._server
            server.publish_kept(topic, event, payload, binary, kept, on_outcome, self, exclude)
            return
        seq = self._server.publish(topic, event, payload, binary, self, exclude)
        on_outcome(Accepted(self._server.name, seq))

    def recover(self, topic: str, since: Position, limit: int, done: OnRecovery) -> None:
        self._server.recover(topic, since, limit, done)

    def track(self, topic: str, key: str, ref: str, meta: bytes, prev: str | None) -> None:
        self._server.track(self, topic, key, ref, meta, prev)

    def untrack(self, topic: str, key: str, ref: str) -> None:
        self._server.untrack(self, topic, key, ref)

    def presence(self, topic: str, on_presence: OnPresence) -> None:
        on_presence(self._server.presence_state(topic))

    # GatewayLink: the topic server's side.
    @property
    def gateway(self) -> str:
        return self._gateway.name

    def deliver(self, delivery: Delivery, exclude: int = 0) -> None:
        d = delivery
        self._gateway.deliver(
            self, d.topic, d.seq, d.event, d.payload, d.binary, exclude, d.position, d.presence
        )
