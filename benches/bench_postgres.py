"""PostgreSQL sink throughput against a real PostgreSQL (not a test; prints figures).

1. ceiling: bare asyncpg COPY of the same rows, the same batch size, into a fresh table;
2. catch-up: the sink draining an outbox that filled while the database was away (``--outage-readings``
   readings, as ``--batch``-reading journal records), readings/s from connect to caught up;
3. steady: readings fed through ``observe`` as the node's history would, readings/s end to end;
4. outage: readings fed at ``--outage-rate`` readings/s while the database is killed for ``--outage-s``
   seconds (a shortened outage: the issue's is 10 minutes) and started again; the rate at which the sink
   drains the backlog from the restart (reconnect backoff included) while the feed goes on, and from it
   the time a 10-minute outage at that feed rate takes to catch up: backlog / (drain rate - feed rate).
Each ratio is against (1) in the same run.

Run: ``.venv/bin/python benches/bench_postgres.py [--outage-readings 2000000] [--batch 500] [--outage-s 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).parent))

from bench_report import Goal, Row, emit

from drsdtp.config import PostgresConfig
from drsdtp.history import journal
from drsdtp.northbound.postgres import PostgresSink
from tests.northbound.postgres_server import PostgresServer, postgres_server

T0 = 1_700_000_000_000


def record(number: int, rows: int) -> bytes:
    idx = np.arange(rows)
    return journal.encode(
        number,
        [f"asset-{k}" for k in range(50)],
        ["temperature", "pressure"],
        idx % 50,
        idx % 2,
        (T0 + number * rows + idx).astype(np.int64),
        np.random.default_rng(number).normal(20, 1, rows),
    )


async def bare_copy(dsn: str, n: int, batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE bare (node text, twin text, field text, ts timestamptz, value double precision)"
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    batches = []
    for b in range(n // batch):
        decoded = journal.decode(record(b + 1, batch))
        stamps = [epoch + timedelta(milliseconds=int(t)) for t in decoded.ts.tolist()]
        batches.append(
            list(
                zip(["n"] * batch, decoded.twins, decoded.fields, stamps, decoded.value.tolist(), strict=True)
            )
        )
    t = time.perf_counter()
    for rows in batches[: max(1, len(batches))]:
        async with conn.transaction():
            await conn.copy_records_to_table("bare", records=rows)
    elapsed = time.perf_counter() - t
    await conn.close()
    return n / elapsed


async def catch_up(dsn: str, n: int, batch: int, schema: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sink = PostgresSink(pathlib.Path(tmp), PostgresConfig(dsn=dsn, schema=schema), "bench")
        sink.recover(record(b + 1, batch) for b in range(n // batch))  # the outbox an outage left
        t = time.perf_counter()
        async with sink:
            while sink.stats.database_journal < n // batch:  # noqa: ASYNC110 (polls a counter)
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - t
    return n / elapsed


async def steady(dsn: str, n: int, batch: int, schema: str) -> float:
    records = [record(b + 1, batch) for b in range(n // batch)]
    with tempfile.TemporaryDirectory() as tmp:
        sink = PostgresSink(pathlib.Path(tmp), PostgresConfig(dsn=dsn, schema=schema), "bench")
        async with sink:
            await asyncio.sleep(0.5)  # connected and migrated
            t = time.perf_counter()
            for i, r in enumerate(records):
                sink.observe(r)
                if i % 20 == 0:
                    await asyncio.sleep(0)  # the event loop keeps turning, as in a node
            while sink.stats.database_journal < len(records):  # noqa: ASYNC110 (polls a counter)
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - t
    return n / elapsed


async def outage(
    pg: PostgresServer, rate: float, outage_s: float, batch: int, schema: str
) -> tuple[float, int]:
    """Drain rate (readings/s) of the backlog a database outage left, with the feed going on, and the
    backlog (readings)."""
    config = PostgresConfig(dsn=pg.dsn, schema=schema, flush_interval_s=0.1, max_backoff_s=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        sink = PostgresSink(pathlib.Path(tmp), config, "bench")
        number = 0

        async def feed() -> None:
            nonlocal number
            t0 = time.perf_counter()
            while True:
                due = int((time.perf_counter() - t0) * rate / batch)
                while number < due:
                    number += 1
                    sink.observe(record(number, batch))
                await asyncio.sleep(0.01)

        async with sink:
            feeder = asyncio.create_task(feed())
            await asyncio.sleep(2.0)  # connected, migrated, keeping up
            await asyncio.to_thread(pg.kill)
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(pg.start)
            t = time.perf_counter()
            await sink.flush()
            mark, start = sink.outbox.mark, sink.stats.database_journal
            while sink.stats.database_journal < mark:  # noqa: ASYNC110 (polls a counter)
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - t
            feeder.cancel()
    backlog = (mark - start) * batch
    return backlog / elapsed, backlog


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-readings", type=int, default=2_000_000)
    parser.add_argument("--steady-readings", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=500, help="readings per journal record")
    parser.add_argument("--outage-s", type=float, default=60.0, help="seconds the database is down")
    parser.add_argument("--outage-rate", type=float, default=10_000.0, help="readings/s fed meanwhile")
    args = parser.parse_args()
    rows: list[Row] = []
    with postgres_server() as pg:
        ceiling = await bare_copy(pg.dsn, args.steady_readings, args.batch)
        print(f"bare asyncpg COPY        {ceiling:12,.0f} readings/s (ceiling)")
        rate = await catch_up(pg.dsn, args.outage_readings, args.batch, "catchup")
        print(f"sink catch-up of outbox  {rate:12,.0f} readings/s  ({rate / ceiling:.2f}x the ceiling)")
        rows.append(Row.of("PostgreSQL outbox catch-up (filled outbox) vs bare COPY", rate, "readings/s",
                           baseline=ceiling, baseline_name="asyncpg COPY"))  # fmt: skip
        rate = await steady(pg.dsn, args.steady_readings, args.batch, "steady")
        print(f"sink steady (observe)    {rate:12,.0f} readings/s  ({rate / ceiling:.2f}x the ceiling)")
        rows.append(Row.of("PostgreSQL sustained readings vs bare COPY", rate, "readings/s",
                           baseline=ceiling, baseline_name="asyncpg COPY"))  # fmt: skip
        feed = args.outage_rate
        drain, backlog = await outage(pg, feed, args.outage_s, args.batch, "outage")
        print(f"after a {args.outage_s:g} s outage at {feed:,.0f} readings/s: {backlog:,} readings drained")
        print(f"  at {drain:,.0f} readings/s ({drain / ceiling:.2f}x the ceiling), the feed going on")
        ten = 600 * feed
        if drain > feed:
            print(f"  extrapolated: a 10-minute outage ({ten:,.0f} readings) catches up in "
                  f"{ten / (drain - feed):.0f} s")  # fmt: skip
        else:
            print("  extrapolated: the sink does not drain faster than the feed: it never catches up")
        # Catching up at all needs a drain faster than the feed.
        rows.append(Row.of("PostgreSQL catch-up after an outage vs bare COPY", drain,
                           "readings/s", Goal(">=", feed),
                           baseline=ceiling, baseline_name="asyncpg COPY"))  # fmt: skip
        if drain > feed:
            rows.append(Row.of("10-minute outage caught up in (extrapolated)",
                               ten / (drain - feed), "s"))  # fmt: skip
    emit("bench_postgres", rows)


if __name__ == "__main__":
    asyncio.run(main())
