"""Auto-correction in a real node against a real pymodbus server, the level register changed behind the
node's back by a second Modbus client (an operator at the panel): a minor divergence is corrected once, by an
audited command of actor ``autocorrect``, and rolled back by an ordinary desired write; a critical one
raises an alarm and writes nothing; a low-quality reported field blocks the correction until it is good.
On the simulated pump, a really stuck flow sensor (found by the twin intelligence) under the actuator's
interlock blocks a minor correction, saying why. ``check-config`` names a bad key of ``[actuators.correct]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.actions import CommandRecord, State
from drsdtp.client import connect
from drsdtp.command_cli import check_config
from drsdtp.config import Address, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2

from .writes_support import RecordingModbusServer

pytestmark = pytest.mark.integration

LEVEL = 20  # the holding register of the level set-point


@pytest.fixture
async def server() -> AsyncIterator[RecordingModbusServer]:
    async with RecordingModbusServer({1: [0] * 20 + [50] + [0] * 11}) as server:
        yield server


def config(tmp: pathlib.Path, port: int, **correct: Any) -> dict[str, Any]:
    register = {"table": "holding", "address": LEVEL, "data_type": "int16"}
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{
            "type": "modbus", "name": "plc", "host": "127.0.0.1", "port": port, "twin": "tank-1",
            "poll_interval_s": 0.1, "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            "registers": [{**register, "field": "level"}],
        }],
        "actuators": [
            {"twin": "tank-1", "field": "level", "node": "a", "adapter": "plc", "min": 0.0, "max": 100.0,
             "tolerance": 0.5, "write": register,
             "correct": {"minor_within": 10.0, "after_s": 0.3, "max_per_hour": 3, **correct}},
        ],
    }  # fmt: skip


async def until(node: Node, check: Callable[[], Any], what: str, limit_s: float = 20.0) -> Any:
    """``check()`` once it is truthy, looked at on every change of the store (and every 0.1 s: a counter
    moves without one)."""
    stream = node.feed.subscribe()
    try:
        async with asyncio.timeout(limit_s):
            while not (found := check()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await stream.next_batch(4096)
    except TimeoutError:
        raise AssertionError(f"not within {limit_s} s: {what}") from None
    return found


async def set_quality(node: Node, quality: float) -> None:
    """The reported field's replicated quality (what a peer modelling the twin writes back)."""
    await node.commit(node.store.set("tank-1", "level.q", quality), ["tank-1"], "local")


async def panel(port: int, value: int) -> None:
    async with AsyncModbusTcpClient("127.0.0.1", port=port) as plc:
        await plc.write_register(LEVEL, value, device_id=1)


def corrections(node: Node) -> list[CommandRecord]:
    return [r for r in node.commands.list("tank-1") if r.origin == "correction"]


def node_writes(server: RecordingModbusServer, value: int) -> int:
    return sum(1 for kind, address, words in server.writes if address == LEVEL and words == [value])


async def test_minor_is_corrected_critical_alarms_low_quality_blocks(
    tmp_path: pathlib.Path, server: RecordingModbusServer
) -> None:
    async with Node(parse_config(config(tmp_path, server.port))) as node:
        stats = node.actuation.corrector.stats
        await until(node, lambda: node.store.get("tank-1", "level") == 50, "the first poll")
        await set_quality(node, 1.0)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:

            async def desire(value: float) -> None:
                op = api_pb2.FieldOp(field="level", desire=api_pb2.FieldValue(f64=value))
                await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="tank-1", ops=[op])],
                                                      actor="op", reason="set level"))  # fmt: skip

            await desire(50.0)
            await until(node, lambda: [r for r in node.commands.list("tank-1") if r.terminal], "desired")
            (first,) = node.commands.list("tank-1")
            assert first.state == State.APPLIED and first.origin == "desired", first

            # Minor: 50 -> 55 at the panel, corrected back to 50 by one audited command.
            await panel(server.port, 55)
            (fix,) = await until(node, lambda: [r for r in corrections(node) if r.terminal], "a correction")
            assert fix.state == State.APPLIED and fix.value == 50.0 and fix.actor == "autocorrect"
            assert "replaces 55" in fix.reason and "(minor)" in fix.reason
            assert node_writes(server, 50) == 1 and node.store.get("tank-1", "level") == 50
            audit, verification = await node.snapshots.read_audit("tank-1", None, None, None)
            events = [r.reason.split(":")[0] for r in audit if r.ref == fix.id and r.actor == "autocorrect"]
            assert events[0] == "issued" and events[-1] == "applied" and verification.ok

            # Rolled back: an ordinary desired write of the value it replaced; nothing corrects that.
            await desire(55.0)
            await until(
                node, lambda: node_writes(server, 55) == 2, "the rollback written (after the panel's)"
            )
            await until(node, lambda: node.store.get("tank-1", "level") == 55, "the rollback applied")
            assert len(corrections(node)) == 1

            # Critical: 55 -> 80 is beyond minor_within 10: an alarm, and the node writes nothing.
            writes = len(server.writes)
            await panel(server.port, 80)
            alarms = node.alerting.alarm_book
            alarm = await until(node, lambda: alarms.find("autocorrect:level", "tank-1"), "the alarm")
            assert alarm.active and alarm.severity == "critical" and "not corrected" in alarm.message
            assert len(server.writes) == writes + 1 and len(corrections(node)) == 1  # the panel's write only
            assert stats.critical == 1

            # A low-quality reported field (a stuck sensor) blocks a minor correction until it is good again.
            await set_quality(node, 0.2)
            await panel(server.port, 52)
            await until(node, lambda: stats.blocked == 1, "the correction blocked")
            assert len(corrections(node)) == 1 and len(server.writes) == writes + 2
            await set_quality(node, 1.0)
            await until(
                node, lambda: len([r for r in corrections(node) if r.terminal]) == 2, "corrected after"
            )
            assert node_writes(server, 55) == 3

            def cleared() -> bool:
                record = alarms.find("autocorrect:level", "tank-1")
                return record is not None and not record.active

            await until(node, cleared, "the alarm cleared (the level back at desired)")


