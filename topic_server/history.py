"""A topic's recent messages, with their positions: what recovery and `/api/history` read.

Each topic with history (channel rule keys `history_size`, `history_ttl`) has a *stream*:
an `epoch`, a random id that names one continuous history of the topic, and its messages
numbered by `offset` 1, 2, 3, ... without gaps. A new epoch starts whenever the history is
lost (no copy survived its owner) or the stream is created; a client that recovers from
another epoch is told so (`recovered: false`) and reloads from its application.

The owner keeps the streams of its topics, and its successor on the ring a copy of each
(`topic_server.replication`): `append` numbers a message at the owner, `add` applies it at
the copy, `snapshot` and `install` move a whole stream. Everything is pure: time is given
in, and nothing here sends anything.

Memory is bounded per stream by the rule (`size` messages, `ttl` seconds) and per node by
`max_bytes` (DPS_HISTORY_MAX_BYTES: oldest trimmed first, in any topic); the counter
`history_trimmed` counts what was dropped.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from app.counters import Counters
from app.link.codec import Entry
from app.link.interface import Recovery


class Snapshot(NamedTuple):
    """A whole stream, as it moves from one server to another."""

    epoch: str
    last: int  # the offset of the newest message ever appended (0: none yet)
    size: int
    ttl: float
    entries: tuple[Entry, ...]


def new_epoch() -> str:
    return secrets.token_hex(6)


class Stream:
    __slots__ = ("bytes", "entries", "epoch", "last", "size", "ttl")

    def __init__(self, epoch: str, last: int, size: int, ttl: float) -> None:
        self.epoch = epoch
        self.last = last
        self.size = size
        self.ttl = ttl
        self.entries: deque[Entry] = deque()
        self.bytes = 0

    def since(self, epoch: str, offset: int, limit: int) -> Recovery:
        """What came after `offset` of `epoch` (at most `limit` messages, the oldest).
        Epoch "" reads the current one: what is still kept after `offset` (`recovered`
        says whether that is all there was)."""
        first = self.entries[0].offset if self.entries else self.last + 1
        covered = first - 1 <= offset <= self.last
        if epoch == "":
            offset = max(offset, first - 1)
        elif epoch != self.epoch or not covered:
            return Recovery(False, self.epoch, self.last, ())
        skip = offset - first + 1  # offsets have no gaps: the newer ones are a tail
        newer = tuple(self.entries[i] for i in range(skip, min(len(self.entries), skip + limit)))
        return Recovery(covered, self.epoch, self.last, newer)

    def push(self, entry: Entry) -> int:
        """Keep `entry`; the bytes it added."""
        self.entries.append(entry)
        self.last = entry.offset
        added = len(entry.payload) + len(entry.event)
        self.bytes += added
        return added

    def pop(self) -> int:
        """Drop the oldest message; the bytes it freed."""
        entry = self.entries.popleft()
        freed = len(entry.payload) + len(entry.event)
        self.bytes -= freed
        return freed

    def trim(self, now: float) -> int:
        """Drop what the rule no longer keeps; how many."""
        dropped = 0
        while self.entries and (
            len(self.entries) > self.size or now - self.entries[0].at > self.ttl
        ):
            self.pop()
            dropped += 1
        return dropped

    def snapshot(self) -> Snapshot:
        return Snapshot(self.epoch, self.last, self.size, self.ttl, tuple(self.entries))


class History:
    def __init__(
        self, max_bytes: int, counters: Counters, epochs: Callable[[], str] = new_epoch
    ) -> None:
        self.max_bytes = max_bytes
        self.counters = counters  # history_trimmed: dropped by size, age or max_bytes
        self.epochs = epochs
        self.streams: dict[str, Stream] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return sum(len(stream.entries) for stream in self.streams.values())

    def stream(self, topic: str) -> Stream | None:
        return self.streams.get(topic)

    def since(self, topic: str, epoch: str, offset: int, limit: int, now: float) -> Recovery:
        """What a client that saw `(epoch, offset)` of `topic` missed, trimmed to `now`."""
        stream = self.streams.get(topic)
        if stream is None:
            return Recovery(False, "", 0, ())
        self.trim(now, (topic,))
        return stream.since(epoch, offset, limit)

    def open(self, topic: str, size: int, ttl: float) -> Stream:
        """The topic's stream under rule (`size`, `ttl`), created in a new epoch if none."""
        stream = self.streams.get(topic)
        if stream is None:
            stream = self.streams[topic] = Stream(self.epochs(), 0, size, ttl)
        stream.size, stream.ttl = size, ttl
        return stream

    def append(
        self, topic: str, size: int, ttl: float, at: float, event: str, binary: bool, payload: bytes
    ) -> Entry:
        """Number a new message (at the owner) and keep it."""
        stream = self.open(topic, size, ttl)
        entry = Entry(stream.last + 1, at, event, binary, payload)
        self._keep(stream, entry, at)
        return entry

    def add(self, topic: str, epoch: str, entry: Entry, size: int, ttl: float) -> bool:
        """Keep a copy of a message the owner numbered; False when it does not follow this
        copy's stream (another epoch, or a gap: the owner must send the whole stream)."""
        stream = self.streams.get(topic)
        if stream is None or stream.epoch != epoch or entry.offset != stream.last + 1:
            return False
        stream.size, stream.ttl = size, ttl
        self._keep(stream, entry, entry.at)
        return True

    def install(self, topic: str, snapshot: Snapshot, now: float) -> None:
        """Replace the topic's stream by `snapshot` (a copy, or a stream taken over)."""
        self.drop(topic)
        stream = self.streams[topic] = Stream(
            snapshot.epoch, snapshot.last, snapshot.size, snapshot.ttl
        )
        for entry in snapshot.entries:
            self.bytes += stream.push(entry)
        stream.last = snapshot.last
        self._bound(stream, now)

    def drop(self, topic: str) -> None:
        stream = self.streams.pop(topic, None)
        if stream is not None:
            self.bytes -= stream.bytes

    def trim(self, now: float, topics: Iterable[str] | None = None) -> None:
        """Drop, everywhere (or in `topics`), what is older than its rule keeps."""
        for topic in list(self.streams if topics is None else topics):
            stream = self.streams.get(topic)
            if stream is not None:
                before = stream.bytes
                self.counters.history_trimmed += stream.trim(now)
                self.bytes -= before - stream.bytes

    def _keep(self, stream: Stream, entry: Entry, now: float) -> None:
        self.bytes += stream.push(entry)
        self._bound(stream, now)

    def _bound(self, stream: Stream, now: float) -> None:
        before = stream.bytes
        self.counters.history_trimmed += stream.trim(now)
        self.bytes -= before - stream.bytes
        while self.bytes > self.max_bytes:
            oldest = min(
                (s for s in self.streams.values() if s.entries),
                key=lambda s: s.entries[0].at,
                default=None,
            )
            if oldest is None:
                break
            self.bytes -= oldest.pop()
            self.counters.history_trimmed += 1
