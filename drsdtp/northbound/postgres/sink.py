"""The PostgreSQL history sink: every reading this node ingested, in the database exactly once.

Path of a batch: the history service journals it in the node's log (in the batch's own group commit, before
the source is acknowledged) and hands the same record here (:meth:`PostgresSink.observe`); a worker thread
appends queued records to the local :class:`~drsdtp.northbound.postgres.outbox.Outbox` and fsyncs it every
``flush_interval_s`` and before any log snapshot (a snapshot barrier), so a record leaves the node's log only
once the outbox holds it. After a crash the node hands back the journalled records and the outbox re-appends
those above its mark.

A connection (asyncpg, under the node's one :class:`~drsdtp.supervisor.Supervisor`, with jittered backoff)
copies outbox records to ``drsdtp_readings`` with COPY (through a staging table, so a reading delivered twice
upstream is stored once: see :mod:`~drsdtp.northbound.postgres.schema`), and in the same transaction advances
the node's row in ``drsdtp_sink_progress`` to the batch's journal number; before each copy it reads that row
(locked) and skips what the database already holds. A crash between the commit and the local release
therefore inserts nothing twice. Each node sinks the readings it ingested itself (not those it learnt from
peers), so a cluster that shares one database writes each reading once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from drsdtp.config import PostgresConfig
from drsdtp.errors import DecodeError
from drsdtp.history import journal
from drsdtp.lifecycle import BackgroundService
from drsdtp.northbound.postgres.archive import PostgresArchive
from drsdtp.northbound.postgres.connection import Connect, asyncpg_connect, supervised
from drsdtp.northbound.postgres.outbox import Outbox, journal_of
from drsdtp.northbound.postgres.schema import migrate, quote, timestamp

__all__ = ["PostgresSink", "SinkStats"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Journal records waiting for the worker (between two flushes): past this the worker is not keeping up and
# the sink drops records (counted) before the node's memory grows. The node's log still holds them until
# its next snapshot, and a restart before that restores them.
MAX_QUEUED_BYTES = 64 << 20


@dataclass(slots=True)
class SinkStats:
    rows: int = 0  # readings the database committed
    batches: int = 0  # transactions committed
    skipped_records: int = 0  # already in the database (a replay)
    duplicates: int = 0  # readings the database held already (delivered twice upstream)
    queue_dropped: int = 0  # records dropped before the outbox (the worker fell behind)
    bad_records: int = 0  # outbox records that did not decode (dropped, logged)
    database_journal: int = 0  # the last journal number the database holds


class PostgresSink(BackgroundService):
    name = "postgres sink"

    def __init__(
        self, directory: Path, config: PostgresConfig, node_id: str, connect: Connect | None = None
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.stats = SinkStats()
        self.outbox = Outbox(directory / "outbox", config.outbox_max_bytes, policy=config.drop_policy)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pgsink")
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._appended = asyncio.Event()
        connect = connect or asyncpg_connect(config)
        # Reading older history back (its own connection, closed with the sink).
        self.archive = PostgresArchive(config, connect) if config.read_back else None
        self.supervisor = supervised("postgres", config, connect, self._drain)

    # --- feeding (event loop) -----------------------------------------------------------------------------

    def recover(self, records: Iterable[bytes]) -> int:
        """Re-appends the journalled records the outbox lacks (the node's log hands them back after a
        restart, oldest first) and syncs. Call once, before the service starts. Returns the records added."""
        mark = self.outbox.mark
        added = 0
        for record in records:
            if journal_of(record) > mark and self.outbox.append(record):
                added += 1
        self.outbox.sync()
        if added:
            log.info("postgres sink: %d batches restored from the node's log to the outbox", added)
        return added

    def observe(self, record: bytes) -> None:
        """A history journal record (journal number > 0), already on its way to the node's log."""
        if self._queued_bytes + len(record) > MAX_QUEUED_BYTES:
            self.stats.queue_dropped += 1
            return
        self._queue.append(record)
        self._queued_bytes += len(record)

    async def flush(self) -> None:
        """Appends the queued records to the outbox and fsyncs it (also the log's snapshot barrier)."""
        pending, self._queue, self._queued_bytes = self._queue, [], 0

        def append_all() -> None:
            for record in pending:
                self.outbox.append(record)
            self.outbox.sync()

        await self._in_worker(append_all)
        if pending:
            self._appended.set()

    # --- the service ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._flush_loop(), name="postgres outbox flush")
            group.create_task(self.supervisor.run(), name="postgres connection")

    async def stopped(self) -> None:
        if self.archive is not None:
            await self.archive.close()
        await self.flush()
        await self._in_worker(self.outbox.close)
        self._executor.shutdown(wait=True)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            await self.flush()

    async def _drain(self, conn: Any) -> None:
        schema = quote(self.config.schema)
        await migrate(conn, self.config.schema)
        held = await conn.fetchval(
            f"SELECT journal FROM {schema}.drsdtp_sink_progress WHERE node = $1", self.node_id
        )
        self.stats.database_journal = int(held or 0)
        while True:
            done = self.stats.database_journal
            records = await self._in_worker(functools.partial(self._next, done))
            if not records:
                self._appended.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._appended.wait(), self.config.flush_interval_s)
                continue
            await self._write(conn, schema, records)

    def _next(self, done: int) -> list[bytes]:
        self.outbox.release(done)
        return self.outbox.read_after(done, self.config.batch_bytes)

    async def _write(self, conn: Any, schema: str, records: list[bytes]) -> None:
        async with conn.transaction():
            held = await conn.fetchval(
                f"SELECT journal FROM {schema}.drsdtp_sink_progress WHERE node = $1 FOR UPDATE", self.node_id
            )
            held = int(held or 0)
            fresh = [r for r in records if journal_of(r) > held]
            self.stats.skipped_records += len(records) - len(fresh)
            # Decoding a batch is tens of ms: on the outbox worker, not the event loop.
            rows = await self._in_worker(functools.partial(self._rows, fresh))
            inserted = 0
            if rows:
                # COPY cannot skip conflicts: stage the batch (a temporary table emptied at commit), then
                # insert what the database does not hold yet.
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS drsdtp_incoming (LIKE {schema}.drsdtp_readings) "
                    "ON COMMIT DELETE ROWS"
                )
                await conn.copy_records_to_table(
                    "drsdtp_incoming", columns=("node", "twin", "field", "ts", "value"), records=rows
                )
                status = await conn.execute(
                    f"INSERT INTO {schema}.drsdtp_readings SELECT * FROM drsdtp_incoming "
                    "ON CONFLICT DO NOTHING"
                )
                inserted = int(status.split()[-1])
            last = max([held, *map(journal_of, records)])
            await conn.execute(
                f"INSERT INTO {schema}.drsdtp_sink_progress (node, journal) VALUES ($1, $2) "
                "ON CONFLICT (node) DO UPDATE SET journal = EXCLUDED.journal, updated = now()",
                self.node_id,
                last,
            )
        self.stats.rows += inserted
        self.stats.duplicates += len(rows) - inserted
        self.stats.batches += 1
        self.stats.database_journal = last

    def _rows(self, records: list[bytes]) -> list[tuple[str, str, str, datetime, float]]:
        rows: list[tuple[str, str, str, datetime, float]] = []
        node = self.node_id
        for record in records:
            try:
                batch = journal.decode(record)
            except DecodeError as exc:
                self.stats.bad_records += 1
                log.error("postgres sink: dropping an outbox record: %s", exc)
                continue
            stamps = [timestamp(ms) for ms in batch.ts.tolist()]
            values = np.asarray(batch.value, np.float64).tolist()
            rows.extend(zip([node] * len(values), batch.twins, batch.fields, stamps, values, strict=True))
        return rows

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
