"""The node's history service: every applied reading goes to the durable per-field time series.

The ingest path only queues numpy arrays (no I/O on the event loop); one worker thread owns the
:class:`HistoryStore` and runs appends, periodic flushes (group fsync) and compactions in order, so the store
needs no lock. Queries go through the same worker. History trails the twin state by at most one flush
interval after a crash; the twin state itself is covered by the write-ahead log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from drsdtp._core import Store
from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import HistoryConfig
from drsdtp.history.options import HistoryOptions
from drsdtp.history.series import SeriesData
from drsdtp.history.store import HistoryStore
from drsdtp.lifecycle import BackgroundService

log = logging.getLogger(__name__)
T = TypeVar("T")

FLUSH_INTERVAL_S = 1.0
COMPACT_INTERVAL_S = 60.0
MAX_QUEUED_BATCHES = 10_000


class HistoryService(BackgroundService):
    name = "history"

    def __init__(self, data_dir: Path, config: HistoryConfig, store: Store) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="history")
        self.store = HistoryStore(data_dir / "history", HistoryOptions.from_config(config), names=store)
        self._queue: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.dropped_batches = 0

    def observe(self, batch: ReadingBatch, twins: list[str]) -> None:
        """The intake observer: queue a copy-free reference to the batch's arrays."""
        if len(self._queue) >= MAX_QUEUED_BATCHES:
            # The disk cannot keep up: history loses readings before the node loses its event loop.
            self.dropped_batches += 1
            return
        self._queue.append((batch.twin_ids, batch.field_ids, batch.values, batch.source_ms))

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _drain(self, pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        for twins, fields, values, ts in pending:
            self.store.append_batch(twins, fields, values, ts)
        self.store.flush()

    async def run(self) -> None:
        next_compact = time.monotonic() + COMPACT_INTERVAL_S
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()
            if time.monotonic() >= next_compact:
                next_compact = time.monotonic() + COMPACT_INTERVAL_S
                report = await self._in_worker(self.store.compact)
                log.debug("history compaction: %s", report)

    async def flush(self) -> None:
        pending, self._queue = self._queue, []
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

    async def stopped(self) -> None:
        await self.flush()
        await self._in_worker(self.store.close)
        self._executor.shutdown(wait=True)
