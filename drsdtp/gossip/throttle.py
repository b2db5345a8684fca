"""Per-peer receive throttle: a token bucket of bytes per second.

A session reads the next message only once the bytes it just read are paid for, so a peer that floods is
slowed by HTTP/2 flow control (its writes block) instead of taking the node's CPU for decoding, merging and
persisting. The bucket may go into debt: a message larger than the burst is read, then paid off by waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["ReceiveThrottle"]


class ReceiveThrottle:
    def __init__(
        self, bytes_per_s: float, burst_bytes: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if bytes_per_s <= 0 or burst_bytes <= 0:
            raise ValueError("a throttle needs a positive rate and burst")
        self.rate = bytes_per_s
        self.burst = burst_bytes
        self._clock = clock
        self._tokens = burst_bytes
        self._at = clock()

    def charge(self, n: int) -> float:
        """Takes ``n`` bytes from the bucket; returns how long to wait before reading again."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        return max(0.0, -self._tokens / self.rate)

    async def take(self, n: int) -> float:
        """Charges ``n`` bytes and waits as long as needed; returns the time waited."""
        wait = self.charge(n)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait
