"""The TimescaleDB path of the schema. The extension is not in Debian's archive, so no test here runs it:
they check what the node would do with it present (the SQL it runs, and that a server that lists the
extension but cannot load it leaves the plain table), and, on a real PostgreSQL, that the
``create_hypertable`` call binds to a function of TimescaleDB's documented signature with the arguments
meant, and that every unique index of the readings includes ``ts`` (a hypertable refuses one that does
not)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from drsdtp.northbound.postgres.schema import HYPERTABLE_SQL, TIMESCALE_AVAILABLE, hypertable, migrate
from tests.northbound.postgres_server import postgres_server


class Recording:
    """A connection that records statements; ``available`` answers the extension query, ``refuse`` makes a
    statement containing it fail as the server would."""

    def __init__(self, *, available: bool, refuse: str | None = None) -> None:
        self.available, self.refuse = available, refuse
        self.statements: list[str] = []

    async def fetchval(self, query: str, *args: Any) -> Any:
        assert query == TIMESCALE_AVAILABLE
        return int(self.available)

    async def execute(self, query: str, *args: Any) -> str:
        self.statements.append(query)
        if self.refuse is not None and self.refuse in query:
            raise asyncpg.FeatureNotSupportedError('extension "timescaledb" must be preloaded')
        return "SELECT 1"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


async def test_with_the_extension_the_readings_become_a_hypertable_on_ts() -> None:
    conn = Recording(available=True)
    assert await hypertable(conn, "plant") is True
    assert conn.statements == [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        "SELECT create_hypertable('\"plant\".drsdtp_readings'::regclass, 'ts'::name,"
        " if_not_exists => TRUE, migrate_data => TRUE)",
    ]


async def test_without_the_extension_nothing_is_tried() -> None:
    conn = Recording(available=False)
    assert await hypertable(conn, "plant") is False
    assert conn.statements == []


async def test_an_extension_the_server_cannot_load_leaves_the_plain_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = Recording(available=True, refuse="CREATE EXTENSION")
    with caplog.at_level(logging.WARNING):
        assert await hypertable(conn, "plant") is False
    assert "must be preloaded" in caplog.text
    assert conn.statements == ["CREATE EXTENSION IF NOT EXISTS timescaledb"]


# TimescaleDB 2.x's create_hypertable (the interface before 2.13, still there after it), as documented: a
# stand-in that records its arguments, so the call binds by name and type as it would to the real one.
STAND_IN = """
CREATE TABLE hypertable_calls (
    relation regclass, time_column name, if_not_exists boolean, migrate_data boolean);
CREATE FUNCTION create_hypertable(
    relation regclass, time_column_name name, partitioning_column name = NULL,
    number_partitions integer = NULL, associated_schema_name name = NULL, associated_table_prefix name = NULL,
    chunk_time_interval anyelement = NULL::bigint, create_default_indexes boolean = TRUE,
    if_not_exists boolean = FALSE, partitioning_func regproc = NULL, migrate_data boolean = FALSE,
    chunk_target_size text = NULL, chunk_sizing_func regproc = NULL, time_partitioning_func regproc = NULL)
RETURNS TABLE(hypertable_id integer, schema_name name, table_name name, created boolean)
LANGUAGE sql AS $$
    INSERT INTO hypertable_calls VALUES (relation, time_column_name, if_not_exists, migrate_data);
    SELECT 1, 'plant'::name, 'drsdtp_readings'::name, TRUE;
$$;
"""


@pytest.mark.integration
async def test_the_hypertable_call_binds_to_timescaledbs_signature() -> None:
    with postgres_server() as pg:
        conn = await asyncpg.connect(pg.dsn, timeout=10)
        try:
            await migrate(conn, "plant")
            await conn.execute(STAND_IN)
            await conn.execute(HYPERTABLE_SQL[1].format(s='"plant"'))
            call = await conn.fetchrow(
                "SELECT relation::text, time_column, if_not_exists, migrate_data FROM hypertable_calls"
            )
            unique = await conn.fetch(
                "SELECT i.indexrelid::regclass::text AS name,"
                " array_agg(a.attname::text) AS columns FROM pg_index i"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = 'plant.drsdtp_readings'::regclass AND i.indisunique GROUP BY 1"
            )
        finally:
            await conn.close()
    assert tuple(call) == ("plant.drsdtp_readings", "ts", True, True)
    assert unique, "the readings have no unique index (a replay would store readings twice)"
    assert all("ts" in row["columns"] for row in unique), unique
