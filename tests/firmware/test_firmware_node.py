"""The real firmware (.elf in simavr, paced to the wall clock) on a pty, read by a real ``drsdtp run`` node:
readings reach the twin with the right values and sequence accounting, a corrupted line is counted and
dropped, a board reset is a restart and not loss, and desired values on the board's actuated fields
(the output, the sample period) become commands the board acknowledges and echoes: applied."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.daemon.floods import ROOT, Daemon

from .sim import SimBoard

pytestmark = pytest.mark.integration

SCENARIO = "0 adc 0 2500\n0 adc 1 1200\n0 din 1\n"
TWIN = "board-1"
STEP_MV = 2 * 5000 / 1024  # within two ADC steps


def body(port: Path) -> str:
    actuator = (
        '[[actuators]]\ntwin = "board-1"\nfield = "{field}"\nnode = "fw-1"\nadapter = "board"\n'
        'deadline_s = 60.0\n{extra}[actuators.write]\nop = "{op}"\n'
    )
    return (
        "[wal]\nfsync_interval_ms = 2\n"
        f'[[adapters]]\ntype = "serial"\nname = "board"\nport = "{port}"\nchecksum = "required"\n'
        'devices = { "avr-1" = "board-1" }\n'
        + actuator.format(field="out", op="out", extra='value = "bool"\n')
        + actuator.format(field="period_ms", op="period", extra="min = 5.0\nmax = 60000.0\n")
        + '[[actuators]]\ntwin = "board-1"\naction = "identify"\nnode = "fw-1"\nadapter = "board"\n'
        '[actuators.write]\nop = "identify"\n'
    )


class Node:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def fields(self, twin: str = TWIN) -> dict[str, object]:
        channel, stub = connect(Address("127.0.0.1", self.daemon.api_port))
        async with channel:
            try:
                got = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=twin), timeout=10)
            except Exception:  # not there yet
                return {}
        return {f.name: getattr(f, f.WhichOneof("value") or "name") for f in got.fields}

    async def twins(self, prefix: str = "") -> list[str]:
        channel, stub = connect(Address("127.0.0.1", self.daemon.api_port))
        async with channel:
            got = await stub.ListTwins(api_pb2.ListTwinsRequest(prefix=prefix), timeout=10)
        return [t.twin_id for t in got.twins]

    async def desire(self, field: str, value: api_pb2.FieldValue) -> None:
        channel, stub = connect(Address("127.0.0.1", self.daemon.api_port))
        async with channel:
            op = api_pb2.FieldOp(field=field, desire=value)
            await stub.Write(
                api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=TWIN, ops=[op])], actor="operator-1"),
                timeout=10,
            )

    def metrics(self) -> dict[tuple[str, str], float]:
        """drsdtp_adapter_events_total and drsdtp_ingest_rejected_total of the serial adapter."""
        url = f"http://127.0.0.1:{self.daemon.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        out: dict[tuple[str, str], float] = {}
        for m in re.finditer(r"^drsdtp_(adapter_events|ingest_rejected)_total\{([^}]*)\} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m[2]))
            if labels.get("source") == "board":
                out[(m[1], labels.get("event") or labels.get("reason", ""))] = float(m[3])
        return out

    def event(self, name: str) -> float:
        return self.metrics().get(("adapter_events", name), 0.0)


async def until(check: Callable[[], object], what: str, limit_s: float = 60) -> None:
    """Polls ``check`` (sync or async) until it is truthy; a liveness cap, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[SimBoard, Node]]:
    board = SimBoard(tmp_path, speed=1.0, scenario=SCENARIO, trace=True)
    daemon = Daemon(tmp_path, body(board.link), node_id="fw-1")
    try:
        await daemon.start()
        yield board, Node(daemon)
    finally:
        daemon.stop()
        board.close()


async def close_to(node: Node, field: str, mv: float) -> bool:
    got = (await node.fields()).get(field)
    return isinstance(got, float) and abs(got - mv) <= STEP_MV


