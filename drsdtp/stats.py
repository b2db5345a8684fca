"""Plain statistics objects that components update and :mod:`drsdtp.metrics` reads at scrape time.

Components import only this module (no prometheus_client): they bump integer fields or call ``observe``. All
updates happen on the event loop thread, and scrapes are served on it too, so no locks are needed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "ConnectionState",
    "HistogramSnapshot",
    "HistogramSource",
    "IngestCounters",
    "IngestStats",
    "LatencyHistogram",
    "PeerState",
    "PeerStats",
    "StoreSize",
]

#: Seconds; from 50 µs (an in-memory apply) to 2.5 s (an fsync on a worn SD card).
DEFAULT_LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class IngestCounters(Protocol):
    """Reading-level counters of one ingestion source (``drsdtp.ingest.pipeline.PipelineStats`` fits)."""

    @property
    def received(self) -> int: ...
    @property
    def invalid(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def late(self) -> int: ...


class ConnectionState(Protocol):
    """Connection state of one source (``drsdtp.supervisor.SupervisorStats`` fits)."""

    @property
    def reconnects(self) -> int: ...
    @property
    def connected(self) -> bool: ...


@dataclass(slots=True)
class IngestStats:
    """Both of the above in one object, for sources without a pipeline or supervisor of their own."""

    received: int = 0  # readings accepted from the source
    invalid: int = 0  # rejected by validation (type, range, NaN, unknown mapping)
    dropped: int = 0  # lost to a full buffer
    late: int = 0  # older than what the store already holds for the field
    reconnects: int = 0
    connected: bool = False


class PeerState(Protocol):
    """What the metrics read about one replication peer."""

    @property
    def up(self) -> bool: ...
    @property
    def lag_s(self) -> float | None: ...
    @property
    def sent(self) -> int: ...
    @property
    def received(self) -> int: ...
    @property
    def catchups(self) -> int: ...


@dataclass(slots=True)
class PeerStats:
    """State of one peer; satisfies :class:`PeerState`."""

    up: bool = False
    lag_s: float | None = None  # age of the oldest delta the peer has not acknowledged; None: unknown
    sent: int = 0  # messages sent
    received: int = 0  # messages received
    catchups: int = 0  # full-state (or digest-driven) catch-ups after a truncated delta buffer


@dataclass(frozen=True, slots=True)
class StoreSize:
    twins: int
    fields: int


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last bound is +inf), plus sum and count."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


class HistogramSource(Protocol):
    def snapshot(self) -> HistogramSnapshot: ...


@dataclass(slots=True)
class LatencyHistogram:
    """A fixed-bucket histogram of durations in seconds; satisfies :class:`HistogramSource`."""

    bounds: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    _counts: list[int] = field(init=False, repr=False)
    _sum: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self._counts = [0] * (len(self.bounds) + 1)  # the last slot is +inf

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self._sum += seconds

    def observe_many(self, seconds: npt.ArrayLike) -> None:
        """Record a batch (e.g. one latency per reading of an applied batch) in one vectorized step."""
        samples = np.asarray(seconds, dtype=np.float64).ravel()
        if samples.size == 0:
            return
        slots = np.searchsorted(np.asarray(self.bounds), samples, side="left")
        for slot, count in enumerate(np.bincount(slots, minlength=len(self._counts)).tolist()):
            self._counts[slot] += count
        self._sum += float(samples.sum())

    def snapshot(self) -> HistogramSnapshot:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return HistogramSnapshot(tuple(cumulative), self._sum, running)
