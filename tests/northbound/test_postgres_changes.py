"""Twin changes other than readings in PostgreSQL (drsdtp.northbound.postgres.changes), against a real server:
desired values with a conflict and a clear, metadata, tags, relations, counters, twins created and deleted,
each state stored once through reconnects, a database restart and a node SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from drsdtp._core import Store
from drsdtp.api.feed import ChangeFeed
from drsdtp.client import AsyncClient
from drsdtp.config import PostgresConfig
from drsdtp.northbound.postgres.changes import READING, ChangeSink, field_rows
from drsdtp.wire.v1 import api_pb2
from tests.daemon.model_nodes import NodeProcess, eventually
from tests.northbound.postgres_server import PostgresServer, postgres_server

pytestmark = pytest.mark.integration

# (twin, field, what, state)
Stored = tuple[str, str, str, Any]


async def stored(dsn: str, twins: str = "%") -> list[Stored]:
    """Every row for twins LIKE ``twins`` (none while the database or the table is not there yet)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        rows = await conn.fetch(
            "SELECT twin, field, what, state FROM drsdtp_twin_changes WHERE twin LIKE $1 ORDER BY ts, field",
            twins,
        )
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()
    return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def states(rows: list[Stored], twin: str, field: str) -> list[Any]:
    return [state for t, f, _, state in rows if (t, f) == (twin, field)]


def desired(state: dict[str, Any]) -> list[Any]:
    return [v["value"] for v in state["values"]]


def test_rows_name_every_kind_of_change_and_skip_readings() -> None:
    store = Store(1)
    store.set_many("t", {"_model": "pump", "meta.site": "north", "temp": 21.5, "level": 3, "running": True})
    store.desire("t", "sp.desired", 20.0)
    store.add("t", "tags", "hot")
    store.add("t", "_rel", "feeds:u")
    store.increment("t", "starts", 2)
    known: dict[tuple[str, str], int] = {}
    rows = field_rows("n1", "t", store, known, 1)
    assert rows is not None
    got = {row[2]: (row[3], json.loads(row[6])) for row, _ in rows}
    assert "temp" not in got and "level" not in got  # readings: drsdtp_readings holds them
    assert known[("t", "temp")] == known[("t", "level")] == READING  # not read again at every change
    assert got["_model"] == ("metadata", {"value": "pump", "writer": store.replica_id})
    assert got["meta.site"][0] == "metadata"
    assert got["running"] == ("value", {"value": True, "writer": store.replica_id})
    assert got["sp.desired"][0] == "desired"
    assert desired(got["sp.desired"][1]) == [20.0]
    assert got["tags"] == ("set", {"elements": ["hot"]})
    assert got["_rel"] == ("relations", {"elements": ["feeds:u"]})
    assert got["starts"] == ("counter", {"value": 2})
    known.update({(row[1], row[2]): version for row, version in rows})
    assert field_rows("n1", "t", store, known, 2) == []  # nothing new: nothing offered
    store.set("t", "_deleted", True)
    [(row, _)] = field_rows("n1", "t", store, known, 3) or []
    assert (row[2], row[3]) == ("_deleted", "deleted")


class _WrittenWhileRead:
    """The store, written by "another thread" between reading a twin's versions and its values."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def fields(self, twin: str) -> dict[str, Any]:
        self.store.set(twin, "mode", "manual")
        return self.store.fields(twin)

    def field_versions(self, twin: str) -> list[tuple[str, int]] | None:
        return self.store.field_versions(twin)

    def entry(self, twin: str, field: str) -> tuple[Any, int, int, int] | None:
        return self.store.entry(twin, field)

    def desired(self, twin: str, field: str) -> list[tuple[Any, int, int, int]] | None:
        return self.store.desired(twin, field)


def test_a_twin_written_while_its_rows_are_built_is_left_for_its_next_change() -> None:
    store = Store(1)
    store.set_many("t", {"mode": "auto", "temp": 21.5})
    known: dict[tuple[str, str], int] = {}
    assert field_rows("n1", "t", _WrittenWhileRead(store), known, 1) is None
    assert known == {}  # nothing learnt from a read that may mix two states
    rows = field_rows("n1", "t", store, known, 2)
    assert rows is not None
    assert [(row[2], json.loads(row[6])["value"]) for row, _ in rows] == [("mode", "manual")]


class _WaitsForTheLoop(_WrittenWhileRead):
    """The store, whose first read waits until a coroutine on the event loop has run: rows built on the
    loop would never see it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.building, self.loop_ran = threading.Event(), threading.Event()
        self.saw_loop: bool | None = None

    def fields(self, twin: str) -> dict[str, Any]:
        if not self.building.is_set():
            self.building.set()
            self.saw_loop = self.loop_ran.wait(30)
        return self.store.fields(twin)


