"""Twin changes other than readings in PostgreSQL: desired values (with their conflicting siblings),
metadata, model and scope, tags and other sets, relations, counters, text and flag values, and twins
created and deleted, in ``drsdtp_twin_changes``.

A row is one state of one field: (twin, field, version) plus what it is, when, and the state as JSON. The
version is the engine's (:meth:`~drsdtp._core.Store.field_versions`): a digest of the events that made the
state, the same on every replica that holds them, so a state is stored once however many nodes share the
database, and a replay stores nothing twice (the unique index skips it). Readings (numeric reported values)
are the sink's (``drsdtp_readings``), not here; nor are system twins (``_members``, alarms and commands: those
are :mod:`~drsdtp.northbound.postgres.events`).

The source is the node's change feed (:class:`~drsdtp.api.feed.ChangeFeed`), whose numbers are kept across
restarts, and the store, durable on the node: nothing needs an outbox of its own. The node's position in the
feed is kept in ``drsdtp_change_progress``, advanced in the same transaction as the rows. While the database
is down the store keeps what happens and the feed keeps which twins changed; on reconnect the twins changed
after the position are read again. After a crash every twin counts as changed (the feed's rule), so every
field is offered again and the index keeps what the database holds. What the feed cannot give is a state
superseded before the sink looked (it coalesces, a twin's latest change only): two desired writes within one
``flush_interval_s``, or during an outage, store the later one only.

The rows are built on a worker thread of the sink's own (JSON for thousands of field states is tens of ms a
batch: a stall for everything else on the event loop), one feed batch at a time, so at most one batch of rows
is in flight. The store is thread-safe but changes meanwhile: a twin whose versions moved while its fields
were read is left out of the batch; its change is later in the feed, so the next batch offers it again.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from drsdtp.api.feed import ChangeFeed
from drsdtp.config import PostgresConfig
from drsdtp.core import Intent
from drsdtp.lifecycle import BackgroundService
from drsdtp.northbound.postgres.connection import Connect, asyncpg_connect, supervised
from drsdtp.northbound.postgres.schema import migrate, quote, timestamp

__all__ = ["ChangeSink", "ChangeStats", "field_rows"]

log = logging.getLogger(__name__)
ROWS_PER_BATCH: Final = 5000  # rows per transaction
_FEED_BATCH: Final = 2000  # twins read from the feed per transaction
# Field versions remembered as stored, so a twin whose readings change re-sends nothing: bounded by the
# store's own fields; past this it is forgotten (the database's index then skips the repeats).
MAX_REMEMBERED: Final = 1_000_000
SYSTEM_PREFIX: Final = "_"  # system twins (membership, alarms, commands) are not twin changes
DELETED_FIELD: Final = "_deleted"
EDGES_FIELD: Final = "_rel"
META_FIELDS: Final = ("_model", "_scope")
META_PREFIX: Final = "meta."
_READ_ATTEMPTS: Final = 3  # reads of a twin that changes meanwhile, before it is left to the next batch
READING: Final = -1  # in the versions remembered: a field that holds readings (versions are >= 0)

# (node, twin, field, what, version, ts, state)
Row = tuple[str, str, str, str, int, datetime, str]


class TwinSource(Protocol):  # the drsdtp._core.Store subset used here
    def fields(self, twin: str) -> dict[str, Any]: ...
    def field_versions(self, twin: str) -> list[tuple[str, int]] | None: ...
    def entry(self, twin: str, field: str) -> tuple[Any, int, int, int] | None: ...
    def desired(self, twin: str, field: str) -> list[tuple[Any, int, int, int]] | None: ...


@dataclass(slots=True)
class ChangeStats:
    rows: int = 0  # field states the database committed (new to it)
    duplicates: int = 0  # states it held already (another node's, a replay after a crash)
    cursor: int = 0  # the node's position in its change feed that the database holds


def _json(value: Any) -> Any:
    return {"base64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value


def _signed(version: int) -> int:
    """The engine's unsigned 64-bit version as PostgreSQL's signed ``bigint`` (same bits)."""
    return version - (1 << 64) if version >= 1 << 63 else version


def field_rows(
    node: str, twin: str, store: TwinSource, known: dict[tuple[str, str], int], now_ms: int
) -> list[tuple[Row, int]] | None:
    """The rows for the fields of ``twin`` whose version is not in ``known``, each with its version, or
    None if the twin changed while it was read (another thread wrote it: read it again later).
    ``known`` also learns the twin's readings (as :data:`READING`): a field that held a numeric reported
    value is a reading from then on, and costs a look-up, not a read, each time its twin changes."""
    versions = store.field_versions(twin)
    pending = [(f, v) for f, v in versions or () if known.get((twin, f), READING - 1) not in (v, READING)]
    if not pending:
        return []
    values = store.fields(twin)
    out: list[tuple[Row, int]] = []
    readings: list[str] = []
    for field, version in pending:
        if field not in values:
            continue
        row = _row(node, twin, field, values[field], _signed(version), store, now_ms)
        if row is None:
            readings.append(field)
        else:
            out.append((row, version))
    if store.field_versions(twin) != versions:
        return None  # a state read may be newer than its version: none of it is kept
    for field in readings:
        known[(twin, field)] = READING
    return out


def _row(
    node: str, twin: str, field: str, value: Any, version: int, store: TwinSource, now_ms: int
) -> Row | None:
    ms = now_ms  # when the node saw it, unless the state says when it was written
    system = field.startswith((SYSTEM_PREFIX, META_PREFIX))
    if type(value) is float and not system:
        return None  # a reading (only registers hold floats): drsdtp_readings holds it
    if isinstance(value, frozenset):
        what = "relations" if field == EDGES_FIELD else "set"
        state: dict[str, Any] = {"elements": sorted(value)}
    elif isinstance(value, tuple):
        intents = [Intent(*i) for i in store.desired(twin, field) or []]
        what = "desired"
        state = {
            "values": [{"value": _json(i.value), "ms": i.ms, "writer": i.writer} for i in intents],
            "conflict": len(intents) > 1,
        }
        if intents:
            ms = intents[-1].ms
    else:
        entry = store.entry(twin, field)
        if entry is None:  # not a register: a counter
            what, state = "counter", {"value": value}
        else:
            if not system and type(value) is int:
                return None  # a reading
            if field == DELETED_FIELD:
                what = "deleted" if value is True else "created"
            elif field in META_FIELDS or field.startswith(META_PREFIX):
                what = "metadata"
            else:
                what = "value"
            state = {"value": _json(value), "writer": entry[2]}
            ms = entry[1] >> 16
    return (node, twin, field, what, version, timestamp(ms), json.dumps(state))


class ChangeSink(BackgroundService):
    name = "postgres twin changes"

    def __init__(
        self,
        config: PostgresConfig,
        node_id: str,
        store: TwinSource,
        feed: ChangeFeed,
        connect: Connect | None = None,
    ) -> None:
        self.config, self.node_id = config, node_id
        self.stats = ChangeStats()
        self._store, self._feed = store, feed
        self._known: dict[tuple[str, str], int] = {}
        self._builder: concurrent.futures.ThreadPoolExecutor | None = None
        self.supervisor = supervised(
            "postgres twin changes", config, connect or asyncpg_connect(config), self._drain
        )

    async def run(self) -> None:
        self._builder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-changes")
        try:
            await self.supervisor.run()
        finally:
            # A batch being built when the sink stops is not waited for: its rows are not written.
            self._builder.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, conn: Any) -> None:
        schema = quote(self.config.schema)
        await migrate(conn, self.config.schema)
        held = await conn.fetchval(
            f"SELECT cursor FROM {schema}.drsdtp_change_progress WHERE node = $1", self.node_id
        )
        held = int(held or 0)
        # A feed below the database's position (a new data directory under the same node id, numbered
        # from a clock that went back) is read from its start: the index skips what is held.
        self.stats.cursor = held if held <= self._feed.seq else 0
        # What this connection did not commit may not be in the database: offer it again. A new dict, not
        # cleared: a batch the previous connection left building may still write to the old one.
        self._known = {}
        changes = self._feed.subscribe(self.stats.cursor)
        while True:
            batch, cursor = self._feed.read(changes.cursor, _FEED_BATCH)
            if cursor == changes.cursor:
                await asyncio.sleep(self.config.flush_interval_s)
                continue
            await self._write(conn, schema, [c.twin for c in batch], cursor)
            changes.cursor = cursor

    def _rows(self, twins: Sequence[str], known: dict[tuple[str, str], int]) -> list[tuple[Row, int]]:
        """On the builder thread. A twin that keeps changing while it is read is left out: its
        changes are later in the feed than this batch, which will offer it again."""
        now_ms = time.time_ns() // 1_000_000
        rows: list[tuple[Row, int]] = []
        for twin in twins:
            if not twin.startswith(SYSTEM_PREFIX):
                for _ in range(_READ_ATTEMPTS):
                    got = field_rows(self.node_id, twin, self._store, known, now_ms)
                    if got is not None:
                        rows.extend(got)
                        break
        return rows

    async def _build(self, twins: Sequence[str]) -> list[tuple[Row, int]]:
        if self._builder is None:  # not running as a service (a direct call): build here
            return self._rows(twins, self._known)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._builder, self._rows, twins, self._known)

    async def _write(self, conn: Any, schema: str, twins: Sequence[str], cursor: int) -> None:
        """The changed twins' new field states, and the feed position after them, in one transaction
        (several for a batch past :data:`ROWS_PER_BATCH`, the position in the last)."""
        rows = await self._build(twins)
        for i in range(0, max(len(rows), 1), ROWS_PER_BATCH):
            part = rows[i : i + ROWS_PER_BATCH]
            async with conn.transaction():
                if part:
                    await self._insert(conn, schema, [row for row, _ in part])
                if i + ROWS_PER_BATCH >= len(rows):
                    await conn.execute(
                        f"INSERT INTO {schema}.drsdtp_change_progress (node, cursor) VALUES ($1, $2)"
                        " ON CONFLICT (node) DO UPDATE SET cursor = EXCLUDED.cursor, updated = now()",
                        self.node_id,
                        cursor,
                    )
            self._remember(part)
        self.stats.cursor = cursor

    def _remember(self, rows: Sequence[tuple[Row, int]]) -> None:
        if len(self._known) + len(rows) > MAX_REMEMBERED:
            self._known.clear()
        for row, version in rows:
            self._known[(row[1], row[2])] = version

    async def _insert(self, conn: Any, schema: str, rows: list[Row]) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        status = await conn.execute(
            f"INSERT INTO {schema}.drsdtp_twin_changes (node, twin, field, what, version, ts, state)"
            " SELECT n, t, f, w, v, ts, s::jsonb FROM unnest("
            "$1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::text[])"
            " AS u(n, t, f, w, v, ts, s) ON CONFLICT DO NOTHING",
            *columns,
        )
        inserted = int(status.split()[-1])
        self.stats.rows += inserted
        self.stats.duplicates += len(rows) - inserted
