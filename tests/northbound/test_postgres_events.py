"""Anomalies, alarm and command transitions in PostgreSQL (drsdtp.northbound.postgres.events), against a
real server: two nodes that hold the same replicated alarm and command store each transition once; each
node's anomalies are stored once across a restart of its sink and an outage of the database; and a real node
with a rule writes its alarm's raise and clear."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import asyncpg
import pytest

from drsdtp.actions.record import CommandRecord, Mark, State
from drsdtp.alarms.record import AlarmRecord, AlarmState, alarm_id, alarm_twin
from drsdtp.alarms.record import Mark as AlarmMark
from drsdtp.api.feed import ChangeFeed
from drsdtp.config import PostgresConfig
from drsdtp.intelligence.anomalies import AnomalyJournal
from drsdtp.intelligence.results import AnomalyEvent, Severity
from drsdtp.northbound.postgres.events import EventSink
from tests.alarms.support import report, rule_config
from tests.api.nodes import ApiNode, eventually
from tests.northbound.postgres_server import PostgresServer, postgres_server

pytestmark = pytest.mark.integration
R = TypeVar("R")


def alarm(state: AlarmState, count: int = 1) -> AlarmRecord:
    now = int(time.time() * 1000)
    acked = AlarmMark(count, now + 1, "op") if state is not AlarmState.ACTIVE else None
    cleared = AlarmMark(count, now + 2, "node-a") if state is AlarmState.CLEARED else None
    return AlarmRecord(
        alarm_id("hot", "tank-1"), "hot", "tank-1", "major", "tank hot", state, count,
        now, now, now, "node-a", acked, cleared,
    )  # fmt: skip


def command(state: State) -> CommandRecord:
    now = int(time.time() * 1000)
    return CommandRecord(
        "cmd-1", "valve-1", "open", "", None, (), "api", "k1", now, now + 60_000, "node-a", "node-a",
        "", "op", "", state, {state: Mark(now, "node-a", "done" if state.terminal else "")},
    )  # fmt: skip


def anomaly(journal: AnomalyJournal, value: float) -> None:
    event = AnomalyEvent("pump-1", "flow", "spike", Severity.HIGH, time.time(), value, "a spike")
    journal.append([event], {"pump-1": "pump"}, {})


async def events(dsn: str) -> list[tuple[str, str, str, str]]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT node, kind, key, version FROM drsdtp_events ORDER BY kind, key, version"
        )
        return [tuple(r) for r in rows]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running(sink: EventSink) -> AsyncIterator[EventSink]:
    async with sink:
        yield sink


async def until(pg: PostgresServer, count: int) -> list[tuple[str, str, str, str]]:
    deadline = time.monotonic() + 30
    got: list[tuple[str, str, str, str]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            got = await events(pg.dsn)
        if len(got) >= count:
            await asyncio.sleep(0.3)  # a duplicate would arrive after the count was reached
            return await events(pg.dsn)
        await asyncio.sleep(0.1)
    return got


class OneRecord(Generic[R]):
    """A replicated book holding one record (the AlarmBook / CommandBook subset the sink reads)."""

    def __init__(self, key: str, record: R) -> None:
        self.key, self.record = key, record

    def ids(self) -> list[str]:
        return [self.key]

    def get(self, key: str, /) -> R | None:
        return self.record if key == self.key else None


async def test_replicated_transitions_once_and_each_nodes_anomalies_once_through_outages() -> None:
    alarms = OneRecord(alarm_id("hot", "tank-1"), alarm(AlarmState.ACTIVE))
    commands = OneRecord("cmd-1", command(State.PENDING))
    logs = {"node-a": AnomalyJournal(None), "node-b": AnomalyJournal(None)}
    feeds = {"node-a": ChangeFeed(), "node-b": ChangeFeed()}

    def replicate(twin: str) -> None:  # a record changed: each node's change feed says so
        for feed in feeds.values():
            feed.publish([twin], "peer")

    with postgres_server() as pg:
        config = PostgresConfig(dsn=pg.dsn, flush_interval_s=0.05, max_backoff_s=0.5)

        def sink(node: str) -> EventSink:
            return EventSink(config, node, logs[node], feeds[node], alarms, commands)

        anomaly(logs["node-a"], 1.0)
        anomaly(logs["node-b"], 2.0)
        async with running(sink("node-a")), running(sink("node-b")):
            first = await until(pg, 4)
            await asyncio.to_thread(pg.kill)  # what happens while the database is down ...
            alarms.record = alarm(AlarmState.ACKNOWLEDGED)
            commands.record = command(State.APPLIED)
            anomaly(logs["node-a"], 3.0)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(pg.start)  # ... is written once it is back
            second = await until(pg, 7)
            # With the database up, a change reaches it through the change feed.
            alarms.record = alarm(AlarmState.CLEARED)
            replicate(alarm_twin(alarms.key))
            live = await until(pg, 8)
        # A restarted sink knows its anomaly position from the database and writes nothing twice.
        anomaly(logs["node-b"], 4.0)
        async with running(sink("node-b")):
            third = await until(pg, 9)

    ids = alarm_id("hot", "tank-1")
    kinds = [(kind, key, version) for _, kind, key, version in third]
    assert len(first) == 4 and {k for _, k, _, _ in first} == {"alarm", "command", "anomaly"}
    assert len(second) == 7
    assert [v for _, k, _, v in live if k == "alarm"] == ["1/acknowledged", "1/active", "1/cleared"]
    assert len(kinds) == len(set(kinds)) == 9, kinds
    assert [v for k, key, v in kinds if k == "alarm"] == ["1/acknowledged", "1/active", "1/cleared"]
    assert [v for k, key, v in kinds if k == "command"] == ["applied", "pending"]
    assert all(key == ids for k, key, _ in kinds if k == "alarm")
    anomalies = sorted(node for node, kind, _, _ in third if kind == "anomaly")
    assert anomalies == ["node-a", "node-a", "node-b", "node-b"], "each node's anomalies, each once"


async def test_a_node_with_a_rule_writes_its_alarm_raise_and_clear(tmp_path: pathlib.Path) -> None:
    with postgres_server() as pg:
        node = ApiNode("a", tmp_path)
        node.configure(
            {},
            rule_config() + pg.sink_config,
        )
        await node.start()
        try:
            await node.call("Write", report("tank-1", create=True, level=90.0))

            async def stored(version: str) -> bool:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    return any(k == "alarm" and v == version for _, k, _, v in await events(pg.dsn))
                return False

            await eventually(lambda: stored("1/active"), 30, "the raise in drsdtp_events")
            await node.call("Write", report("tank-1", level=10.0))
            await eventually(lambda: stored("1/cleared"), 30, "the clear in drsdtp_events")
            conn = await asyncpg.connect(pg.dsn, timeout=5)
            try:
                body = await conn.fetchval(
                    "SELECT body FROM drsdtp_events WHERE kind = 'alarm' AND version = '1/cleared'"
                )
            finally:
                await conn.close()
        finally:
            node.stop()
    assert '"twin": "tank-1"' in body and '"severity": "major"' in body
