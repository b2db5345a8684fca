"""Events to PostgreSQL: the node's anomalies, and every alarm and command transition, in ``drsdtp_events``.

A row is an event's identity (kind, key, version) plus when, which twin, and the record as JSON:

* ``anomaly``: key ``<node>/<seq>/<logged_ms>`` (the node's anomaly log; every node judges the twins it
  holds, so the same process event may be logged by two nodes, each saying what it saw);
* ``alarm``: key the alarm id (the same on every node), version ``<episode>/<state>``;
* ``command``: key the command id, version its state.

Alarms and commands are replicated records, so every node that holds one writes the same (kind, key,
version) and the unique index keeps one row: a transition is stored once for the cluster. The sources are
durable on the node (the anomaly log on disk, alarms and commands in the replicated store), so nothing needs
an outbox of its own: while the database is down the sources keep what happens, and on (re)connect every
alarm and command the node holds is written once (what the database holds already is skipped by the
index), then only those the node's change feed names. The node's anomaly position is kept in
``drsdtp_event_progress``, advanced in the same transaction as the anomalies. What a poll cannot see is a
transition superseded between two polls or during an outage (an alarm raised and cleared while the
database was down is stored as cleared).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from drsdtp.actions.record import CMD_PREFIX, CommandRecord
from drsdtp.alarms.record import ALARM_PREFIX, AlarmRecord
from drsdtp.api.feed import ChangeFeed
from drsdtp.config import PostgresConfig
from drsdtp.intelligence.anomalies import AnomalyRecord
from drsdtp.lifecycle import BackgroundService
from drsdtp.northbound.postgres.connection import Connect, asyncpg_connect, supervised
from drsdtp.northbound.postgres.schema import migrate, quote, timestamp

__all__ = ["EventSink", "EventStats"]

log = logging.getLogger(__name__)
ROWS_PER_BATCH = 5000  # rows per transaction (the first pass after a connect writes every record)
_FEED_BATCH = 10_000
R = TypeVar("R", covariant=True)

# (node, kind, key, version, ts, twin, body)
Row = tuple[str, str, str, str, datetime, str, str]


class AnomalySource(Protocol):  # the AnomalyJournal subset used here
    next_seq: int

    def after(
        self, seq: int, twins: Iterable[str] | None = None, limit: int = 1000
    ) -> list[AnomalyRecord]: ...


class Book(Protocol[R]):  # the AlarmBook / CommandBook subset used here
    def ids(self) -> Sequence[str]: ...
    def get(self, key: str, /) -> R | None: ...


@dataclass(slots=True)
class EventStats:
    rows: int = 0  # events the database committed (new to it)
    duplicates: int = 0  # rows it held already (another node's, a replay, a record changed in place)
    anomaly_seq: int = 0  # the last anomaly of this node the database holds


def anomaly_row(node: str, record: AnomalyRecord) -> Row:
    key = f"{node}/{record.seq}/{record.logged_ms}"
    body = json.dumps(record.to_dict(), default=str)
    return (node, "anomaly", key, "", timestamp(record.logged_ms), record.twin, body)


def alarm_row(node: str, record: AlarmRecord) -> Row:
    mark = record.cleared or record.acked  # the transition this version is
    ms = mark.ms if mark is not None else record.raised_ms
    body = json.dumps(dataclasses.asdict(record))
    return (node, "alarm", record.id, f"{record.count}/{record.state}", timestamp(ms), record.twin, body)


def command_row(node: str, record: CommandRecord) -> Row:
    mark = record.marks.get(record.state)
    ms = mark.ms if mark is not None else record.issued_ms
    body = json.dumps(record.to_dict(), default=str)
    return (node, "command", str(record.id), str(record.state), timestamp(ms), record.twin, body)


class EventSink(BackgroundService):
    name = "postgres events"

    def __init__(
        self,
        config: PostgresConfig,
        node_id: str,
        anomalies: AnomalySource,
        feed: ChangeFeed,
        alarms: Book[AlarmRecord],
        commands: Book[CommandRecord],
        connect: Connect | None = None,
    ) -> None:
        self.config, self.node_id = config, node_id
        self.stats = EventStats()
        self._anomalies, self._feed, self._alarms, self._commands = anomalies, feed, alarms, commands
        self.supervisor = supervised(
            "postgres events", config, connect or asyncpg_connect(config), self._drain
        )

    async def run(self) -> None:
        await self.supervisor.run()

    async def _drain(self, conn: Any) -> None:
        schema = quote(self.config.schema)
        await migrate(conn, self.config.schema)
        held = await conn.fetchval(
            f"SELECT anomaly_seq FROM {schema}.drsdtp_event_progress WHERE node = $1", self.node_id
        )
        held = int(held or 0)
        # A log that starts again below the database's position (a new data directory under the same node
        # id) is written from its start; the event keys carry the log time, so nothing old is overwritten.
        self.stats.anomaly_seq = held if held < self._anomalies.next_seq else 0
        changes = self._feed.subscribe()  # before the full pass: a change during it is read after it
        await self._write(conn, schema, self._rows(self._alarms.ids(), self._commands.ids()))
        while True:
            await self._write_anomalies(conn, schema)
            alarms: list[str] = []
            commands: list[str] = []
            while True:  # every twin changed since the last look
                batch, changes.cursor = self._feed.read(changes.cursor, _FEED_BATCH)
                if not batch:
                    break
                for change in batch:
                    if change.twin.startswith(ALARM_PREFIX):
                        alarms.append(change.twin[len(ALARM_PREFIX) :])
                    elif change.twin.startswith(CMD_PREFIX):
                        commands.append(change.twin[len(CMD_PREFIX) :])
            await self._write(conn, schema, self._rows(alarms, commands))
            await asyncio.sleep(self.config.flush_interval_s)

    def _rows(self, alarms: Iterable[str], commands: Iterable[str]) -> list[Row]:
        held_alarms = (self._alarms.get(a) for a in alarms)
        held_commands = (self._commands.get(c) for c in commands)
        return [
            *(alarm_row(self.node_id, r) for r in held_alarms if r is not None),
            *(command_row(self.node_id, r) for r in held_commands if r is not None),
        ]

    async def _write_anomalies(self, conn: Any, schema: str) -> None:
        """This node's anomalies past its position, with the position in the same transaction."""
        while anomalies := self._anomalies.after(self.stats.anomaly_seq, limit=ROWS_PER_BATCH):
            last = anomalies[-1].seq
            async with conn.transaction():
                await self._insert(conn, schema, [anomaly_row(self.node_id, r) for r in anomalies])
                await conn.execute(
                    f"INSERT INTO {schema}.drsdtp_event_progress (node, anomaly_seq) VALUES ($1, $2)"
                    " ON CONFLICT (node) DO UPDATE SET anomaly_seq = EXCLUDED.anomaly_seq, updated = now()",
                    self.node_id,
                    last,
                )
            self.stats.anomaly_seq = last

    async def _write(self, conn: Any, schema: str, rows: list[Row]) -> None:
        for i in range(0, len(rows), ROWS_PER_BATCH):
            async with conn.transaction():
                await self._insert(conn, schema, rows[i : i + ROWS_PER_BATCH])

    async def _insert(self, conn: Any, schema: str, rows: list[Row]) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        status = await conn.execute(
            f"INSERT INTO {schema}.drsdtp_events (node, kind, key, version, ts, twin, body)"
            " SELECT n, k, e, v, ts, t, b::jsonb FROM unnest("
            "$1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])"
            " AS u(n, k, e, v, ts, t, b) ON CONFLICT DO NOTHING",
            *columns,
        )
        inserted = int(status.split()[-1])
        self.stats.rows += inserted
        self.stats.duplicates += len(rows) - inserted
