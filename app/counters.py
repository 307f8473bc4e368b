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
    sockets_idle_closed: int = _counter(
        "client sockets closed after DPS_IDLE_TIMEOUT without a message from them"
    )
    handshake_timeouts: int = _counter(
        "connections closed for not sending their request within DPS_HANDSHAKE_TIMEOUT"
    )
    connections_refused: int = _counter(
        "connections and sockets refused at DPS_MAX_SOCKETS or the connection cap"
    )
    rate_limited: int = _counter("joins and publishes refused by DPS_JOIN_RATE/DPS_PUBLISH_RATE")
    sockets_abusive_closed: int = _counter(
        "client sockets closed for going on at full speed past their rate limit"
    )
    ingress_paused: int = _counter(
        "times a socket's reading was paused for the rest of a turn (DPS_FRAMES_PER_TURN)"
    )
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
    presence_diffs_dropped: int = _counter(
        "presence diffs a gateway dropped: from a topic server not (yet) the topic's owner"
    )
    presence_changes: int = _counter("presence entries that joined or left on this topic server")
    presence_diff_bytes: int = _counter(
        "bytes of presence diffs a topic server sent to gateways, counted per gateway"
    )
    link_overflows: int = _counter("node links closed because the peer stopped reading")
    history_trimmed: int = _counter(
        "messages dropped from histories: past their rule's size or ttl, or DPS_HISTORY_MAX_BYTES"
    )

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    @staticmethod
    def help() -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(Counters)}