async def test_the_event_loop_runs_while_a_large_batch_of_rows_is_built() -> None:
    store, feed = Store(1), ChangeFeed()
    twins = [f"pump-{i}" for i in range(2000)]
    for twin in twins:
        store.set_many(twin, {"_model": "pump", "mode": "auto", "temp": 20.0})
    watched = _WaitsForTheLoop(store)
    with postgres_server() as pg:
        config = PostgresConfig(dsn=pg.dsn, flush_interval_s=0.05, max_backoff_s=0.5)
        async with ChangeSink(config, "n1", watched, feed) as service:
            feed.publish(twins, "local")
            await eventually(lambda: _true(watched.building.is_set()), 30, "rows being built")
            watched.loop_ran.set()  # this coroutine ran while the batch was being built
            await eventually(lambda: _true(service.stats.cursor >= feed.seq), 60, "the batch stored")
        rows = await stored(pg.dsn)
    assert watched.saw_loop is True
    assert service.stats.rows == len(rows) == 2 * len(twins)  # _model and mode; temp is a reading


@contextlib.asynccontextmanager
async def sink(
    pg: PostgresServer, store: Store, feed: ChangeFeed, node: str = "n1"
) -> AsyncIterator[ChangeSink]:
    config = PostgresConfig(dsn=pg.dsn, flush_interval_s=0.05, max_backoff_s=0.5)
    async with ChangeSink(config, node, store, feed) as service:
        yield service


async def test_each_state_is_stored_once_across_reconnects_and_nodes(tmp_path: pathlib.Path) -> None:
    with postgres_server() as pg:
        a, b = Store(1), Store(2)
        feed_a, feed_b = ChangeFeed(), ChangeFeed()

        def on_a(delta: bytes) -> None:
            feed_a.publish(a.merge(delta), "peer")

        async def wait_for(check: Any, what: str) -> list[Stored]:
            return await eventually(lambda: _checked(pg.dsn, check), 30, what)  # type: ignore[no-any-return]

        async with sink(pg, a, feed_a) as first:
            a.set_many("pump", {"_model": "pump", "meta.site": "north"})
            feed_a.publish(["pump"], "local")
            await wait_for(lambda rows: states(rows, "pump", "meta.site"), "the metadata stored")
            a.desire("pump", "sp.desired", 20.0)
            feed_a.publish(["pump"], "local")
            await wait_for(lambda rows: states(rows, "pump", "sp.desired"), "the desired value stored")
            # A concurrent write on another replica: a conflict, both siblings kept.
            on_a(b.desire("pump", "sp.desired", 23.0))
            await wait_for(lambda rows: len(states(rows, "pump", "sp.desired")) == 2, "the conflict stored")
        # A second connection (a reconnect) and a second node sharing the database offer every state again.
        b.merge(a.encode_state(None))
        feed_b.publish(["pump"], "peer")
        async with sink(pg, a, feed_a), sink(pg, b, feed_b, node="n2") as second:
            a.clear_desired("pump", "sp.desired")
            a.add("pump", "tags", "hot")
            feed_a.publish(["pump"], "local")
            await wait_for(lambda rows: len(states(rows, "pump", "sp.desired")) == 3, "the clear stored")
            await wait_for(lambda rows: states(rows, "pump", "tags"), "the tag stored")
            await eventually(
                lambda: _true(second.stats.cursor >= feed_b.seq), 30, "the second node caught up"
            )
        assert first.stats.rows > 0
        rows = await stored(pg.dsn)
    sp = states(rows, "pump", "sp.desired")
    assert [desired(s) for s in sp] == [[20.0], [20.0, 23.0], []]
    assert sp[1]["conflict"] is True
    assert states(rows, "pump", "meta.site") == [{"value": "north", "writer": a.replica_id}]
    assert states(rows, "pump", "tags") == [{"elements": ["hot"]}]
    assert second.stats.duplicates > 0  # the second node offered what the first had stored


