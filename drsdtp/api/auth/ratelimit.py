"""Token buckets per caller: ``rate`` requests a second on average, up to ``burst`` at once. The table of
buckets is bounded: past ``max_callers`` the least recently seen caller's bucket is dropped (it comes
back full, which errs towards serving)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ["AuditBudget", "RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_callers = max_callers
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, caller: str, rate: float | None = None, burst: float | None = None) -> float:
        """Takes one request from ``caller``'s bucket: 0.0 when allowed, else the seconds until one is
        available. ``rate``/``burst`` override the limiter's for this caller (0 rate: unlimited)."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        burst = max(self.burst if burst is None else burst, 1.0)
        now = self._clock()
        tokens, last = self._buckets.pop(caller, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        self._buckets[caller] = (tokens, now)
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class AuditBudget:
    """How many refusal records one caller may put in the audit trail: ``rate`` a second, ``burst`` at once.
    Refusals past it are counted and said in the caller's next record, so a client refused in a loop cannot
    fill the disk. The counts are kept for ``max_callers`` callers, the least recently refused dropped
    first. One budget per node: the guard's refused calls and a batch's refused commands share it."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = RateLimiter(rate, burst, max_callers=max_callers, clock=clock)
        self.max_callers = max_callers
        self._unrecorded: collections.OrderedDict[str, int] = collections.OrderedDict()

    def admit(self, caller: str, refusals: int = 1) -> str | None:
        """None when ``caller``'s record is not written now (its ``refusals`` are counted); else the text to
        append to the record: the count of the caller's earlier refusals not recorded, if any."""
        if self._rate.take(caller) > 0:
            self._unrecorded[caller] = self._unrecorded.pop(caller, 0) + refusals
            while len(self._unrecorded) > self.max_callers:
                self._unrecorded.popitem(last=False)
            return None
        skipped = self._unrecorded.pop(caller, 0)
        return f" (and {skipped} earlier refusals of this caller, not recorded one by one)" if skipped else ""
