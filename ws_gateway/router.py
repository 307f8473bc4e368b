"""Where a gateway sends a topic's publishes, and where it listens for its messages.

The owner of a topic is its server on the ring of *settled* topic servers. A server that
leaves (its link is gone) leaves at once: its topics move to their next owner. A server
that joins is first only *listened to*: the gateway subscribes its topics there but keeps
publishing to the old owners until the server settles, `handover` seconds after the
server was first linked to a gateway, a moment every gateway derives from the server's
own `linked_for` (sent in the link handshake), so all gateways switch together; a server
that has been linked for longer (a gateway that starts, or relinks after a blip, while
the others use the server) settles at once. The gateway stays subscribed at the old
owners for another `handover` seconds. While a topic moves, every gateway is subscribed
at both owners, so a message published through either reaches every subscriber, each
message in the order of the one owner that sequenced it.

    server state, per gateway:   linked --(first linked + handover)--> settled --(link lost)--> gone

`listeners(topic)` = owner on the ring of settled servers, owner on the ring of every
linked server, and owners on rings retired less than `handover` ago.
"""

from __future__ import annotations

from collections.abc import Callable

from app.clock import Clock, Timer
from app.link.interface import OwnerLink
from app.ring import Ring, RingConfig


class ClusterRouter:
    def __init__(
        self,
        config: RingConfig,
        handover: float,
        on_change: Callable[[], None],
        clock: Clock,
    ) -> None:
        self.config = config
        self.handover = handover
        self.on_change = on_change
        self.clock = clock
        self.links: dict[str, OwnerLink] = {}
        self.settled: set[str] = set()
        self.owners = Ring(config, ())
        self.linked = Ring(config, ())
        self.retiring: list[Ring] = []
        self._timers: dict[str, Timer] = {}
        self._cache: dict[str, OwnerLink | None] = {}

    # Gateway.Router
    def owner_of(self, topic: str) -> OwnerLink | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        if len(self._cache) > 100_000:
            self._cache.clear()
        name = self.owners.owner(topic)
        link = self._cache[topic] = None if name is None else self.links.get(name)
        return link

    def listeners(self, topic: str) -> set[OwnerLink]:
        names = {self.owners.owner(topic), self.linked.owner(topic)}
        names.update(ring.owner(topic) for ring in self.retiring)
        return {self.links[name] for name in names if name in self.links}

    @property
    def pending(self) -> set[str]:
        """Linked servers that have not settled yet."""
        return set(self.links) - self.settled

    # Membership
    def server_up(self, name: str, link: OwnerLink, linked_for: float) -> None:
        if name not in self.config.servers:
            return
        # A newer incarnation linked before the old one was seen down waits its own
        # handover: the old one's settle timer must not settle it early.
        self._cancel_timer(name)
        self.links[name] = link
        self.linked = Ring(self.config, self.links)
        wait = self.handover - linked_for
        if wait <= 0:
            self._settle(name)
            return
        self._timers[name] = self.clock.call_later(wait, self._settle, name)
        self._changed()

    def server_down(self, name: str) -> None:
        if self.links.pop(name, None) is None:
            return
        self._cancel_timer(name)
        self.settled.discard(name)
        self.owners = Ring(self.config, self.settled)
        self.linked = Ring(self.config, self.links)
        self._changed()

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _settle(self, name: str) -> None:
        self._timers.pop(name, None)
        if name not in self.links:
            return
        self.settled.add(name)
        retired = self.owners
        self.owners = Ring(self.config, self.settled)
        if retired.members:
            self.retiring.append(retired)
            self.clock.call_later(self.handover, self._retire, retired)
        self._changed()

    def _retire(self, ring: Ring) -> None:
        self.retiring.remove(ring)
        self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self.on_change()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
