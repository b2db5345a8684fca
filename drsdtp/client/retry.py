"""Retries of idempotent calls: which failures are worth another attempt, and jittered backoff between."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import grpc

__all__ = ["RETRYABLE", "RetryPolicy"]

#: Failures after which the same request may succeed: the node was unreachable or restarting.
RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to ``attempts`` tries of an idempotent call (reads, and writes with an idempotency key), sleeping a
    random time up to ``initial_s * multiplier**n`` (capped at ``max_s``) before try n+1 ("full jitter": many
    clients of a restarted node do not all come back at once). The call's deadline bounds the whole."""

    attempts: int = 5
    initial_s: float = 0.05
    max_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts: at least 1, got {self.attempts}")
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("initial_s: must be above 0 and at most max_s")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The sleep before each retry (``attempts - 1`` of them)."""
        uniform = (rng or random).uniform
        for n in range(self.attempts - 1):
            yield uniform(0, min(self.max_s, self.initial_s * self.multiplier**n))

    def forever(self, rng: random.Random | None = None) -> Iterator[float]:
        """Unbounded delays for a reconnecting watch; the ceiling stays at ``max_s``."""
        uniform = (rng or random).uniform
        n = 0
        while True:
            yield uniform(self.initial_s / 2, min(self.max_s, self.initial_s * self.multiplier**n))
            n = min(n + 1, 64)


NO_RETRY: Final = RetryPolicy(attempts=1)