async def _checked(dsn: str, check: Any) -> list[Stored] | None:
    rows = await stored(dsn)
    return rows if check(rows) else None


async def _true(value: bool) -> bool:
    return value


def _node_body(pg: PostgresServer) -> str:
    return f"[history]\nenabled = true\n[wal]\nfsync_interval_ms = 5\n{pg.sink_config}"


async def test_api_changes_reach_postgres_once_through_a_database_restart_and_a_node_kill(
    tmp_path: pathlib.Path,
) -> None:
    with postgres_server() as pg:
        node = NodeProcess(tmp_path, "pg-changes", _node_body(pg))
        node.start()
        try:
            address = f"127.0.0.1:{node.api_port}"
            async with AsyncClient(address, timeout=10) as client:
                await eventually(lambda: _up(client), 60, "the node answers")

                async def step(what: str, check: Any) -> None:
                    await eventually(lambda: _checked(pg.dsn, check), 60, what)

                await client.create("room-9", metadata={"site": "north"})
                await step("the created twin's metadata", lambda r: states(r, "room-9", "meta.site"))
                await client.desire("room-9", {"heater": 1.0})
                await step("the desired value", lambda r: states(r, "room-9", "heater.desired"))
                await client.tag("room-9", "tags", add=["north", "east"])
                await step("the tags", lambda r: states(r, "room-9", "tags"))
                edge = api_pb2.RelationEdge(twin_id="room-9", relation="located_in", target="floor-1")
                await client.call("Relate", api_pb2.RelateRequest(add=[edge]))
                await step("the relation", lambda r: states(r, "room-9", "_rel"))
            # The database goes away; what changes meanwhile waits in the node's store and feed ...
            await asyncio.to_thread(pg.kill)
            async with AsyncClient(address, timeout=10) as client:
                await client.desire("room-9", {"heater": 2.0})
                await client.tag("room-9", "tags", remove=["east"])
                await client.create("room-10", metadata={"site": "south"})
                await client.delete("room-10")
            # ... and the node dies before the database is back: the feed's numbers start again.
            node.signal(signal.SIGKILL)
            assert node.proc is not None
            node.proc.wait(10)
            await asyncio.to_thread(pg.start)
            node.start()
            await eventually(
                lambda: _checked(pg.dsn, lambda r: states(r, "room-10", "_deleted")), 60, "the deletion"
            )
            await eventually(
                lambda: _checked(pg.dsn, lambda r: len(states(r, "room-9", "heater.desired")) == 2),
                60,
                "the second desired value",
            )
            await asyncio.sleep(1.0)  # a duplicate would arrive after what was waited for
            rows = await stored(pg.dsn, "room-%")
        finally:
            node.stop()
    assert [desired(s) for s in states(rows, "room-9", "heater.desired")] == [[1.0], [2.0]]
    assert states(rows, "room-9", "tags") == [{"elements": ["east", "north"]}, {"elements": ["north"]}]
    assert states(rows, "room-9", "_rel") == [{"elements": ["located_in:floor-1"]}]
    assert [s["value"] for s in states(rows, "room-9", "meta.site")] == ["north"]
    assert [s["value"] for s in states(rows, "room-10", "meta.site")] == ["south"]
    assert [(w, s["value"]) for t, f, w, s in rows if (t, f) == ("room-10", "_deleted")] == [
        ("deleted", True)
    ]
    repeated = [key for key, n in Counter((t, f, json.dumps(s)) for t, f, _, s in rows).items() if n > 1]
    assert not repeated, f"twin changes stored twice: {repeated}"


async def _up(client: AsyncClient) -> bool:
    try:
        await client.status()
    except Exception:  # not answering yet
        return False
    return True
