"""The store made durable: every delta that changes the node's state is appended to the write-ahead log, a
group committer fsyncs by time and size, and callers acknowledge an update (MQTT PUBACK, an API reply, a
gossip ack) only once :meth:`DurableStore.record` has returned, i.e. once it is on disk.

Recovery happens on open (in Rust): the newest snapshot that verifies, then the log. A torn tail is cut;
damage in the middle is skipped, its bytes quarantined and reported (or, with ``wal.on_corruption =
"refuse"``, the node does not start); see :mod:`drsdtp.node.recovery` for what happens next. Snapshots are
taken every ``snapshot_every`` records or once the log segment reaches ``segment_bytes``, whichever comes
first; each truncates the log. A clean exit marks the log closed, so the next start checks even its last
group of records.

Aux records (:meth:`DurableStore.append_aux`) are host payloads made durable by the same group commits as
deltas and handed back, in log order, by the next open (:meth:`DurableStore.take_recovered_aux`). The
guarantee: an aux record whose append was made durable is either returned by the next open or was appended
before a snapshot barrier (:meth:`DurableStore.add_snapshot_barrier`) that completed. Every snapshot first
starts a new log segment, then awaits the barriers (a host makes its side log durable there), then truncates
only the segments before that new one: records appended while the barriers or the snapshot run survive.

A failed write or fsync shuts the log (see :class:`drsdtp._core.Wal`): the waiting writers get the
``StorageError``, nothing later is acknowledged, and a restart recovers up to the last good record.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from drsdtp._core import Store, Wal
from drsdtp.config import WalConfig
from drsdtp.errors import StorageError
from drsdtp.stats import LatencyHistogram

log = logging.getLogger(__name__)

WAL_DIR = "wal"
Barrier = Callable[[], Awaitable[None]]


@dataclass
class DurabilityStats:
    """Counters and the recovery report, for metrics and `drsdtp status`."""

    recovery: dict[str, int] = field(default_factory=dict)
    recovery_s: float = 0.0
    commits: int = 0
    records: int = 0
    snapshots: int = 0
    failed_snapshots: int = 0  # could not be written or did not verify (the older ones were kept)
    failed_barriers: int = 0  # a barrier raised: that snapshot was skipped
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
        self._snapshotting: asyncio.Task[None] | None = None
        self._barriers: list[Barrier] = []
        self._closed = False
        #: The last group commit's times (``time.monotonic_ns()``, for ``drsdtp.stages``): the committer woke,
        #: handed the fsync to its worker thread, the thread started it, the fsync returned, the committer
        #: resumed on the event loop.
        self.last_commit_ns: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @classmethod
    def open(cls, data_dir: Path, store: Store, config: WalConfig) -> DurableStore:
        """Recovers ``store`` from ``data_dir/wal`` (when the log is enabled) and returns it made durable.
        ``StorageError`` when the log cannot be read, or is damaged and ``on_corruption`` is "refuse"."""
        stats = DurabilityStats()
        if not config.enabled:
            return cls(store, None, config, stats)
        started = time.perf_counter()
        wal, report = Wal.open(
            data_dir / WAL_DIR,
            store,
            on_corruption=config.on_corruption,
            keep_snapshots=config.keep_snapshots,
            quarantine_max_entries=config.quarantine_max_entries,
            quarantine_max_bytes=config.quarantine_max_bytes,
        )
        stats.recovery, stats.recovery_s = dict(report), time.perf_counter() - started
        if wal.quarantine_entry is not None:
            log.error(
                "write-ahead log recovery went past damage (%s): %d records skipped, %d recovered after it; "
                "damaged bytes and a report in %s; not ready until `drsdtp recover --accept`",
                "acknowledged data may be lost" if report["loss_suspected"] else "no record lost",
                report["records_skipped"],
                report["records_after_damage"],
                wal.quarantine_entry,
            )
        elif report["truncated_bytes"]:
            log.warning("write-ahead log recovery cut a torn tail of %d bytes", report["truncated_bytes"])
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
        if self._snapshotting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshotting
        if self._wal is not None:
            # Whatever is still buffered becomes durable, then the log is marked closed cleanly.
            try:
                self._made_durable(await asyncio.to_thread(self._wal.close))
            except StorageError as exc:
                self._fail_waiters(exc)

    def append(self, delta: bytes) -> asyncio.Future[None]:
        """Appends ``delta`` to the log now (so a :meth:`sync` from here on covers it) and returns a future
        that resolves once it is durable (already done when the log is off). Await it shielded, as
        :meth:`record` does: a waiter must never be cancelled, :meth:`sync` may be waiting on it too."""
        return self._append(delta, aux=False)

    def append_aux(self, payload: bytes) -> asyncio.Future[None]:
        """Appends a host payload to the log, like :meth:`append` (same group commits, same future); the next
        open hands it back in log order instead of merging it (see the module documentation)."""
        return self._append(payload, aux=True)

    def _append(self, payload: bytes, *, aux: bool) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        if self._wal is None:
            waiter.set_result(None)
            return waiter
        if self._closed:
            raise RuntimeError("the durable store is closed")
        seq = self._wal.append_aux(payload) if aux else self._wal.append(payload)
        self._waiters.append((seq, waiter))
        self._wake.set()
        return waiter

    def take_recovered_aux(self) -> list[bytes]:
        """The aux records recovery found, in log order (once)."""
        return [] if self._wal is None else self._wal.take_recovered_aux()

    def add_snapshot_barrier(self, barrier: Barrier) -> None:
        """``barrier()`` is awaited before every snapshot truncates the log (after the new segment started):
        a host makes its side log durable there. If it raises, that snapshot is skipped."""
        self._barriers.append(barrier)

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

    async def snapshot(self) -> None:
        """Takes a snapshot now (barriers included) and returns once it is done or failed."""
        if self._snapshotting is None:
            self._snapshotting = asyncio.create_task(self._snapshot(), name="wal-snapshot")
        await asyncio.shield(self._snapshotting)

    async def _committer(self) -> None:
        assert self._wal is not None
        wal, interval = self._wal, self._config.fsync_interval_ms / 1000
        last_fsync = -float("inf")
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._waiters:
                if self._closed:
                    return
                continue
            woke = time.monotonic_ns()
            # Group commit: at most one fsync per interval, unless the byte threshold is reached first. The
            # window counts from the previous fsync, not from this record: a write arriving after a quiet
            # spell is fsynced at once (latency: one fsync), while under load the records of each interval
            # share one fsync (so the fsync rate stays bounded, as flash storage needs).
            await asyncio.sleep(0)  # writers woken in this step of the loop join this commit
            deadline = last_fsync + interval
            while not self._closed and wal.pending_bytes < self._config.fsync_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                self._wake.clear()
            started = time.perf_counter()
            last_fsync = time.monotonic()
            submitted = time.monotonic_ns()
            try:
                durable_seq, thread_started, synced = await asyncio.to_thread(_timed_commit, wal)
            except StorageError as exc:
                self._fail_waiters(exc)
                continue
            self.last_commit_ns = (woke, submitted, thread_started, synced, time.monotonic_ns())
            self.stats.fsync_latency.observe(time.perf_counter() - started)
            self.stats.commits += 1
            self._made_durable(durable_seq)
            if self._snapshotting is None and not self._closed and self._snapshot_due():
                self._since_snapshot = 0
                # In its own task: commits go on while barriers and the snapshot run.
                self._snapshotting = asyncio.create_task(self._snapshot(), name="wal-snapshot")
            if self._closed and not self._waiters:
                return

    async def _snapshot(self) -> None:
        """A new segment, the barriers, then the snapshot (which truncates the segments before that one)."""
        wal = self._wal
        assert wal is not None
        try:
            self._made_durable(await asyncio.to_thread(wal.begin_snapshot))
            for barrier in self._barriers:
                try:
                    await barrier()
                except Exception:
                    self.stats.failed_barriers += 1
                    log.exception("a snapshot barrier failed; the log is not truncated this time")
                    return
            # Read in the worker: the log's lock is held through a commit's fsync, and the committer may be
            # in one now (on the event loop this waited out a whole fsync, a stall of every stream).
            failed = (await asyncio.to_thread(wal.stats))["failed_snapshots"]
            # The snapshot first commits whatever was appended meanwhile.
            self._made_durable(await asyncio.to_thread(wal.snapshot, self.store))
            if (await asyncio.to_thread(wal.stats))["failed_snapshots"] > failed:
                self.stats.failed_snapshots += 1
                error = await asyncio.to_thread(lambda: wal.last_snapshot_error)
                log.error("snapshot failed, the older ones are kept: %s", error)
            else:
                self.stats.snapshots += 1
        except StorageError as exc:
            self._fail_waiters(exc)
        finally:
            self._snapshotting = None

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


def _timed_commit(wal: Wal) -> tuple[int, int, int]:
    """``wal.commit()`` in the worker thread, with when the thread started it and when it returned."""
    started = time.monotonic_ns()
    durable_seq = wal.commit()
    return durable_seq, started, time.monotonic_ns()
