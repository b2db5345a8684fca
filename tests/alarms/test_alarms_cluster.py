"""Rules and alarms with real node processes: a rule raises its alarm only after `for`, holds it through
the deadband and clears it past; both nodes of a pair evaluate the rule, and the alarm they both raise is
one record with one episode on each; an acknowledgement over the CLI replicates, is streamed and is in the
audit trail."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest

from drsdtp.alarms.record import AlarmState, alarm_id, alarm_twin
from drsdtp.wire.v1 import api_pb2
from tests.alarms.support import alarm_of, report, rule_config, run_cli
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


async def test_ack_over_the_cli_replicates_and_the_watch_sees_it(pair: Cluster) -> None:
    a, b = pair.nodes["a"], pair.nodes["b"]
    async with b.stub() as stub:
        watch = stub.WatchAlarms(api_pb2.WatchAlarmsRequest(twin_id="tank-9"))
        await a.call("Write", report("tank-9", create=True, level=99.0))

        async def listed() -> bool:
            reply = await b.call("ListAlarms", api_pb2.ListAlarmsRequest(active=True, twin_id="tank-9"))
            return len(reply.alarms) == 1

        await eventually(listed, 30, "b lists the alarm")
        alarm = alarm_id("tank-high", "tank-9")
        cli = ["ack", alarm, "--api", f"127.0.0.1:{a.api_port}"]
        code, out, err = await run_cli(*cli, "-m", "on it", "--actor", "ops-anna")
        assert code == 0, err
        assert "acknowledged by ops-anna" in out
        code, out, err = await run_cli(*cli, "-m", "twice")
        assert code != 0 and "already acknowledged by ops-anna" in err

        states = []
        async for change in watch:
            assert change.id == alarm
            states.append(change.state)
            if change.state == "acknowledged":
                assert (change.acked_by, change.ack_reason) == ("ops-anna", "on it")
                break
        assert states[0] == "active"
        watch.cancel()

    code, out, err = await run_cli("alarms", "--json", "--api", f"127.0.0.1:{b.api_port}")
    assert code == 0, err
    (doc,) = [d for d in json.loads(out) if d["twin"] == "tank-9"]
    assert (doc["state"], doc["acked_by"], doc["count"]) == ("acknowledged", "ops-anna", 1)
    audit = await a.call("ReadAudit", api_pb2.AuditRequest(twin_id=alarm_twin(alarm)))
    (entry,) = audit.records
    assert (entry.actor, entry.reason, entry.action) == ("ops-anna", "on it", "write") and audit.chain_ok
    unknown = await _code(b.call("AcknowledgeAlarm", api_pb2.AcknowledgeAlarmRequest(alarm_id="nope")))
    assert unknown == grpc.StatusCode.NOT_FOUND


async def _code(call: Awaitable[object]) -> grpc.StatusCode | None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return None
