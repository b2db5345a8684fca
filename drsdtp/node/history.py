"""The node's history service: every applied reading goes to the durable per-field time series.

The ingest path only queues numpy arrays (no I/O on the event loop); one worker thread owns the
:class:`HistoryStore` and runs appends, periodic flushes (group fsync) and compactions in order, so the store
needs no lock. Queries go through the same worker.

With the node's write-ahead log on, each batch is also journalled there (``drsdtp.history.journal``) in the
same group commit as its twin delta, so a reading acknowledged to its source is never missing from history
after a crash: :meth:`HistoryService.recover` re-appends the journalled batches the history store lacks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from drsdtp._core import Store
from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import HistoryConfig
from drsdtp.errors import DecodeError
from drsdtp.history import journal
from drsdtp.history.options import HistoryOptions
from drsdtp.history.series import SeriesData
from drsdtp.history.store import HistoryStore
from drsdtp.ingest.same_ids import SameIds
from drsdtp.lifecycle import BackgroundService

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")

FLUSH_INTERVAL_S = 1.0
COMPACT_INTERVAL_S = 60.0
# Readings queued for the history worker (~40 B each): beyond this the disk is not keeping up, and history
# drops batches (counted) before the node's memory grows. With the sealed segments folded every flush, what
# history holds in memory is this queue plus about two segments (``segment_bytes`` each, ~16 B a reading).
MAX_QUEUED_READINGS = 500_000

# twin ids, field ids, values, timestamps, journal number
Queued: TypeAlias = "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]"
Journal = Callable[[bytes], object]  # appends one record to the node's write-ahead log


class HistoryService(BackgroundService):
    name = "history"

    def __init__(
        self, data_dir: Path, config: HistoryConfig, store: Store, journal_to: Journal | None = None
    ) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="history")
        self._names = store
        self._twin_ids, self._field_ids = SameIds(), SameIds()  # a poller's batches repeat their ids
        self._layout: tuple[object, object, journal.Layout | None] = (None, None, None)
        self.store = HistoryStore(data_dir / "history", HistoryOptions.from_config(config), names=store)
        self._queue: list[Queued] = []
        self._queued_readings = 0
        self._journal_to = journal_to
        self._next_journal = self.store.journal_mark + 1
        self.dropped_batches = 0
        self.restored_readings = 0  # re-appended from the journal after a crash
        self.bad_journal_records = 0
        # Called with every journal record as it is made (the PostgreSQL sink's outbox follows them).
        self.journal_listeners: list[Callable[[bytes], None]] = []

    def recover(self, records: Iterable[bytes]) -> int:
        """Re-appends the journalled batches this history lacks (the node's log hands them back after a
        restart, oldest first) and makes them durable. Call once, before the service starts. Returns the
        readings restored."""
        mark = self.store.journal_mark
        restored = 0
        for record in records:
            try:
                batch = journal.decode(record)
            except DecodeError as exc:
                self.bad_journal_records += 1
                log.error("history: skipping a journal record: %s", exc)
                continue
            self._next_journal = max(self._next_journal, batch.journal + 1)
            if batch.journal > mark:
                restored += self.store.append_batch(
                    batch.twins, batch.fields, batch.value, batch.ts, batch.journal
                )
                mark = batch.journal  # a record given twice is restored once
        if restored:
            self.store.flush()
            log.info("history: restored %d readings from the node's log", restored)
        self.restored_readings += restored
        return restored

    def reserve_journal(self, used: int) -> None:
        """Never number a batch ``used`` or lower again. A follower of the journal (the PostgreSQL sink's
        outbox) may hold records whose log write a crash lost; reusing their numbers would make it take a
        new batch for one it already holds."""
        self._next_journal = max(self._next_journal, used + 1)

    def observe(self, batch: ReadingBatch, twins: list[str]) -> None:
        """The intake observer: journal the batch (when the node's log is on) and queue a copy-free
        reference to its arrays. Called before the batch's delta is appended to the log, so the delta's
        commit, which the source's acknowledgement waits for, covers the journal record too."""
        if self._queued_readings + len(batch) > MAX_QUEUED_READINGS:
            # The disk cannot keep up: history loses readings before the node loses its event loop.
            self.dropped_batches += 1
            return
        number = 0
        if self._journal_to is not None:
            number = self._next_journal
            self._next_journal += 1
            record = self._journal_record(number, batch)
            self._journal_to(record)
            for listener in self.journal_listeners:
                listener(record)
        self._queue.append((batch.twin_ids, batch.field_ids, batch.values, batch.source_ms, number))
        self._queued_readings += len(batch)

    def observe_replicated(self, batch: ReadingBatch) -> None:
        """Readings learnt from a peer's delta: queued like local ones (same bound), but not journalled: the
        delta itself is in the node's log, and a crash before the next flush loses only these history points
        (the twin state keeps them)."""
        if self._queued_readings + len(batch) > MAX_QUEUED_READINGS:
            self.dropped_batches += 1
            return
        self._queue.append((batch.twin_ids, batch.field_ids, batch.values, batch.source_ms, 0))
        self._queued_readings += len(batch)

    def _journal_record(self, number: int, batch: ReadingBatch) -> bytes:
        twin_ids, twin_index = self._twin_ids.unique_inverse(batch.twin_ids)
        field_ids, field_index = self._field_ids.unique_inverse(batch.field_ids)
        seen_twins, seen_fields, layout = self._layout
        if layout is None or seen_twins is not twin_ids or seen_fields is not field_ids:
            # Names of interned ids never change: the encoded layout is kept while the batches repeat ids.
            names = self._names
            layout = journal.Layout.of(
                [names.twin_name(int(t)) or "" for t in twin_ids.tolist()],
                [names.field_name(int(f)) or "" for f in field_ids.tolist()],
                twin_index,
                field_index,
            )
            self._layout = (twin_ids, field_ids, layout)
        return journal.encode_with(number, layout, batch.source_ms, batch.values)

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _drain(self, pending: list[Queued]) -> None:
        for twins, fields, values, ts, number in pending:
            self.store.append_batch(twins, fields, values, ts, number)
        self.store.flush()

    async def run(self) -> None:
        next_compact = time.monotonic() + COMPACT_INTERVAL_S
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()
            if self.store.sealed_segments:
                await self._in_worker(self.store.fold)  # bounds what history holds in memory
            if time.monotonic() >= next_compact:
                next_compact = time.monotonic() + COMPACT_INTERVAL_S
                report = await self._in_worker(self.store.compact)
                log.debug("history compaction: %s", report)

    async def flush(self) -> None:
        pending, self._queue = self._queue, []
        self._queued_readings = 0
        if pending:
            await self._in_worker(lambda: self._drain(pending))

    async def query(
        self, twin: str, field: str, start_ms: int, end_ms: int, resolution: str, max_points: int
    ) -> SeriesData:
        await self.flush()
        return await self._in_worker(
            lambda: self.store.query(
                twin, field, start_ms, end_ms, resolution or "auto", max_points=max_points
            )
        )

    async def oldest(self, twin: str, field: str) -> int | None:
        """The timestamp of the oldest point history still holds for (twin, field), at any level."""
        await self.flush()
        return await self._in_worker(lambda: self.store.oldest(twin, field))

    async def stopped(self) -> None:
        await self.flush()
        await self._in_worker(self.store.close)
        self._executor.shutdown(wait=True)
