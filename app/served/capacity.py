"""How many connections a node can take: its descriptor limit, and what it keeps in reserve.

Like production servers, a node raises its soft descriptor limit to the hard limit at
start. Client sockets may then use all but a reserve (`RESERVE`), which keeps descriptors
for node links, Redis, logs and the operations endpoints, so that `/healthz` answers and
links stay up when clients have taken everything they may. Connections that are not yet
sockets (an upgrade on its way, an HTTP request) are capped too, a little above the
sockets, so that connections that never finish their request cannot eat the reserve.
"""

from __future__ import annotations

import resource
from typing import NamedTuple

RESERVE = 256  # descriptors kept from client sockets


class Capacity(NamedTuple):
    descriptors: int  # the process's descriptor limit
    sockets: int  # client sockets, beyond which upgrades get 503
    connections: int  # connections of any kind, beyond which new ones get 503


def raise_descriptor_limit() -> int:
    """Raise the soft limit of open descriptors to the hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def plan(descriptors: int, max_sockets: int | None) -> Capacity:
    """What a node with `descriptors` may take, DPS_MAX_SOCKETS being `max_sockets`."""
    sockets = max_sockets if max_sockets is not None else max(1, descriptors - RESERVE)
    connections = max(1, min(sockets + RESERVE // 2, descriptors - RESERVE // 4))
    return Capacity(descriptors, sockets, connections)
