"""Modbus writes against a real pymodbus server: a scaled, word-swapped float32 set-point and a coil are
written over the adapter's own connection, acknowledged, and applied when the polled registers echo them;
an exception response rejects with its code; the encoding is the read codec's inverse."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drsdtp.actions import State
from drsdtp.adapters.modbus import ModbusWriteTarget, encode_write, parse_write_target
from drsdtp.adapters.modbus_codec import decode
from drsdtp.config import parse_config
from drsdtp.errors import ConfigError
from drsdtp.node.node import Node
from tests.ingest.support import free_port

from .writes_support import RecordingModbusServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[RecordingModbusServer]:
    async with RecordingModbusServer({1: [0] * 32}) as server:
        yield server


def config(tmp: pathlib.Path, port: int) -> dict[str, Any]:
    setpoint = {"table": "holding", "address": 10, "data_type": "float32", "order": "CDAB", "scale": 0.1}
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{
            "type": "modbus", "name": "plc", "host": "127.0.0.1", "port": port, "twin": "boiler-1",
            "poll_interval_s": 0.1, "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            "registers": [{**setpoint, "field": "setpoint"},
                          {"table": "coil", "address": 3, "field": "burner"},
                          {"table": "holding", "address": 20, "data_type": "int16", "field": "mode"}],
        }],
        "actuators": [
            {"twin": "boiler-1", "field": "setpoint", "node": "a", "adapter": "plc", "min": 0.0, "max": 90.0,
             "tolerance": 0.05, "write": setpoint},
            {"twin": "boiler-1", "field": "burner", "node": "a", "adapter": "plc", "value": "bool",
             "write": {"table": "coil", "address": 3}},
            {"twin": "boiler-1", "field": "mode", "node": "a", "adapter": "plc", "tolerance": 0.5,
             "write": {"table": "holding", "address": 20, "data_type": "int16"}},
        ],
    }  # fmt: skip


async def test_a_float_set_point_and_a_coil_land_are_acknowledged_and_applied(
    tmp_path: pathlib.Path, server: RecordingModbusServer
) -> None:
    async with Node(parse_config(config(tmp_path, server.port))) as node:
        book = node.commands
        setpoint = await book.issue_command("boiler-1", "setpoint", 55.5, actor="op")
        burner = await book.issue_command("boiler-1", "burner", True, actor="op")
        done = {c: await book.wait(c, 20) for c in (setpoint, burner)}
        for record in done.values():
            assert record is not None and record.state == State.APPLIED, record
            assert {State.SENT, State.ACKNOWLEDGED} <= set(record.marks) and record.attempts == 1
        # Two actuators, two workers: their writes may land in either order.
        (words,) = [w for kind, address, w in server.writes if (kind, address) == ("registers", 10)]
        assert decode(words, "float32", "CDAB") * 0.1 == pytest.approx(55.5, abs=1e-4)
        assert ("coil", 3, [True]) in server.writes and len(server.writes) == 2
        value = node.store.get("boiler-1", "setpoint")
        assert isinstance(value, float) and abs(value - 55.5) < 1e-3


async def test_an_exception_response_rejects_with_its_code(
    tmp_path: pathlib.Path, server: RecordingModbusServer
) -> None:
    server.refuse_writes_at = 20
    async with Node(parse_config(config(tmp_path, server.port))) as node:
        command = await node.commands.issue_command("boiler-1", "mode", 3, actor="op")
        record = await node.commands.wait(command, 20)
        assert record is not None and record.state == State.REJECTED
        assert record.why == "the device refused it: unit 1 holding 20: exception code 3"
        assert record.attempts == 1  # refused: not retried


def test_the_write_encoding_is_the_inverse_of_the_read_codec() -> None:
    for type_, order, value in [("int16", "ABCD", -1234), ("uint32", "DCBA", 2_000_000_000),
                                ("float64", "BADC", -3.25), ("int64", "CDAB", -(1 << 40))]:  # fmt: skip
        target = ModbusWriteTarget(1, "holding", 0, type_, order, 0.5, 10.0)
        words = encode_write(target, value)
        assert isinstance(words, list)
        assert decode(words, type_, order) * 0.5 + 10.0 == pytest.approx(value)
    small = ModbusWriteTarget(1, "holding", 0, "uint16", "ABCD", 1.0, 0.0)
    with pytest.raises(ValueError, match=r"outside uint16 \[0, 65535\]"):
        encode_write(small, 70000)
    with pytest.raises(ValueError, match="a coil takes true/false"):
        encode_write(ModbusWriteTarget(1, "coil", 0, "bool", "ABCD", 1.0, 0.0), 0.5)
    with pytest.raises(ConfigError, match=r"actuators\[0\]\.write\.data_type"):
        parse_write_target({"table": "coil", "address": 1, "data_type": "int16"}, "actuators[0].write")


async def test_a_command_waiting_for_an_unconnected_adapter_neither_spins_nor_starves_the_loop(
    tmp_path: pathlib.Path,
) -> None:
    """With the log off every commit completes at once: a worker woken by its own commits (the attempt it
    takes back when the adapter has no session) re-tried without ever yielding, and the event loop (the
    adapter's reconnects, the API) stood still until the command's deadline."""
    cfg = {**config(tmp_path, free_port()), "wal": {"enabled": False}}  # nothing listens on the port
    async with Node(parse_config(cfg)) as node:
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0.01)
                turns += 1

        tick = asyncio.create_task(ticker())
        command = await node.commands.issue_command("boiler-1", "setpoint", 40.0, deadline_s=1.0, actor="op")
        record = await node.commands.wait(command, 20)
        tick.cancel()
        assert record is not None and record.state == State.TIMED_OUT, record
        assert "waiting for the adapter" in record.why, record.why
        # A retry per POLL_S (0.25 s) at most, not one per step of the loop; and the loop kept turning.
        assert node.actuation.executor.stats.not_connected <= 20, node.actuation.executor.stats
        assert turns >= 3, turns
