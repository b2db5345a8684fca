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
import queue
import threading
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: _CommitThread | None = None
        self._busy = False  # a commit is handed to the thread and not yet called back
        self._urged = False  # ... and told to go now
        self._generation = 0
        self._idle: asyncio.Future[None] | None = None  # set by __aexit__: resolved once nothing is in flight
        self._woke_ns = self._handed_ns = 0
        self._since_snapshot = 0
        self._snapshotting: asyncio.Task[None] | None = None
        self._barriers: list[Barrier] = []
        self._closed = False
        #: The last group commit's times (``time.monotonic_ns()``, for ``drsdtp.stages``): the loop began it,
        #: handed it to the commit thread, the thread started it (after its window), the fsync returned, the
        #: thread's call back ran on the loop.
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
            loop = asyncio.get_running_loop()
            self._loop = loop
            self._thread = _CommitThread(
                self._wal, self._config.fsync_interval_ms / 1000, loop, self._committed
            )
            if self._waiters:  # appended before the store was entered
                self._busy = True
                loop.call_soon(self._start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        # Staged: the commit in flight (and one more for what it did not cover) without waiting out its
        # window, then the snapshot running, then the thread, then the log's clean close.
        if self._busy:
            assert self._loop is not None and self._thread is not None
            self._idle = self._loop.create_future()
            self._urge()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle
        if self._snapshotting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshotting
        if self._thread is not None:
            await asyncio.to_thread(self._thread.stop)
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
        wal = self._wal
        seq = wal.append_aux(payload) if aux else wal.append(payload)
        self._waiters.append((seq, waiter))
        if not self._busy:
            if self._loop is not None:  # else __aenter__ starts it
                # The commit starts in the loop's next step: what else this step appends joins it.
                self._busy = True
                self._loop.call_soon(self._start)
        elif not self._urged and wal.pending_bytes >= self._config.fsync_bytes:
            self._urge()
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

    def _start(self) -> None:
        """Hands the next commit to the thread (which waits out the group-commit window, if any, itself)."""
        assert self._wal is not None and self._thread is not None
        self._woke_ns = time.monotonic_ns()
        self._generation += 1
        self._urged = self._closed or self._wal.pending_bytes >= self._config.fsync_bytes
        self._thread.submit(self._generation, now=self._urged)
        self._handed_ns = time.monotonic_ns()

    def _urge(self) -> None:
        """The commit handed to the thread goes now, without waiting for the rest of its window."""
        assert self._thread is not None
        self._urged = True
        self._thread.urge(self._generation)

    def _committed(
        self, durable_seq: int, error: StorageError | None, started_ns: int, synced_ns: int
    ) -> None:
        """The thread's one call back per commit, on the loop: releases (or fails) the writers, then hands
        over the next commit at once if records were appended meanwhile (they waited out this fsync)."""
        self._busy = False
        if error is not None:
            self._fail_waiters(error)
        else:
            self.last_commit_ns = (self._woke_ns, self._handed_ns, started_ns, synced_ns, time.monotonic_ns())
            self.stats.fsync_latency.observe((synced_ns - started_ns) / 1e9)
            self.stats.commits += 1
            self._made_durable(durable_seq)
            if self._snapshotting is None and not self._closed and self._snapshot_due():
                self._since_snapshot = 0
                # In its own task: commits go on while barriers and the snapshot run.
                self._snapshotting = asyncio.create_task(self._snapshot(), name="wal-snapshot")
        if self._waiters:
            self._busy = True
            self._start()
        elif self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

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


class _CommitThread:
    """The log's commits, on one thread of its own for the store's life: no executor, no future per commit.
    The loop hands it a commit with :meth:`submit` (a queue put); the thread waits out the group-commit
    window (at most one fsync per ``interval_s``, counted from the previous one's start) unless told to go
    now, takes everything buffered, writes and fsyncs it with the GIL released, then calls ``committed``
    on the loop once (``call_soon_threadsafe``: one wake-up of the loop per commit, whatever the number of
    writers). One commit at a time: the loop submits the next only after the last one's call back, so the
    queue holds at most a commit, its urge and the stop.

    The window counts from the previous fsync, not from the record: a write arriving after a quiet spell is
    fsynced at once (latency: one fsync), while under load what is appended during a commit and its window
    shares the next fsync (so the fsync rate stays bounded, as flash storage needs). With an interval of 0,
    commits follow each other as fast as the disk allows and group only what arrives during the fsync."""

    def __init__(
        self,
        wal: Wal,
        interval_s: float,
        loop: asyncio.AbstractEventLoop,
        committed: Callable[[int, StorageError | None, int, int], None],
    ) -> None:
        self._wal, self._interval, self._loop, self._committed = wal, interval_s, loop, committed
        self._jobs: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="wal-committer", daemon=True)
        self._thread.start()

    def submit(self, generation: int, *, now: bool) -> None:
        """Commit number ``generation``: after its window, or at once if ``now``."""
        self._jobs.put(("now" if now else "commit", generation))

    def urge(self, generation: int) -> None:
        """Commit ``generation`` goes now if it is waiting out its window (ignored once it is done)."""
        self._jobs.put(("urge", generation))

    def stop(self) -> None:
        """Ends the thread (blocking: call it off the loop, once the last commit was called back)."""
        self._jobs.put(("stop", 0))
        self._thread.join()

    def _run(self) -> None:
        jobs, wal = self._jobs, self._wal
        last_start = -float("inf")
        while True:
            kind, generation = jobs.get()
            if kind == "stop":
                return
            if kind == "urge":  # for a commit already done
                continue
            now = kind == "now"
            while not now and (left := last_start + self._interval - time.monotonic()) > 0:
                try:
                    kind, urged = jobs.get(timeout=left)
                except queue.Empty:
                    break
                # The loop submits nothing else while this commit is in flight: only its urge comes.
                now = (kind, urged) == ("urge", generation)
            last_start = time.monotonic()
            started = time.monotonic_ns()
            error: StorageError | None = None
            try:
                durable_seq = wal.commit()
            except StorageError as exc:
                durable_seq, error = 0, exc
            except BaseException as exc:  # a panic in the log must fail its writers, not hang them
                durable_seq, error = 0, StorageError(f"write-ahead log commit failed: {exc!r}")
            try:
                self._loop.call_soon_threadsafe(
                    self._committed, durable_seq, error, started, time.monotonic_ns()
                )
            except RuntimeError:  # the loop is closed: nobody is left to tell
                return
