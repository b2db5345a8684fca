"""Events to PostgreSQL: the node's anomalies, and every alarm and command transition, in ``drsdtp_events``.

A row is an event's identity (kind, key, version) plus when, which twin, and the record as JSON:

* ``anomaly``: key ``<node>/<seq>/<logged_ms>`` (the node's anomaly log; every node judges the twins it
  holds, so the same process event may be logged by two nodes, each saying what it saw);
* ``alarm``: key the alarm id (the same on every node), version ``<episode>/<state>``;
* ``command``: key the command id, version its state.

Alarms and commands are replicated records, so every node that holds one writes the same (kind, key,
version) and the unique index keeps one row: a transition is stored once for the cluster. The sources are
durable on the node (the anomaly log on disk, alarms and commands in the replicated store), so nothing needs
an outbox of its own: while the database is down the sources keep what happens, and on reconnect this
writes what the database lacks. The node's anomaly position is kept in ``drsdtp_event_progress``, advanced in
the same transaction as the rows. What a poll cannot see is a transition superseded between two polls or
during an outage (an alarm raised and cleared while the database was down is stored as cleared).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from drsdtp.actions.record import CommandRecord
from drsdtp.alarms.record import AlarmRecord
from drsdtp.config import PostgresConfig
from drsdtp.intelligence.anomalies import AnomalyRecord
from drsdtp.lifecycle import BackgroundService
from drsdtp.northbound.postgres.connection import Connect, asyncpg_connect, supervised
from drsdtp.northbound.postgres.schema import migrate, quote, timestamp

__all__ = ["EventSink", "EventStats"]

log = logging.getLogger(__name__)
ANOMALIES_PER_BATCH = 5000

# (node, kind, key, version, ts, twin, body)
Row = tuple[str, str, str, str, datetime, str, str]


class AnomalySource(Protocol):  # the AnomalyJournal subset used here
    next_seq: int

    def after(
        self, seq: int, twins: Iterable[str] | None = None, limit: int = 1000
    ) -> list[AnomalyRecord]: ...


@dataclass(slots=True)
class EventStats:
    rows: int = 0  # events the database committed (new to it)
    duplicates: int = 0  # events it held already (another node's, or a replay)
    anomaly_seq: int = 0  # the last anomaly of this node the database holds


def anomaly_row(node: str, record: AnomalyRecord) -> Row:
    key = f"{node}/{record.seq}/{record.logged_ms}"
    body = json.dumps(record.to_dict(), default=str)
    return (node, "anomaly", key, "", timestamp(record.logged_ms), record.twin, body)


def alarm_version(record: AlarmRecord) -> str:
    return f"{record.count}/{record.state}"


def alarm_row(node: str, record: AlarmRecord) -> Row:
    mark = record.cleared or record.acked  # the transition this version is
    ms = mark.ms if mark is not None else record.raised_ms
    body = json.dumps(dataclasses.asdict(record))
    return (node, "alarm", record.id, alarm_version(record), timestamp(ms), record.twin, body)


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
        alarms: Callable[[], Iterable[AlarmRecord]],
        commands: Callable[[], Iterable[CommandRecord]],
        connect: Connect | None = None,
    ) -> None:
        self.config, self.node_id = config, node_id
        self.stats = EventStats()
        self._anomalies, self._alarms, self._commands = anomalies, alarms, commands
        self._sent: dict[tuple[str, str], str] = {}  # (kind, key) -> the version the database holds
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
        self._sent.clear()  # what the database holds is known again only by writing
        while True:
            await self._write(conn, schema)
            await asyncio.sleep(self.config.flush_interval_s)

    def _pending(self) -> tuple[list[Row], int]:
        """This node's new anomalies, and the alarms and commands whose version the database lacks (a row,
        with its JSON body, is built only for those)."""
        anomalies = self._anomalies.after(self.stats.anomaly_seq, limit=ANOMALIES_PER_BATCH)
        last = anomalies[-1].seq if anomalies else self.stats.anomaly_seq
        rows = [anomaly_row(self.node_id, r) for r in anomalies]
        sent: dict[tuple[str, str], str] = {}  # of the records the node holds now: the others are forgotten
        for alarm in self._alarms():
            key = ("alarm", alarm.id)
            sent[key] = self._sent.get(key, "")
            if sent[key] != alarm_version(alarm):
                rows.append(alarm_row(self.node_id, alarm))
        for command in self._commands():
            key = ("command", str(command.id))
            sent[key] = self._sent.get(key, "")
            if sent[key] != str(command.state):
                rows.append(command_row(self.node_id, command))
        self._sent = {k: v for k, v in sent.items() if v}
        return rows, last

    async def _write(self, conn: Any, schema: str) -> None:
        rows, last = self._pending()
        if not rows:
            return
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with conn.transaction():
            status = await conn.execute(
                f"INSERT INTO {schema}.drsdtp_events (node, kind, key, version, ts, twin, body)"
                " SELECT n, k, e, v, ts, t, b::jsonb FROM unnest("
                "$1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])"
                " AS u(n, k, e, v, ts, t, b) ON CONFLICT DO NOTHING",
                *columns,
            )
            await conn.execute(
                f"INSERT INTO {schema}.drsdtp_event_progress (node, anomaly_seq) VALUES ($1, $2)"
                " ON CONFLICT (node) DO UPDATE SET anomaly_seq = EXCLUDED.anomaly_seq, updated = now()",
                self.node_id,
                last,
            )
        inserted = int(status.split()[-1])
        self.stats.rows += inserted
        self.stats.duplicates += len(rows) - inserted
        self.stats.anomaly_seq = last
        for row in rows:
            if row[1] != "anomaly":
                self._sent[(row[1], row[2])] = row[3]
