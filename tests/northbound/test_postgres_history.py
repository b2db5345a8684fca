"""History older than the node's own tiers is read back from PostgreSQL: a real node whose database already
holds ten-day-old readings (sunk before, by it or a node that shares the database) answers one series across
the boundary, raw and downsampled, and answers from its own history while the database is down."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from drsdtp.client import AsyncClient
from drsdtp.northbound.postgres.schema import migrate
from tests.daemon.test_history_durability import publish, received, wait_subscribed
from tests.daemon.test_mqtt_durability import node_toml, start_node
from tests.ingest.support import Mosquitto, free_port, running
from tests.northbound.postgres_server import postgres_server

OLD = 100  # readings the database holds from ten days ago, one a minute
RECENT = 20  # readings the node ingests now
DAY_MS = 86_400_000


async def seed_database(dsn: str, t0_ms: int) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await migrate(conn, "public")
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        rows = [
            ("old-node", twin, "v", epoch + timedelta(milliseconds=t0_ms + i * 60_000), float(i) + offset)
            for i in range(OLD)
            for twin, offset in (("p0", 0.0), ("p1", 1000.0))  # p1: another twin, never in p0's answer
        ]
        await conn.copy_records_to_table(
            "drsdtp_readings", columns=("node", "twin", "field", "ts", "value"), records=rows
        )
    finally:
        await conn.close()


@pytest.mark.integration
async def test_history_reads_older_points_back_from_postgres(tmp_path: pathlib.Path) -> None:
    broker = Mosquitto(tmp_path)
    now_ms = int(time.time() * 1000)
    old_t0 = now_ms - 10 * DAY_MS
    recent_t0 = now_ms - 60_000
    with running(broker), postgres_server() as pg:
        await seed_database(pg.dsn, old_t0)
        cfg = tmp_path / "node.toml"
        api_port = free_port()
        toml = node_toml(tmp_path / "data", broker, api_port, history=True, payload="json")
        cfg.write_text(f"{toml}\n{pg.sink_config}")
        node = start_node(cfg)
        try:
            await wait_subscribed(broker, api_port, json.dumps({"value": -1.0, "ts": recent_t0 - 1}))
            messages = [
                ("site/p0/v", json.dumps({"value": 500.0 + i, "ts": recent_t0 + i * 1000}))
                for i in range(RECENT)
            ]
            await asyncio.to_thread(publish, broker, messages, "pub-history")
            while await received(api_port) < RECENT + 1:  # noqa: ASYNC110 (the probe counts too)
                await asyncio.sleep(0.05)
            async with AsyncClient(f"127.0.0.1:{api_port}", timeout=20) as client:
                since = now_ms - 30 * DAY_MS
                raw = await client.history("p0", "v", since_ms=since, resolution="raw", limit=10_000)
                hourly = await client.history("p0", "v", since_ms=since, resolution="1h", limit=10_000)
                auto = await client.history("p0", "v", since_ms=since, limit=50)
                auto_raw = await client.history("p0", "v", since_ms=since, limit=10_000)
                recent_only = await client.history("p0", "v", since_ms=recent_t0 - 1000, resolution="raw")

                pg.kill()  # the database goes away: the node answers from its own history
                degraded = await client.history("p0", "v", since_ms=since, resolution="raw", limit=10_000)
            assert node.poll() is None, "the node outlives its database"
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)

    expected_old = [float(i) for i in range(OLD)]
    expected_recent = [500.0 + i for i in range(RECENT)]
    assert raw.resolution == "raw"
    assert list(raw.values) == expected_old + expected_recent, "one series across the database/node boundary"
    assert list(raw.ts_ms) == sorted(set(raw.ts_ms)), "oldest first, no point twice"
    assert raw.ts_ms[0] == old_t0 and raw.ts_ms[OLD] == recent_t0

    assert hourly.resolution == "1h"
    assert sum(hourly.count) == OLD + RECENT
    assert min(hourly.min) == 0.0 and max(hourly.max) == 500.0 + RECENT - 1
    assert all(ts % 3_600_000 == 0 for ts in hourly.ts_ms), "buckets aligned as the node's tiers are"

    assert auto.resolution != "raw", "120 points do not fit a budget of 50: auto goes to a tier"
    assert len(auto.ts_ms) <= 50 and sum(auto.count) == OLD + RECENT

    assert (auto_raw.resolution, list(auto_raw.values)) == ("raw", expected_old + expected_recent), (
        "120 points fit a budget of 10,000: auto stays raw across the boundary"
    )

    assert list(recent_only.values) == expected_recent, "a range the node holds is not extended"
    assert list(degraded.values) == expected_recent, "with the database down, the node's own points"
