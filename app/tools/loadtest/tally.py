"""What one worker process counts: deliveries in sequence, latencies, errors.

Every published message carries `"m":"<slot>:<seq>:<sent_ns>"`: the publisher's slot on its
topic, its sequence number on that topic (1, 2, ...), and its send time on the shared
monotonic clock. A subscription (one socket joined to one topic) keeps, per publisher slot,
the last sequence number it saw, in one flat array indexed `sub * slots + slot`, and counts
the distinct messages it received in `unique[sub]`.

Per (subscription, slot), an arriving sequence number `seq` with `last` the highest seen:

    seq == last + 1        in order: last = seq, unique += 1 (the hot path, inlined by the
                           session; everything else goes through `irregular`)
    seq > last + 1         a gap: last+1 .. seq-1 become missing, last = seq, unique += 1
    seq <= last, missing   out of order: no longer missing, unique += 1
    seq <= last, otherwise duplicate

Lost messages are counted at the end, from what was acknowledged: expected - unique, where
`expected` counts the acknowledged publishes of each joined subscription's topic and
`unique` the distinct ones it received (`unique_acknowledged`). A publish that got an error
reply, or no answer at all (the publishers list them in `unconfirmed`), may or may not have
been delivered, as a server that loses an owner mid-publish may do: it is neither expected
nor lost, and a subscription that received it does not count it among its unique ones.

Subscribers that reconnect (`--reconnect-every`) keep their subscription's counts across
sockets: the messages replayed after a rejoin count as `recovered` (and as deliveries like
any other, so a replayed message already seen is a duplicate); a rejoin whose recovery
failed counts in `recoveries_failed`.

Presence events are only counted, with their bytes; a churn client's rejoins are timed to
their ok reply (`rejoins`) and to their `presence_state` (`states`).
Latencies are nanoseconds in `array('q')`; past `MAX_SAMPLES` every other sample is dropped
and only every 2nd (4th, ...) later delivery is sampled, so memory stays bounded and the
samples stay spread over the whole run.
"""

from __future__ import annotations

from array import array
from collections import Counter

MAX_SAMPLES = 4_000_000
BUCKET_NS = 100_000_000  # the delivery-rate timeline's resolution: 0.1 s


