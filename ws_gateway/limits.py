"""Token buckets: how often one socket may join and publish (DPS_JOIN_*, DPS_PUBLISH_*).

A bucket holds up to `burst` tokens and gains `rate` of them a second; each join or
publish takes one, and finds none when the socket goes faster than that for longer than
its burst allows. Pure: time is an input.
"""

from __future__ import annotations


class Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, rate: float, burst: int) -> bool:
        """Take a token if there is one (refilled up to `now`)."""
        tokens = min(float(burst), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True
