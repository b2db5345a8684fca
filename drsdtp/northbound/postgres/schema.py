"""The sink's tables, created and migrated on first connect.

Migrations are numbered and applied in order, in one transaction under an advisory lock, so nodes that share a
database and start together migrate it once. ``drsdtp_sink_progress`` holds, per node, the journal number of
the last batch the database holds: it is updated in the same transaction as the batch's rows, which is what
makes a replay after a crash insert nothing twice. A reading that reached the node twice (a broker redelivers
what was applied but not yet acknowledged when the node died) has two batches; the unique index on
(twin, field, ts, value), the identity history keeps too, stores it once. With the TimescaleDB extension
available, readings become a hypertable on ``ts``. Version 2 adds the events (anomalies, alarm and command
transitions: :mod:`~drsdtp.northbound.postgres.events`) and the node's position in its anomaly log; version 3
the twin changes other than readings (:mod:`~drsdtp.northbound.postgres.changes`) and the node's position in
its change feed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

__all__ = [
    "HYPERTABLE_SQL",
    "SCHEMA_VERSION",
    "TIMESCALE_AVAILABLE",
    "hypertable",
    "migrate",
    "quote",
    "timestamp",
]

log = logging.getLogger(__name__)

# (version, statements); {s} is the quoted schema name
_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            "CREATE TABLE IF NOT EXISTS {s}.drsdtp_readings ("
            " node text NOT NULL, twin text NOT NULL, field text NOT NULL,"
            " ts timestamptz NOT NULL, value double precision NOT NULL)",
            # A reading's identity, as in history: one delivered twice upstream is stored once.
            "CREATE UNIQUE INDEX IF NOT EXISTS drsdtp_readings_identity"
            " ON {s}.drsdtp_readings (twin, field, ts, value)",
            "CREATE TABLE IF NOT EXISTS {s}.drsdtp_sink_progress ("
            " node text PRIMARY KEY, journal bigint NOT NULL, updated timestamptz NOT NULL DEFAULT now())",
        ),
    ),
    (
        2,
        (
            # Anomalies, alarm and command transitions (drsdtp.northbound.postgres.events); an event's
            # identity is (kind, key, version): replicated records written by every node are stored once.
            "CREATE TABLE IF NOT EXISTS {s}.drsdtp_events ("
            " node text NOT NULL, kind text NOT NULL, key text NOT NULL, version text NOT NULL,"
            " ts timestamptz NOT NULL, twin text NOT NULL, body jsonb NOT NULL)",
            "CREATE UNIQUE INDEX IF NOT EXISTS drsdtp_events_identity"
            " ON {s}.drsdtp_events (kind, key, version)",
            "CREATE INDEX IF NOT EXISTS drsdtp_events_twin_ts ON {s}.drsdtp_events (twin, ts)",
            "CREATE TABLE IF NOT EXISTS {s}.drsdtp_event_progress ("
            " node text PRIMARY KEY, anomaly_seq bigint NOT NULL,"
            " updated timestamptz NOT NULL DEFAULT now())",
        ),
    ),
    (
        3,
        (
            # Twin changes other than readings (drsdtp.northbound.postgres.changes): one row per state of a
            # field, named by (twin, field, version), the field's version being the same on every replica.
            "CREATE TABLE IF NOT EXISTS {s}.drsdtp_twin_changes ("
            " node text NOT NULL, twin text NOT NULL, field text NOT NULL, what text NOT NULL,"
            " version bigint NOT NULL, ts timestamptz NOT NULL, state jsonb NOT NULL)",
            "CREATE UNIQUE INDEX IF NOT EXISTS drsdtp_twin_changes_identity"
            " ON {s}.drsdtp_twin_changes (twin, field, version)",
            "CREATE INDEX IF NOT EXISTS drsdtp_twin_changes_twin_ts ON {s}.drsdtp_twin_changes (twin, ts)",
            "CREATE TABLE IF NOT EXISTS {s}.drsdtp_change_progress ("
            " node text PRIMARY KEY, cursor bigint NOT NULL, updated timestamptz NOT NULL DEFAULT now())",
        ),
    ),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1][0]
# With TimescaleDB (not in Debian's archive, so the tests check this SQL against a function of its
# documented signature, not against the extension): the readings partitioned on ts. Its unique indexes must
# include ts, as drsdtp_readings_identity does.
TIMESCALE_AVAILABLE: Final = "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
HYPERTABLE_SQL: Final = (
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    "SELECT create_hypertable('{s}.drsdtp_readings'::regclass, 'ts'::name,"
    " if_not_exists => TRUE, migrate_data => TRUE)",
)
_LOCK_KEY: Final = 0x64727364_7470  # "drsdtp": one advisory lock for every node's migration


class Connection(Protocol):  # the asyncpg.Connection subset used here
    async def execute(self, query: str, *args: Any) -> str: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    def transaction(self) -> Any: ...


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(ms: int) -> datetime:
    """A ``timestamptz`` value from Unix milliseconds (an aware datetime: asyncpg keeps the milliseconds)."""
    return _EPOCH + timedelta(milliseconds=ms)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def migrate(conn: Connection, schema: str) -> tuple[int, bool]:
    """Brings the schema to :data:`SCHEMA_VERSION`. Returns (the version found, whether the readings are a
    TimescaleDB hypertable)."""
    s = quote(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.drsdtp_schema (version integer NOT NULL)")
        found = await conn.fetchval(f"SELECT max(version) FROM {s}.drsdtp_schema") or 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database's drsdtp schema is version {found}, newer than this node's {SCHEMA_VERSION}"
            )
        for version, statements in _MIGRATIONS:
            if version > found:
                for statement in statements:
                    await conn.execute(statement.format(s=s))
                await conn.execute(f"INSERT INTO {s}.drsdtp_schema (version) VALUES ($1)", version)
        hyper = await hypertable(conn, schema)
    return int(found), hyper


async def hypertable(conn: Connection, schema: str) -> bool:
    """Makes the readings a TimescaleDB hypertable on ``ts`` when the server offers the extension (inside
    the caller's transaction, under a savepoint). An extension the server lists but cannot load (it must be
    in ``shared_preload_libraries``) leaves the plain table, with a warning: the sink works the same."""
    if not await conn.fetchval(TIMESCALE_AVAILABLE):
        return False
    try:
        async with conn.transaction():
            for statement in HYPERTABLE_SQL:
                await conn.execute(statement.format(s=quote(schema)))
    except Exception as exc:  # the server's refusal, whatever its class: the plain table stays
        log.warning("postgres: TimescaleDB is available but readings stay a plain table: %s", exc)
        return False
    return True
