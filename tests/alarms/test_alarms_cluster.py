"""Rules and alarms with real node processes: a rule raises its alarm only after `for`, holds it through
the deadband and clears it past; both nodes of a pair evaluate the rule, and the alarm they both raise is
one record with one episode on each."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from drsdtp.alarms.record import AlarmState
from tests.alarms.support import alarm_of, report, rule_config
from tests.api.nodes import ApiNode, Cluster, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, ["a", "b"], rule_config())
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


async def test_raise_after_for_hysteresis_and_one_alarm_across_nodes(pair: Cluster) -> None:
    a, b = pair.nodes["a"], pair.nodes["b"]
    await a.call("Write", report("tank-1", create=True, level=50.0))
    await a.call("Write", report("tank-1", level=90.0))

    async def raised_on(node_name: str) -> bool:
        record = await alarm_of(pair.nodes[node_name], "tank-high", "tank-1")
        return record is not None and record.state is AlarmState.ACTIVE

    await eventually(lambda: raised_on("a"), 30, "a raised the alarm")
    await eventually(lambda: raised_on("b"), 30, "the alarm reached b")
    first = await alarm_of(a, "tank-high", "tank-1")
    assert first is not None
    # Written 1 s (`for`) or more after the reading, never at once.
    reading = await a.get("tank-1")
    assert reading is not None
    stamp_ms = next(f.stamp for f in reading.fields if f.name == "level") >> 16
    assert first.raised_ms - stamp_ms >= 1000
    assert (first.severity, first.message, first.count) == ("major", "tank level high", 1)

    await a.call("Write", report("tank-1", level=78.0))  # under 80, within the 5.0 deadband
    # A barrier: tank-2's alarm, written after, is raised on both nodes only after passes that saw 78.
    await a.call("Write", report("tank-2", create=True, level=95.0))
    for node in (a, b):

        async def barrier(n: ApiNode = node) -> bool:
            record = await alarm_of(n, "tank-high", "tank-2")
            return record is not None and record.active

        await eventually(barrier, 30, "tank-2's alarm raised")
        # Both nodes evaluated the rule on the same twin: still one record with one episode, on each.
        record = await alarm_of(node, "tank-high", "tank-1")
        assert record is not None and record.state is AlarmState.ACTIVE and record.count == 1

    await b.call("Write", report("tank-1", level=70.0))
    for node in (a, b):

        async def cleared(n: ApiNode = node) -> bool:
            record = await alarm_of(n, "tank-high", "tank-1")
            return record is not None and record.state is AlarmState.CLEARED

        await eventually(cleared, 30, "the alarm cleared")
    final = await alarm_of(a, "tank-high", "tank-1")
    assert final is not None and final.count == 1 and final.cleared is not None
