"""A real node streaming to a real PostgreSQL: with the database killed and restarted mid-stream and the
node SIGKILLed mid-stream, every reading the broker had published (so the node eventually acknowledged it)
is in the database exactly once."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import time
from collections import Counter

import asyncpg
import pytest

from tests.daemon.test_history_durability import publish, received, wait_subscribed
from tests.daemon.test_mqtt_durability import node_toml, start_node
from tests.ingest.support import Mosquitto, free_port, running
from tests.northbound.postgres_server import postgres_server

N = 3000
SERIES = 5


async def database_values(dsn: str) -> list[float]:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        return [r[0] for r in await conn.fetch("SELECT value FROM drsdtp_readings WHERE twin LIKE 'p%'")]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


@pytest.mark.integration
async def test_every_acknowledged_reading_is_in_postgres_once_through_kills(tmp_path: pathlib.Path) -> None:
    broker = Mosquitto(tmp_path)
    t0_ms = int(time.time() * 1000) - N
    messages = [(f"site/p{i % SERIES}/v", json.dumps({"value": float(i), "ts": t0_ms + i})) for i in range(N)]
    with running(broker), postgres_server() as pg:
        cfg = tmp_path / "node.toml"
        api_port = free_port()
        toml = node_toml(tmp_path / "data", broker, api_port, history=True, payload="json")
        cfg.write_text(f"{toml}\n{pg.sink_config}")
        node = start_node(cfg)
        try:
            await wait_subscribed(broker, api_port, json.dumps({"value": -1.0, "ts": t0_ms}))
            publisher = asyncio.create_task(asyncio.to_thread(publish, broker, messages, "pub-pg"))
            while await received(api_port) < N // 4:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await asyncio.to_thread(pg.kill)  # the database goes away mid-stream ...
            while await received(api_port) < N // 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            node.send_signal(signal.SIGKILL)  # ... and the node dies while it is still down
            node.wait(10)
            await asyncio.to_thread(pg.start)
            await publisher
            node = start_node(cfg)
            deadline = time.monotonic() + 90
            got: list[float] = []
            while time.monotonic() < deadline:
                got = await database_values(pg.dsn)
                if len(got) >= N:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # a duplicate would arrive after the count was reached
            got = await database_values(pg.dsn)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
    counts = Counter(got)
    missing = [i for i in range(N) if counts[float(i)] == 0]
    repeated = [v for v, n in counts.items() if n > 1]
    assert not missing, f"{len(missing)} acknowledged readings missing from PostgreSQL, e.g. {missing[:5]}"
    assert not repeated, f"{len(repeated)} readings in PostgreSQL twice, e.g. {repeated[:5]}"
