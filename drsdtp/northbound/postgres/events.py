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
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from drsdtp.actions.record import CommandRecord
from drsdtp.alarms.record import AlarmRecord
from drsdtp.config import PostgresConfig
from drsdtp.intelligence.anomalies import AnomalyRecord
from drsdtp.lifecycle import BackgroundService
from drsdtp.northbound.postgres.schema import migrate, quote
from drsdtp.supervisor import Backoff, Supervisor

__all__ = ["EventSink", "EventStats", "event_rows"]

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def anomaly_row(node: str, record: AnomalyRecord) -> Row:
    return (
        node, "anomaly", f"{node}/{record.seq}/{record.logged_ms}", "", _at(record.logged_ms), record.twin,
        json.dumps(record.to_dict(), default=str),
    )  # fmt: skip


def alarm_row(node: str, record: AlarmRecord) -> Row:
    mark = record.cleared or record.acked
    ms = mark.ms if mark is not None else record.raised_ms
    body = {
        "id": record.id, "rule": record.rule, "twin": record.twin, "severity": record.severity,
        "message": record.message, "state": str(record.state), "count": record.count,
        "first_ms": record.first_ms, "raised_ms": record.raised_ms, "raised_by": record.raised_by,
        "acked": None if record.acked is None else {"ms": record.acked.ms, "who": record.acked.who,
                                                     "reason": record.acked.reason},
        "cleared": None if record.cleared is None else {"ms": record.cleared.ms, "who": record.cleared.who,
                                                         "reason": record.cleared.reason},
    }  # fmt: skip
    return (
        node,
        "alarm",
        record.id,
        f"{record.count}/{record.state}",
        _at(ms),
        record.twin,
        json.dumps(body),
    )


def command_row(node: str, record: CommandRecord) -> Row:
    mark = record.marks.get(record.state)
    ms = mark.ms if mark is not None else record.issued_ms
    body = json.dumps(record.to_dict(), default=str)
    return (node, "command", str(record.id), str(record.state), _at(ms), record.twin, body)


def event_rows(
    node: str,
    anomalies: Iterable[AnomalyRecord],
    alarms: Iterable[AlarmRecord],
    commands: Iterable[CommandRecord],
) -> list[Row]:
    return [
        *(anomaly_row(node, r) for r in anomalies),
        *(alarm_row(node, r) for r in alarms),
        *(command_row(node, r) for r in commands),
    ]


class EventSink(BackgroundService):
    name = "postgres events"

    def __init__(
        self,
        config: PostgresConfig,
        node_id: str,
        anomalies: AnomalySource,
        alarms: Callable[[], Iterable[AlarmRecord]],
        commands: Callable[[], Iterable[CommandRecord]],
        connect: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.config, self.node_id = config, node_id
        self.stats = EventStats()
        self._anomalies, self._alarms, self._commands = anomalies, alarms, commands
        self._sent: dict[tuple[str, str], str] = {}  # (kind, key) -> the version the database holds
        self._connect = connect or self._asyncpg_connect
        self.supervisor: Supervisor[Any] = Supervisor(
            "postgres events",
            self._connection,
            self._drain,
            Backoff(initial_s=0.2, max_s=config.max_backoff_s),
        )

    async def run(self) -> None:
        await self.supervisor.run()

    async def _asyncpg_connect(self) -> Any:
        import asyncpg  # the driver only when the sink is configured

        return await asyncpg.connect(self.config.dsn, timeout=self.config.connect_timeout_s)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        conn = await self._connect()
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

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
        anomalies = self._anomalies.after(self.stats.anomaly_seq, limit=ANOMALIES_PER_BATCH)
        last = anomalies[-1].seq if anomalies else self.stats.anomaly_seq
        changed = [
            row
            for row in event_rows(self.node_id, (), self._alarms(), self._commands())
            if self._sent.get((row[1], row[2])) != row[3]
        ]
        return [anomaly_row(self.node_id, r) for r in anomalies] + changed, last

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
