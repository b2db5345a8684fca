"""The executor in a real node (in process) over the simulated plant's write half: a command is written,
acknowledged and applied when the reported value converges; retries, deadlines, interlocks, cancel,
supersede, and a desired value whose echo never starts a second write."""

from __future__ import annotations

import asyncio
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import pytest

from drsdtp.actions import CommandRecord, State
from drsdtp.actions.book import CommandRequest
from drsdtp.actions.record import command_id
from drsdtp.adapters.simulated import SimulatedAdapter
from drsdtp.client import connect
from drsdtp.config import Address, parse_config
from drsdtp.errors import LimitError
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2

from .support import actuator

pytestmark = pytest.mark.integration

SPEED = 20.0  # plant seconds per wall second: a pump reading every 0.5 s


def config(tmp: pathlib.Path, *actuators: dict[str, Any], **extra: object) -> dict[str, object]:
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{"type": "simulated", "name": "plant", "asset": "pump", "rooms": 1, "speedup": SPEED}],
        "actuators": list(actuators) or [actuator(tolerance=0.05)],
        **extra,
    }


def plant(node: Node) -> SimulatedAdapter:
    adapter = node.intake.service.runners["plant"].adapter
    assert isinstance(adapter, SimulatedAdapter)
    return adapter


async def outcome(node: Node, command: str, timeout_s: float = 20) -> CommandRecord:
    record = await node.commands.wait(command, timeout_s)
    assert record is not None and record.terminal, record
    return record


async def test_a_command_is_written_acknowledged_and_applied_when_the_pump_reports_it(
    tmp_path: pathlib.Path,
) -> None:
    async with Node(parse_config(config(tmp_path))) as node:
        command = await node.commands.issue_command("pump-1", "valve", 0.35, actor="op-1", reason="trim")
        record = await outcome(node, command)
        assert record.state == State.APPLIED, record.why
        assert {State.SENT, State.ACKNOWLEDGED, State.APPLIED} <= set(record.marks)
        assert record.why.startswith("reported valve = ") and record.attempts == 1
        reported = node.store.get("pump-1", "valve")
        assert isinstance(reported, float) and abs(reported - 0.35) <= 0.05
        assert plant(node).writes == 1
        audit, _ = await node.snapshots.read_audit("pump-1", None, None, None)
        records = [r for r in audit if r.action == "command"]
        # One record per commit: the write's marks are in the outcome's when its echo was quick (within
        # ECHO_GRACE_S), else in their own; each state is said once.
        assert {r.actor for r in records} == {"op-1"}
        events = [r.reason.split(":")[0] for r in records]
        assert events in (["issued", "applied"], ["issued", "acknowledged", "applied"])
        said = " ".join(r.reason for r in records)
        assert said.count("sent: written to ") == 1 and said.count("acknowledged") == 1


async def test_a_record_made_with_its_first_attempt_gives_the_attempt_back_when_not_written(
    tmp_path: pathlib.Path,
) -> None:
    """The executor's node creates a command's record with its first attempt when it writes at once (one
    durable append, not two); a command cancelled before its write gives that attempt back."""
    async with Node(parse_config(config(tmp_path))) as node:
        first_seen: dict[str, object] = {}  # record twin -> its attempts as its first append left them

        def seen(twins: Sequence[str]) -> None:
            for twin in twins:
                if twin.startswith("_cmd/") and twin not in first_seen:
                    created = node.commands.get(twin.removeprefix("_cmd/"))
                    first_seen[twin] = None if created is None else created.attempts

        node.appended_hooks.append(seen)
        book = node.commands
        command = await book.issue_command("pump-1", "valve", 0.3, actor="op")
        record = await outcome(node, command)
        assert (record.state, record.attempts, first_seen[f"_cmd/{command}"]) == (State.APPLIED, 1, 1)
        # Cancelled in the same step of the loop as it is issued: claimed, then never written.
        cancelled = command_id("pump-1", "cancel-me")
        await asyncio.gather(
            book.issue_command("pump-1", "valve", 0.5, key="cancel-me", actor="op"),
            book.cancel(cancelled, "op-2", "changed my mind"),
        )
        record = await outcome(node, cancelled)
        assert (record.state, record.attempts) == (State.CANCELLED, 0), record
        assert first_seen[f"_cmd/{cancelled}"] == 1 and plant(node).writes == 1


