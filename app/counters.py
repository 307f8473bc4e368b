"""The node's counters: plain integers bumped on hot paths, read by /cluster and /metrics.

Plain attributes rather than prometheus-client objects, because a counter bumped once per
delivery must cost one integer addition, not a lock. `/metrics` exports them at scrape time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def _counter(help: str) -> int:
    return field(default=0, metadata={"help": help})


@dataclass(slots=True)
class Counters:
    sockets_opened: int = _counter("client WebSockets accepted")
    sockets_closed: int = _counter("client WebSockets gone")
    frame_errors: int = _counter("client sockets closed for a frame DPS could not understand")
    sockets_refused: int = _counter(
        "client sockets refused before the upgrade: token, origin or connect hook"
    )
    sockets_expired: int = _counter("client sockets closed because their token expired")
    joins_refused: int = _counter("joins refused by the channel rules or a hook")
    publishes_refused: int = _counter("publishes refused by the channel rules or a hook")
    hook_failures: int = _counter("hook calls that failed (down, slow, bad answer): refused")
    publishes_received: int = _counter("publishes received from clients and the HTTP API")
    publish_errors: int = _counter("publishes answered with an error (no owner, timeout)")
    socket_deliveries: int = _counter("messages written to client sockets")
    slow_consumers_closed: int = _counter("client sockets closed: outbound queue full")
    v1_binary_skipped: int = _counter("binary messages not sent to V1 sockets")
    gateway_deliveries_received: int = _counter("messages received from topic servers")
    stale_deliveries_dropped: int = _counter(
        "deliveries dropped: from a topic's former owner, or not newer than the last"
    )
    publishes: int = _counter("messages accepted and sequenced by this topic server")
    gateway_deliveries_sent: int = _counter(
        "messages sent by this topic server to gateways, counted per message and gateway"
    )
    gateway_deliveries_dropped: int = _counter("messages a topic server could not send")
    link_overflows: int = _counter("node links closed because the peer stopped reading")

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    @staticmethod
    def help() -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(Counters)}