async def test_readings_corruption_and_a_reset_through_a_real_node(rig: tuple[SimBoard, Node]) -> None:
    board, node = rig
    await until(lambda: close_to(node, "a0", 2500), "a0 near 2500 mV in the twin")
    fields = await node.fields()
    assert abs(float(fields["a1"]) - 1200) <= STEP_MV  # type: ignore[arg-type]
    assert fields["d2"] == 1.0 and fields["out"] == 0.0
    # The node may have opened the port in the middle of a line (it flushes what came before): that
    # fragment counts as corrupt, so what follows is counted from here.
    base = node.metrics()

    def grew(key: str, kind: str = "adapter_events") -> float:
        return node.metrics().get((kind, key), 0.0) - base.get((kind, key), 0.0)

    board.send("adc 0 1000")
    await until(lambda: close_to(node, "a0", 1000), "a0 follows the ADC input")
    assert grew("lost") == 0 and grew("corrupt") == 0

    board.send("corrupt")  # line noise flips a bit of the next line (inside its device id)
    await until(lambda: grew("corrupt") == 1, "the corrupt line counted")
    await until(lambda: grew("lost") == 1, "its seq missing from the next good line")
    assert grew("bad checksum", "ingest_rejected") == 1
    assert await node.twins("avr-") == []  # the flipped device id never became a twin

    board.send("reset")  # (a line it cuts short is corrupt, and never a loss)
    await until(lambda: grew("restarts") == 1, "the board's reset seen as a restart")
    assert grew("boots") == 1
    messages = grew("messages")
    await until(lambda: grew("messages") >= messages + 2, "readings after the reset")
    assert grew("lost") == 1  # seq started again at 0: no loss counted for the reset


async def command_states(node: Node) -> dict[str, set[str]]:
    """Each command on the board's twin (found in its audit trail): its field -> the states it reached
    (the ``s.<state>`` fields of its record, the twin ``_cmd/<id>``)."""
    channel, stub = connect(Address("127.0.0.1", node.daemon.api_port))
    async with channel:
        audit = await stub.ReadAudit(api_pb2.AuditRequest(twin_id=TWIN), timeout=10)
    out: dict[str, set[str]] = {}
    for command in {r.ref for r in audit.records if r.action == "command" and r.ref}:
        fields = await node.fields(f"_cmd/{command}")
        out[str(fields.get("field"))] = {k[2:] for k in fields if k.startswith("s.")}
    return out


async def test_desired_output_and_period_are_acknowledged_and_applied(rig: tuple[SimBoard, Node]) -> None:
    board, node = rig
    await until(lambda: close_to(node, "a0", 2500), "the board's readings in the twin")
    mark = len(board.events)
    await node.desire("out", api_pb2.FieldValue(flag=True))
    await asyncio.to_thread(board.wait_event, "pin B0 1", 60, mark)  # the relay pin on the simulated board
    await until(lambda: _applied(node, "out"), "the output command applied")
    assert (await node.fields())["out"] == 1.0

    await node.desire("period_ms", api_pb2.FieldValue(f64=200.0))
    await until(lambda: _applied(node, "period_ms"), "the period command applied")
    assert (await node.fields())["period_ms"] == 200.0
    await asyncio.to_thread(board.sync)  # fwsim's events arrive on their own pipe: catch up first
    start = len(board.times("adc"))
    await until(lambda: len(board.times("adc")) >= start + 6, "samples at the new period")
    adc = board.times("adc")[start + 1 :]
    periods = [b - a for a, b in itertools.pairwise(adc)]
    assert all(abs(p - 200_000) <= 2_000 for p in periods), periods  # simulated time: exact
    states = await command_states(node)
    assert {"sent", "acknowledged", "applied"} <= states["out"]
    assert node.event("acks") == 2 and node.event("device_errors") == 0


async def _applied(node: Node, field: str) -> bool:
    return "applied" in (await command_states(node)).get(field, set())


def drsdtp_command(node: Node, *args: str) -> tuple[int, dict[str, Any]]:
    """``drsdtp command ... --wait --json`` against the node: (exit code, the command as JSON)."""
    config = str(node.daemon.config_path)
    done = subprocess.run(
        [sys.executable, "-m", "drsdtp", "command", *args, "--wait", "--json", "-c", config],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "{" in done.stdout, f"no JSON from drsdtp command: {done.stdout}\n{done.stderr}"
    doc, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
    return done.returncode, doc


async def test_drsdtp_command_on_the_board(rig: tuple[SimBoard, Node]) -> None:
    board, node = rig
    await until(lambda: close_to(node, "a0", 2500), "the board's readings in the twin")
    mark = len(board.events)
    code, command = await asyncio.to_thread(drsdtp_command, node, TWIN, "out", "true", "-m", "pump on")
    assert (code, command["state"]) == (0, "applied"), command
    assert {m["state"] for m in command["marks"]} >= {"sent", "acknowledged", "applied"}
    await asyncio.to_thread(board.wait_event, "pin B0 1", 60, mark)

    code, command = await asyncio.to_thread(drsdtp_command, node, TWIN, "identify")
    assert (code, command["state"]) == (0, "applied"), command  # an action: applied once the board acked
    await asyncio.to_thread(board.wait_event, "led 1", 60, mark)

    code, command = await asyncio.to_thread(drsdtp_command, node, TWIN, "period_ms", "100.5")
    assert (code, command["state"]) == (1, "rejected"), command  # never sent: the board takes whole ms
    assert "whole milliseconds" in str(command["why"])
    assert (await node.fields())["period_ms"] == 1000.0
