"""The PostgreSQL sink against a real PostgreSQL server: the schema made on first connect, every record in
the database exactly once, through a killed server and through a replay of records the database held."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from drsdtp.config import PostgresConfig
from drsdtp.northbound.postgres import PostgresSink
from drsdtp.northbound.postgres.schema import SCHEMA_VERSION
from tests.northbound.postgres_server import PostgresServer, postgres_server
from tests.northbound.records import T0_MS, record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as pg:
        yield pg


@pytest.fixture
async def schema(server: PostgresServer, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A schema of its own per test, on the module's server."""
    name = "t_" + request.node.name.replace("[", "_").replace("]", "")[:50]
    yield name
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def config(server: PostgresServer, schema: str, **overrides: Any) -> PostgresConfig:
    return PostgresConfig(
        dsn=server.dsn, schema=schema, flush_interval_s=0.05, max_backoff_s=0.5, **overrides
    )


async def values(server: PostgresServer, schema: str) -> list[float]:
    conn = await asyncpg.connect(server.dsn)
    try:
        return [r[0] for r in await conn.fetch(f'SELECT value FROM "{schema}".drsdtp_readings ORDER BY ts')]
    finally:
        await conn.close()


async def wait_rows(server: PostgresServer, schema: str, n: int, timeout_s: float = 60.0) -> list[float]:
    deadline = time.monotonic() + timeout_s
    got: list[float] = []
    while time.monotonic() < deadline:
        try:
            got = await values(server, schema)
        except (OSError, asyncpg.PostgresError):
            got = []
        if len(got) >= n:
            return got
        await asyncio.sleep(0.1)
    return got


async def test_first_connect_creates_the_schema_and_rows_arrive_once(
    server: PostgresServer, schema: str, tmp_path: pathlib.Path
) -> None:
    sink = PostgresSink(tmp_path, config(server, schema), "edge-1")
    async with sink:
        for n in range(1, 21):
            sink.observe(record(n))
        got = await wait_rows(server, schema, 200)
    assert got == [float(i) for i in range(200)]
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval(f'SELECT max(version) FROM "{schema}".drsdtp_schema') == SCHEMA_VERSION
        row = await conn.fetchrow(f'SELECT node, journal FROM "{schema}".drsdtp_sink_progress')
        first = await conn.fetchrow(
            f'SELECT twin, field, ts FROM "{schema}".drsdtp_readings ORDER BY ts LIMIT 1'
        )
    finally:
        await conn.close()
    assert (row["node"], row["journal"]) == ("edge-1", 20)
    assert (first["twin"], first["field"]) == ("t0", "v")
    assert int(first["ts"].timestamp() * 1000) == T0_MS
    assert sink.stats.rows == 200


async def test_a_killed_database_misses_nothing_and_duplicates_nothing(
    server: PostgresServer, schema: str, tmp_path: pathlib.Path
) -> None:
    sink = PostgresSink(tmp_path, config(server, schema, batch_bytes=2048), "edge-1")
    async with sink:
        for n in range(1, 101):
            sink.observe(record(n))
            if n == 30:
                await wait_rows(server, schema, 10)
                await asyncio.to_thread(server.kill)  # mid-stream
            if n == 60:
                await asyncio.to_thread(server.start)
            await asyncio.sleep(0.01)
        got = await wait_rows(server, schema, 1000)
    assert sorted(got) == [float(i) for i in range(1000)]
    assert sink.supervisor.stats.reconnects >= 1


async def test_records_the_database_already_holds_are_not_inserted_again(
    server: PostgresServer, schema: str, tmp_path: pathlib.Path
) -> None:
    """A crash after the commit but before the outbox let go of the records: the next start replays them,
    and the progress row in the same transaction as the rows makes that a no-op."""
    first = PostgresSink(tmp_path, config(server, schema), "edge-1")
    first.recover([record(n) for n in range(1, 11)])
    async with first:
        await wait_rows(server, schema, 100)
    # Put the released records back, as a crash before the release would have left them.
    again = PostgresSink(tmp_path / "again", config(server, schema), "edge-1")
    again.recover([record(n) for n in range(1, 16)])
    async with again:
        got = await wait_rows(server, schema, 150)
        while again.stats.database_journal < 15:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert sorted(got) == [float(i) for i in range(150)]
    assert again.stats.rows == 50  # only the five batches the database lacked


async def test_nodes_sharing_a_database_keep_their_own_progress(
    server: PostgresServer, schema: str, tmp_path: pathlib.Path
) -> None:
    a = PostgresSink(tmp_path / "a", config(server, schema), "edge-a")
    b = PostgresSink(tmp_path / "b", config(server, schema), "edge-b")
    a.recover([record(n) for n in range(1, 6)])
    b.recover([record(n, offset=1000) for n in range(1, 4)])
    async with a, b:
        got = await wait_rows(server, schema, 80)
    assert len(got) == 80  # each node's batches once, though their journal numbers overlap


async def test_a_reading_delivered_twice_upstream_is_stored_once(
    server: PostgresServer, schema: str, tmp_path: pathlib.Path
) -> None:
    """A broker redelivers what a node applied but had not acknowledged when it died: the same readings come
    back in a batch of their own, under a new journal number."""
    sink = PostgresSink(tmp_path, config(server, schema), "edge-1")
    sink.recover([record(1), record(2), record(3, offset=-10)])  # batch 3 repeats batch 2's readings
    async with sink:
        got = await wait_rows(server, schema, 20)
        while sink.stats.database_journal < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert sorted(await values(server, schema)) == [float(i) for i in range(20)]
    assert (sink.stats.rows, sink.stats.duplicates) == (20, 10)
    assert len(got) == 20
