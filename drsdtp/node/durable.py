"""The store made durable: every delta that changes the node's state is appended to the write-ahead log, a
group committer fsyncs by time and size, and callers acknowledge an update (MQTT PUBACK, an API reply, a
gossip ack) only once :meth:`DurableStore.record` has returned, i.e. once it is on disk.

Recovery happens on open (in Rust): the newest valid snapshot, then the log; a torn or corrupt tail is cut
and reported. Snapshots are taken every ``snapshot_every`` records or once the log segment reaches
``segment_bytes``, whichever comes first; each truncates the log.

A failed write or fsync shuts the log (see :class:`drsdtp._core.Wal`): the waiting writers get the
``StorageError``, nothing later is acknowledged, and a restart recovers up to the last good record.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from drsdtp._core import Store, Wal
from drsdtp.config import WalConfig
from drsdtp.errors import StorageError
from drsdtp.stats import LatencyHistogram

log = logging.getLogger(__name__)


@dataclass
class DurabilityStats:
    """Counters and the recovery report, for metrics and `drsdtp status`."""

    recovery: dict[str, int] = field(default_factory=dict)
    recovery_s: float = 0.0
    commits: int = 0
    records: int = 0
    snapshots: int = 0
    failed_commits: int = 0
    fsync_latency: LatencyHistogram = field(default_factory=LatencyHistogram)


class DurableStore:
    """Owns a :class:`Store` and its :class:`Wal`; an async context manager running the group committer."""

    def __init__(self, store: Store, wal: Wal | None, config: WalConfig, stats: DurabilityStats) -> None:
        self.store = store
        self._wal = wal
        self._config = config
        self.stats = stats
        # (sequence number of the record, its writer): released once the log reports that number durable.
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._wake = asyncio.Event()
        self._since_snapshot = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def open(cls, data_dir: Path, store: Store, config: WalConfig) -> DurableStore:
        """Recovers ``store`` from ``data_dir/wal`` (when the log is enabled) and returns it made durable."""
        stats = DurabilityStats()
        if not config.enabled:
            return cls(store, None, config, stats)
        started = time.perf_counter()
        wal, report = Wal.open(data_dir / "wal", store)
        stats.recovery, stats.recovery_s = dict(report), time.perf_counter() - started
        if report["truncated_bytes"] or report["corrupt_records"] or report["corrupt_snapshots"]:
            log.warning("write-ahead log recovery cut a damaged tail: %s", report)
        log.info(
            "recovered %d records after snapshot %d in %.3f s",
            report["records"],
            report["snapshot_seq"],
            stats.recovery_s,
        )
        return cls(store, wal, config, stats)

    async def __aenter__(self) -> Self:
        if self._wal is not None:
            self._task = asyncio.create_task(self._committer(), name="wal-committer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        if self._task is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._wal is not None:
            # Whatever is still buffered becomes durable before the node exits.
            try:
                self._made_durable(await asyncio.to_thread(self._wal.commit))
            except StorageError as exc:
                self._fail_waiters(exc)

    def append(self, delta: bytes) -> asyncio.Future[None]:
        """Appends ``delta`` to the log now (so a :meth:`sync` from here on covers it) and returns a future
        that resolves once it is durable (already done when the log is off). Await it shielded, as
        :meth:`record` does: a waiter must never be cancelled, :meth:`sync` may be waiting on it too."""
        waiter = asyncio.get_running_loop().create_future()
        if self._wal is None:
            waiter.set_result(None)
            return waiter
        if self._closed:
            raise RuntimeError("the durable store is closed")
        self._waiters.append((self._wal.append(delta), waiter))
        self._wake.set()
        return waiter

    async def record(self, delta: bytes) -> None:
        """Appends ``delta`` to the log and returns once it is durable (at once when the log is off)."""
        await asyncio.shield(self.append(delta))

    async def sync(self) -> None:
        """Returns once everything recorded before the call is durable (a barrier: gossip sends catch-up
        state only after it, so a crash cannot make the node reissue an event its peers already hold)."""
        if self._waiters:
            await asyncio.shield(self._waiters[-1][1])

    @property
    def pending(self) -> int:
        """Records appended and not yet durable."""
        return len(self._waiters)

    async def _committer(self) -> None:
        assert self._wal is not None
        wal, interval = self._wal, self._config.fsync_interval_ms / 1000
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._waiters:
                if self._closed:
                    return
                continue
            # Group commit: gather for up to the interval, unless the byte threshold is reached first.
            deadline = time.monotonic() + interval
            while not self._closed and wal.pending_bytes < self._config.fsync_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                self._wake.clear()
            started = time.perf_counter()
            try:
                durable_seq = await asyncio.to_thread(wal.commit)
            except StorageError as exc:
                self._fail_waiters(exc)
                continue
            self.stats.fsync_latency.observe(time.perf_counter() - started)
            self.stats.commits += 1
            self._made_durable(durable_seq)
            if self._snapshot_due():
                self._since_snapshot = 0
                try:
                    # The snapshot first commits whatever was appended while the loop awaited.
                    self._made_durable(await asyncio.to_thread(wal.snapshot, self.store))
                except StorageError as exc:
                    self._fail_waiters(exc)
                    continue
                self.stats.snapshots += 1
            if self._closed and not self._waiters:
                return

    def _snapshot_due(self) -> bool:
        """Every ``snapshot_every`` records, or once the segment reaches ``segment_bytes`` (a snapshot is what
        truncates the log, so it bounds both the disk used and the time recovery takes)."""
        assert self._wal is not None
        return (
            self._since_snapshot >= self._config.snapshot_every
            or self._wal.stats()["segment_bytes"] >= self._config.segment_bytes
        )

    def _made_durable(self, durable_seq: int) -> None:
        """Releases every writer whose record is at or below ``durable_seq``."""
        waiters = self._waiters
        while waiters and waiters[0][0] <= durable_seq:
            _, waiter = waiters.popleft()
            self.stats.records += 1
            self._since_snapshot += 1
            if not waiter.done():
                waiter.set_result(None)

    def _fail_waiters(self, exc: StorageError) -> None:
        """The disk failed: nothing buffered can be acknowledged. The writers get the error; the log refuses
        later commits too (see :class:`Wal`), so the node stops acknowledging until it is restarted."""
        log.error("write-ahead log commit failed: %s", exc)
        self.stats.failed_commits += 1
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
