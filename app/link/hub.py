"""What a role does with its node links, and the pg transport that runs over them.

Both ends of a link, once the handshake has authenticated it, hand the open
`LinkConnection` to the node's `LinkHub` and tell it when the connection is gone; the hub
of a gateway and the hub of a topic server attach their own frame handlers. Every hub also
runs the node's pg scope over its links: `peer_up` when a link opens, `peer_down` after
its last frame, pg frames in between, in order, on the same connection as everything else.
"""

from __future__ import annotations

import logging
from typing import Any

from app.link import codec
from app.link.connection import LinkConnection
from app.link.handshake import Identity
from app.pg import Node, NodeId, PgFrame
from app.throttled_log import ThrottledLog

log = logging.getLogger("dps.link")

# The cluster's pg scope, and its groups: every gateway is a member of GATEWAYS, every
# topic server of TOPIC_SERVERS (the ring is made of the latter's members).
SCOPE = "dps"
GATEWAYS = "gateways"
TOPIC_SERVERS = "topic_servers"


class LinkHub:
    """The links of this node by peer, and pg over them. Roles extend `up` and `down`."""

    def __init__(self, local: Identity) -> None:
        self.local = local
        self.links: dict[NodeId, LinkConnection] = {}
        # Anyone who can reach a listening port can try to link: log refusals sparingly.
        self.refused = ThrottledLog(log, logging.WARNING)
        self.pg = Node(local.name, self, local.incarnation)

    @property
    def name(self) -> str:
        return self.local.name

    # pg's Transport
    def send(self, peer: NodeId, frame: PgFrame) -> None:
        link = self.links.get(peer)
        if link is not None:
            link.send(codec.pg(frame))

    def link_up(self, link: LinkConnection) -> None:
        peer = NodeId(link.peer.name, link.peer.incarnation)
        old = self.links.get(peer)
        if old is not None:
            # A second connection from the same incarnation replaces the first.
            old.close(1000, "replaced by a newer connection")
            self.link_down(old)
        self.links[peer] = link
        log.info("link up: %s (%s, incarnation %s)", *link.peer)
        self.up(link)
        self.pg.peer_up(peer)

    def link_down(self, link: LinkConnection) -> None:
        peer = NodeId(link.peer.name, link.peer.incarnation)
        if self.links.get(peer) is not link:
            return
        del self.links[peer]
        link.closed = True
        log.info("link down: %s", link.peer.name)
        self.pg.peer_down(peer)
        self.down(link)

    def overflowed(self) -> None:
        """A link was closed because its peer stopped reading (counted by roles)."""

    def pg_frame(self, link: LinkConnection, frame: PgFrame) -> None:
        self.pg.receive(NodeId(link.peer.name, link.peer.incarnation), frame)

    def view(self, scope: str) -> dict[str, Any]:
        """Links and pg groups, for /cluster."""
        groups: dict[str, dict[str, int]] = {}
        for group in self.pg.which_groups(scope):
            counts = groups[group] = {}
            for member in self.pg.get_members(scope, group):
                counts[member.node] = counts.get(member.node, 0) + 1
        links = [
            {
                "peer": link.peer.name,
                "role": link.peer.role,
                "incarnation": link.peer.incarnation,
                "queued_bytes": link.queued(),
            }
            for link in self.links.values()
        ]
        return {"incarnation": self.local.incarnation, "links": links, "pg": groups}

    def up(self, link: LinkConnection) -> None:
        """A role's handling of a new link (attach its frame handler)."""

    def down(self, link: LinkConnection) -> None:
        """A role's clean-up after a link is gone."""