def test_check_config_names_the_bad_key(tmp_path: pathlib.Path) -> None:
    (error,) = check_config(parse_config(config(tmp_path, 1502, tolerance=20.0)))
    assert error.key == "actuators[0].correct.minor_within" and "above tolerance" in error.reason
    (error,) = check_config(parse_config(config(tmp_path, 1502, after_s=-1.0)))
    assert error.key == "actuators[0].correct.after_s"


def stuck_config(tmp: pathlib.Path) -> dict[str, Any]:
    """The simulated pump whose flow sensor sticks about 6 s after start (as in test_interlock_stuck)."""
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "intelligence": {"time_scale": 100.0},
        "models": [{"name": "pump", "version": "1", "extends": "centrifugal_pump"}],
        "twins": [{"match": "pump-1", "model": "pump"}],
        "adapters": [{
            "type": "simulated", "name": "plant", "asset": "pump", "rooms": 1, "speedup": 100.0,
            "faults": [{"kind": "stuck", "twin": "pump-1", "field": "flow", "onset_step": 60}],
        }],
        "actuators": [
            {"twin": "pump-1", "field": "valve", "node": "a", "adapter": "plant", "min": 0.0, "max": 1.0,
             "tolerance": 0.05, "write": {"input": "valve"},
             "interlocks": [{"field": "flow", "min_quality": 0.5, "policy": "refuse"}],
             "correct": {"minor_within": 0.3, "after_s": 0.2, "min_quality": 0.0}},
        ],
    }  # fmt: skip


async def test_a_stuck_precondition_sensor_blocks_a_minor_correction(tmp_path: pathlib.Path) -> None:
    async with Node(parse_config(stuck_config(tmp_path))) as node:
        health, corrector = node.actuation.health, node.actuation.corrector

        def flow_good() -> bool:  # the model has learnt the flow's noise: the interlock lets a command by
            q = health.field_quality("pump-1", "flow")
            return q is not None and q.quality >= 0.5

        await until(node, flow_good, "the flow's quality known and good", 60)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            op = api_pb2.FieldOp(field="valve", desire=api_pb2.FieldValue(f64=0.5))
            await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="pump-1", ops=[op])]))
        (desired,) = await until(node, lambda: node.commands.list("pump-1"), "the desired command")
        done = await node.commands.wait(desired.id, 30)
        assert done is not None and done.state == State.APPLIED, done

        def flow_stuck() -> bool:
            q = health.field_quality("pump-1", "flow")
            return q is not None and "STUCK" in q.reasons

        await until(node, flow_stuck, "the flow sensor found stuck", 60)
        plant = node.intake.service.runners["plant"].adapter.plant  # type: ignore[attr-defined]
        plant.set_input("pump-1", "valve", 0.6)  # moved by hand: a minor divergence (0.1 <= 0.3)
        status = await until(node, lambda: corrector.status("pump-1", "valve"), "the divergence seen")
        assert re.match(r"blocked: .*interlock pump-1/flow: quality 0\.\d\d < 0\.5 \(.*STUCK.*\)", status)
        assert "diverged from desired 0.5" in status
        assert [r for r in node.commands.list("pump-1") if r.origin == "correction"] == []


async def test_a_rule_verdict_corrects_and_the_hourly_count_survives_a_restart(
    tmp_path: pathlib.Path, server: RecordingModbusServer
) -> None:
    """``auto = false``: only the rule's ``correct`` action (its alarm) starts a correction; after a
    restart, ``max_per_hour`` (1) still counts it, from the durable command record."""
    cfg = config(tmp_path, server.port, auto=False, max_per_hour=1)
    cfg["alerting"] = {"period_s": 0.05}
    cfg["rules"] = [{"name": "level-high", "twins": "tank-*", "when": "level > 52",
                     "actions": [{"type": "correct", "action": "level"}]}]  # fmt: skip
    async with Node(parse_config(cfg)) as node:
        await until(node, lambda: node.store.get("tank-1", "level") == 50, "the first poll")
        await set_quality(node, 1.0)
        await node.commit(node.store.desire("tank-1", "level.desired", 50.0), ["tank-1"], "local")
        await until(node, lambda: [r for r in node.commands.list("tank-1") if r.terminal], "desired")
        await panel(server.port, 55)
        (fix,) = await until(node, lambda: [r for r in corrections(node) if r.terminal], "a correction")
        assert fix.state == State.APPLIED and fix.value == 50.0 and "rule level-high fired" in fix.reason
        assert node.actuation.corrector.stats.verdicts == 1
    async with Node(parse_config(cfg)) as node:
        stats = node.actuation.corrector.stats
        await until(node, lambda: node.store.get("tank-1", "level") == 50, "the first poll")
        await set_quality(node, 1.0)
        await panel(server.port, 56)  # the rule fires again (a new episode): one correction an hour
        await until(node, lambda: stats.over_rate == 1, "max_per_hour reached, from before the restart")
        assert stats.corrections == 0 and len(corrections(node)) == 1