async def test_a_command_whose_record_cannot_be_made_leaves_no_claim_behind(tmp_path: pathlib.Path) -> None:
    """The executor claims a command before the book makes its record (one set of fields with the first
    attempt); when the store refuses that record (here a reason over its 1 MiB value limit), the claim is
    forgotten: the same idempotency key then makes a command written once, with one attempt."""
    async with Node(parse_config(config(tmp_path))) as node:
        book = node.commands
        with pytest.raises(LimitError, match="string value of"):
            await book.issue_command("pump-1", "valve", 0.3, key="k", actor="op", reason="r" * (2 << 20))
        command = await book.issue_command("pump-1", "valve", 0.3, key="k", actor="op", reason="ok")
        record = await outcome(node, command)
        assert (record.state, record.attempts, plant(node).writes) == (State.APPLIED, 1, 1)


async def test_a_write_that_does_not_reach_the_device_is_retried_then_fails_with_the_reason(
    tmp_path: pathlib.Path,
) -> None:
    table = actuator(tolerance=0.05, retries=2, retry_backoff_s=0.05)
    async with Node(parse_config(config(tmp_path, table))) as node:
        plant(node).fail_writes = 1
        first = await node.commands.issue_command("pump-1", "valve", 0.3, actor="op")
        record = await outcome(node, first)
        assert (record.state, record.attempts) == (State.APPLIED, 2)
        plant(node).fail_writes = 10
        second = await node.commands.issue_command("pump-1", "valve", 0.4, actor="op")
        record = await outcome(node, second)
        assert record.state == State.FAILED and record.attempts == 3
        assert "in 3 attempts" in record.why and "unreachable" in record.why
        text = node.metrics.render()[0].decode()
        assert 'drsdtp_commands_outcomes_total{state="failed"} 1.0' in text
        assert 'drsdtp_commands_outcomes_total{state="applied"} 1.0' in text
        assert "drsdtp_command_write_errors_total 4.0" in text and "drsdtp_command_writes_total 5.0" in text
        assert "drsdtp_commands_resumed_total 0.0" in text


async def test_an_interlock_without_known_health_holds_until_the_deadline_then_times_out(
    tmp_path: pathlib.Path,
) -> None:
    lock = {"field": "flow", "min_quality": 0.5, "policy": "hold"}
    table = actuator(tolerance=0.05, interlocks=[lock])
    async with Node(parse_config(config(tmp_path, table))) as node:
        command = await node.commands.issue_command("pump-1", "valve", 0.3, actor="op", deadline_s=1.0)
        held = await node.commands.wait(command, 10, until=lambda r: bool(r.held) or r.terminal)
        assert held is not None and "interlock pump-1/flow: no health known" in held.held
        record = await outcome(node, command)
        assert record.state == State.TIMED_OUT
        assert record.why.startswith("deadline passed while held: interlock pump-1/flow")
        assert record.attempts == 0 and plant(node).writes == 0 and record.held == ""


async def test_a_refusing_interlock_rejects_and_a_held_command_can_be_cancelled_or_superseded(
    tmp_path: pathlib.Path,
) -> None:
    refuse = actuator(action="speed", field="speed", min=0.0, max=3000.0, write={"input": "speed"},
                      interlocks=[{"field": "flow", "policy": "refuse"}])  # fmt: skip
    hold = actuator(tolerance=0.05, interlocks=[{"field": "flow", "policy": "hold"}])
    async with Node(parse_config(config(tmp_path, hold, refuse))) as node:
        book = node.commands
        refused = await outcome(node, await book.issue_command("pump-1", "speed", 1450, actor="op"))
        assert refused.state == State.REJECTED and "interlock pump-1/flow" in refused.why
        older = await book.issue_command("pump-1", "valve", 0.3, actor="op")
        await book.wait(older, 10, until=lambda r: bool(r.held))
        newer = await book.issue_command("pump-1", "valve", 0.4, actor="op")
        record = await outcome(node, older)
        assert record.state == State.SUPERSEDED and newer in record.why
        await book.wait(newer, 10, until=lambda r: bool(r.held))
        await book.cancel(newer, "op-2", "not today")
        record = await outcome(node, newer)
        assert (record.state, record.why) == (State.CANCELLED, "cancelled by op-2: not today")
        assert plant(node).writes == 0