class Tally:
    def __init__(self, topics_of_subs: list[int], slots: int, epoch_ns: int) -> None:
        subs = len(topics_of_subs)
        self.slots = slots
        self.epoch_ns = epoch_ns
        self.sub_topic = array("q", topics_of_subs)
        self.joined = array("b", bytes(subs))  # 1 once the join was acknowledged
        self.open = array("b", bytes(subs))  # 1 while the subscription's socket is open
        self.unique = array("q", bytes(8 * subs))
        self.lasts = array("q", bytes(8 * subs * slots))
        self.gaps: dict[int, list[list[int]]] = {}  # index -> missing [lo, hi) ranges
        self.delivered = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.latencies = array("q")
        self.sample_mask = 0  # a delivery is sampled when its count & mask == 0
        self.first_delivery_ns = 0
        self.last_delivery_ns = 0
        self.timeline = array("q")  # deliveries per BUCKET_NS since epoch_ns
        self.acks = array("q")
        self.joins = array("q")
        self.connects = array("q")
        self.rejoins = array("q")
        self.states = array("q")
        self.leaves = 0
        self.rejoins_sent = 0
        self.presence_states = 0
        self.presence_state_bytes = 0
        self.presence_diffs = 0
        self.presence_diff_bytes = 0
        self.presence_at = 0  # when the last presence event came (monotonic ns)
        self.opened = 0
        self.failed = 0
        self.dropped = 0  # open connections that ended without our asking
        self.sent = 0
        self.acked = 0
        self.unconfirmed: list[tuple[int, int, int]] = []  # (topic, slot, seq) never acked
        self.reconnects = 0  # rejoins after a drop, answered
        self.recovered = 0  # messages replayed after those rejoins
        self.recoveries_failed = 0  # rejoins answered recovered: false
        self.errors: Counter[str] = Counter()

    def churn_starts(self) -> None:
        """What the clients received of presence counts from now on: the joins before the
        churn (each joiner's state, a diff to everyone present per join) are its set-up."""
        self.presence_states = self.presence_state_bytes = 0
        self.presence_diffs = self.presence_diff_bytes = 0

    def observe(self, sub: int, slot: int, seq: int) -> None:
        """Account one delivery's sequence number (the session inlines the in-order case)."""
        k = sub * self.slots + slot
        if seq == self.lasts[k] + 1:
            self.lasts[k] = seq
            self.unique[sub] += 1
        else:
            self.irregular(k, sub, seq)

    def irregular(self, k: int, sub: int, seq: int) -> None:
        last = self.lasts[k]
        if seq > last:
            self.gaps.setdefault(k, []).append([last + 1, seq])
            self.lasts[k] = seq
            self.unique[sub] += 1
            return
        spans = self.gaps.get(k, [])
        for span in spans:
            lo, hi = span
            if lo <= seq < hi:
                self.out_of_order += 1
                self.unique[sub] += 1
                if seq == lo:
                    span[0] += 1
                elif seq == hi - 1:
                    span[1] -= 1
                else:
                    span[1] = seq
                    spans.append([seq + 1, hi])
                if span[0] == span[1]:
                    spans.remove(span)
                    if not spans:
                        del self.gaps[k]
                return
        self.duplicates += 1

    def batch(self, now: int, count: int) -> None:
        """`count` deliveries arrived at `now`: the timeline and the sample budget."""
        self.delivered += count
        if not self.first_delivery_ns:
            self.first_delivery_ns = now
        self.last_delivery_ns = now
        bucket = (now - self.epoch_ns) // BUCKET_NS
        timeline = self.timeline
        if bucket >= len(timeline):
            timeline.frombytes(bytes(8 * (bucket + 1 - len(timeline))))
        timeline[bucket] += count
        if len(self.latencies) > MAX_SAMPLES:
            del self.latencies[1::2]
            self.sample_mask = self.sample_mask * 2 + 1

    def expected_of(self, sub: int, acked_per_topic: list[int]) -> int:
        return acked_per_topic[self.sub_topic[sub]] if self.joined[sub] else 0

    def received(self, sub: int, slot: int, seq: int) -> bool:
        """Whether the subscription got message `seq` of publisher `slot`."""
        k = sub * self.slots + slot
        if seq > self.lasts[k]:
            return False
        return not any(lo <= seq < hi for lo, hi in self.gaps.get(k, ()))

    def unique_acknowledged(self, sub: int, unconfirmed: Unconfirmed) -> int:
        """The distinct acknowledged messages the subscription received; `unconfirmed`:
        per topic, the (slot, seq) of every publish that was not acknowledged."""
        mine = unconfirmed.get(self.sub_topic[sub], ())
        return self.unique[sub] - sum(1 for slot, seq in mine if self.received(sub, slot, seq))

    def caught_up(self, acked_per_topic: list[int], unconfirmed: Unconfirmed) -> bool:
        """Every open, joined subscription has received everything acknowledged on its topic."""
        return all(
            self.unique_acknowledged(sub, unconfirmed) >= self.expected_of(sub, acked_per_topic)
            for sub in range(len(self.unique))
            if self.open[sub]
        )


# Per topic, the (slot, seq) of the publishes that were not acknowledged.
Unconfirmed = dict[int, list[tuple[int, int]]]


def by_topic(unconfirmed: list[tuple[int, int, int]]) -> Unconfirmed:
    """Publishers' (topic, slot, seq) records, grouped by topic."""
    grouped: Unconfirmed = {}
    for topic, slot, seq in unconfirmed:
        grouped.setdefault(topic, []).append((slot, seq))
    return grouped
