"""Who connects where, joins what and publishes how much: a phase turned into worker plans.

    fanout   subscriber i joins topic i % T; publisher p publishes round-robin to its topics
             (topics t with t % P == p when T >= P, else topic p % T) and joins them, so a
             publisher also receives its own topics, as every DPS subscriber does.
    chat     client i joins room i % T and publishes to it; slot i // T in its room.
    connect  client i joins topic i % T, and holds its connection idle (heartbeats only).
    churn    client i joins topic i % T with a presence (`PRESENCE_JOIN`), then clients
             leave and join again (see `worker`); nobody publishes.

Subscriber (or chat or connect client) i joins topic i % T through target
(i // T) % len(targets), so that every topic's subscribers are spread over all the gateways
(i % len(targets) would put all of a topic's subscribers on one gateway whenever T is a
multiple of the gateways);
publisher p goes to target p % len(targets). Connection c goes to worker process c % procs.
`--messages` is the total, split evenly over the publishers; `--rate` is the total, each
publisher sending rate / publishers (churn: leaves per second, each worker its share).

The busiest topic (the one whose owner `--kill-owner-after` kills) is the one expected to
carry the most deliveries: the sockets joined to it times its share of the messages (a
publisher shares its own evenly over its topics, round-robin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.tools.loadtest.options import Phase

EVENT = "load"
# A churn client's join payload: a meta for the server to track on presence topics (each
# socket its own key), ignored on others.
PRESENCE_JOIN = b'{"presence":{"meta":{"status":"online"}}}'


def topic_name(index: int) -> str:
    return f"loadtest:{index}"


@dataclass(frozen=True, slots=True)
class ConnSpec:
    target: int  # index into the phase's targets
    topics: tuple[int, ...]  # joined, in this order
    slot: int  # publisher slot on each of its topics; -1: does not publish
    quota: int | None  # messages to publish; None: until the duration ends
    rate: float  # messages/s, 0: closed loop
    offset: float = 0.0  # fraction of a message interval: publishers at a rate take turns
    presence: bool = False  # joins with PRESENCE_JOIN


@dataclass(frozen=True, slots=True)
class Plan:
    """What one worker process runs."""

    phase: Phase
    worker: int
    conns: tuple[ConnSpec, ...]
    slots: int  # publisher slots per topic
    epoch_ns: int  # the run's time zero on the monotonic clock
    churn: float = 0.0  # leaves per second, this worker's share (churn)


def _quota(phase: Phase, index: int, count: int) -> int | None:
    if phase.messages is None:
        return None
    return phase.messages // count + (1 if index < phase.messages % count else 0)


def connections(phase: Phase) -> tuple[list[ConnSpec], int]:
    """Every connection of the phase in order, and the publisher slots per topic."""
    targets, topics = len(phase.targets), phase.topics
    if phase.scenario == "connect":
        specs = [
            ConnSpec((i // topics) % targets, (i % topics,), -1, 0, 0.0)
            for i in range(phase.subscribers)
        ]
        return specs, 1
    if phase.scenario == "churn":
        specs = [
            ConnSpec((i // topics) % targets, (i % topics,), -1, 0, 0.0, presence=True)
            for i in range(phase.subscribers)
        ]
        return specs, 1
    if phase.scenario == "chat":
        clients = phase.subscribers
        rate = phase.rate / clients
        specs = [
            ConnSpec(
                (i // topics) % targets,
                (i % topics,),
                i // topics,
                _quota(phase, i, clients),
                rate,
                i / clients,
            )
            for i in range(clients)
        ]
        return specs, math.ceil(clients / topics)
    specs = [
        ConnSpec((i // topics) % targets, (i % topics,), -1, 0, 0.0)
        for i in range(phase.subscribers)
    ]
    pubs = phase.publishers
    rate = phase.rate / pubs
    for p in range(pubs):
        if topics >= pubs:
            mine, slot = tuple(range(p, topics, pubs)), 0
        else:
            mine, slot = (p % topics,), p // topics
        specs.append(ConnSpec(p % targets, mine, slot, _quota(phase, p, pubs), rate, p / pubs))
    return specs, 1 if topics >= pubs else math.ceil(pubs / topics)


def plans(phase: Phase, epoch_ns: int) -> list[Plan]:
    specs, slots = connections(phase)
    procs = min(phase.procs, max(1, len(specs)))
    churn = phase.rate / procs if phase.scenario == "churn" else 0.0
    return [Plan(phase, w, tuple(specs[w::procs]), slots, epoch_ns, churn) for w in range(procs)]


def busiest_topic(phase: Phase) -> int:
    """The topic with the most deliveries planned (the lowest of equals)."""
    specs, _ = connections(phase)
    receivers = [0] * phase.topics
    messages = [0.0] * phase.topics
    for spec in specs:
        for topic in spec.topics:
            receivers[topic] += 1
        if spec.slot >= 0:
            # By duration every publisher has the same time (and rate): equal amounts.
            amount = 1 if spec.quota is None else spec.quota
            for topic in spec.topics:
                messages[topic] += amount / len(spec.topics)
    return max(range(phase.topics), key=lambda t: receivers[t] * messages[t])
