"""Which gateways want which topics: the topic server's state, as a pure object.

Per topic, the gateways with subscribers, each with a join count (pg semantics: a gateway
stays until it has unsubscribed as often as it subscribed). Per gateway, the same entries
the other way round, so that losing a gateway costs its own topics, not a scan of all.
Both maps are kept in lock-step and an entry is deleted as soon as its count reaches zero:
a topic with no subscribers holds no memory.

Sequence numbers come from one counter for the whole server. Each topic's messages are
therefore numbered in the order the server accepted them, a topic that empties and fills
again never reuses a number, and nothing per topic has to be remembered to guarantee it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

G = TypeVar("G")  # a gateway link: any hashable handle


class Topics(Generic[G]):
    __slots__ = ("_by_gateway", "_by_topic", "seq")

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[G, int]] = {}
        self._by_gateway: dict[G, dict[str, int]] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self._by_topic)

    def subscriptions(self) -> int:
        """Subscribed (gateway, topic) pairs."""
        return sum(len(topics) for topics in self._by_gateway.values())

    def gateways(self, topic: str) -> tuple[G, ...]:
        return tuple(self._by_topic.get(topic, ()))

    def subscribe(self, gateway: G, topic: str, count: int = 1) -> None:
        group = self._by_topic.setdefault(topic, {})
        group[gateway] = group.get(gateway, 0) + count
        mine = self._by_gateway.setdefault(gateway, {})
        mine[topic] = mine.get(topic, 0) + count

    def unsubscribe(self, gateway: G, topic: str) -> bool:
        """Remove one subscription; False when `gateway` had none on `topic`."""
        mine = self._by_gateway.get(gateway)
        if mine is None or topic not in mine:
            return False
        self._remove(gateway, topic, 1)
        return True

    def drop(self, gateway: G) -> None:
        """Forget every subscription of `gateway` (its link went down)."""
        for topic, count in list(self._by_gateway.get(gateway, {}).items()):
            self._remove(gateway, topic, count)

    def publish(self, topic: str) -> tuple[int, dict[G, int] | tuple[()]]:
        """Sequence one message: its number and the gateways to deliver it to."""
        self.seq += 1
        return self.seq, self._by_topic.get(topic, ())

    def next_seq(self) -> int:
        """A number for a message delivered again (to one gateway), after all before it."""
        self.seq += 1
        return self.seq

    def _remove(self, gateway: G, topic: str, count: int) -> None:
        mine = self._by_gateway[gateway]
        left = mine[topic] - count
        group = self._by_topic[topic]
        if left > 0:
            mine[topic] = left
            group[gateway] = left
            return
        del mine[topic]
        if not mine:
            del self._by_gateway[gateway]
        del group[gateway]
        if not group:
            del self._by_topic[topic]