async def test_a_desired_value_is_actuated_once_and_its_echo_starts_nothing(tmp_path: pathlib.Path) -> None:
    async with Node(parse_config(config(tmp_path))) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            op = api_pb2.FieldOp(field="valve", desire=api_pb2.FieldValue(f64=0.45))
            await stub.Write(
                api_pb2.WriteRequest(
                    twins=[api_pb2.TwinWrite(twin_id="pump-1", ops=[op], create=api_pb2.CreateTwin())],
                    actor="operator-7",
                )
            )
        (record,) = node.commands.list("pump-1")
        record = await outcome(node, record.id)
        assert record.state == State.APPLIED and record.actor == "operator-7"
        # The echo keeps arriving (a reading every 0.5 s): it never becomes a command or a write.
        await plant_steps(node, 6)
        assert len(node.commands.list("pump-1")) == 1 and plant(node).writes == 1
        assert node.actuation.executor.stats.writes == 1


async def plant_steps(node: Node, steps: int) -> None:
    """Returns after ``steps`` more changes of pump-1 (the plant's readings) reached the store."""
    stream = node.feed.subscribe()
    seen = 0
    async with asyncio.timeout(30):
        while seen < steps:
            seen += sum(c.twin == "pump-1" for c in await stream.next_batch(4096))


async def test_an_action_interrupted_by_a_restart_is_not_repeated(tmp_path: pathlib.Path) -> None:
    pulse = actuator(action="pulse", field="", value="number", desired=False, retries=50, retry_backoff_s=0.2)
    cfg = parse_config(config(tmp_path, pulse))
    async with Node(cfg) as node:
        plant(node).fail_writes = 1000  # every attempt fails: the command is mid-flight when the node stops
        command = await node.commands.issue_command("pump-1", "pulse", 0.2, actor="op")
        record = await node.commands.wait(command, 20, until=lambda r: r.attempts >= 1)
        assert record is not None and not record.terminal
    async with Node(cfg) as node:
        record = await outcome(node, command)
        assert record.state == State.FAILED and plant(node).writes == 0
        assert re.match(
            r"interrupted by a restart after [1-9]\d* attempt\(s\) that may have reached", record.why
        )


async def test_commands_reaching_their_outcomes_together_share_one_append(tmp_path: pathlib.Path) -> None:
    """The executor's record writes of one loop step (here four pumps' outcomes, their echoes in one plant
    reading) go in one delta and one append to the log, not one each: fewer appends than writes, every
    command still applied with its marks, durable (a restart shows them)."""
    pumps = [f"pump-{i}" for i in range(1, 5)]
    tables = [actuator(twin=p, tolerance=0.05) for p in pumps]
    cfg = config(tmp_path, *tables)
    cfg["adapters"] = [{**cfg["adapters"][0], "rooms": len(pumps)}]  # type: ignore[index]
    async with Node(parse_config(cfg)) as node:
        book = node.commands
        issued = await book.issue_many([CommandRequest(p, "valve", 0.4, actor="op") for p in pumps])
        ids = [got[0] for got in issued if isinstance(got, tuple)]
        assert len(ids) == len(pumps), issued
        records = await book.wait_many(ids, 20)
        assert [r.state if r else None for r in records] == [State.APPLIED] * len(pumps), records
        stats = node.actuation.executor.stats
        assert stats.record_writes >= len(pumps)  # each outcome (with its marks) is one write
        assert stats.record_appends < stats.record_writes, stats
    async with Node(parse_config(cfg)) as node:  # what the replies showed was durable
        for command in ids:
            record = node.commands.get(command)
            assert record is not None and record.state == State.APPLIED and State.SENT in record.marks
