"""Modbus TCP adapter against a real pymodbus server."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import Quality
from drsdtp.adapters.modbus import ModbusAdapter
from drsdtp.adapters.modbus_codec import encode
from drsdtp.ingest.runner import AdapterRunner

from .modbus_server import ModbusServer
from .support import FAST, DictInterner, RecordingSink, serving, wait_until

pytestmark = pytest.mark.integration

# Holding registers of unit 1: one value of each type at known addresses.
LAYOUT: list[tuple[str, int, str, str, float]] = [  # field, address, type, order, value
    ("i16", 0, "int16", "ABCD", -1234),
    ("u16", 1, "uint16", "BADC", 54321),
    ("i32", 2, "int32", "CDAB", -100_000),
    ("u32", 4, "uint32", "DCBA", 3_000_000_000),
    ("f32", 6, "float32", "ABCD", 21.5),
    ("f32b", 8, "float32", "BADC", -0.25),
    ("i64", 10, "int64", "ABCD", -(2**40)),
    ("u64", 14, "uint64", "CDAB", 2**63 + 5),
    ("f64", 18, "float64", "DCBA", 1e-3),
    ("raw", 22, "uint16", "ABCD", 1000),  # scaled below
    ("near", 23, "uint16", "ABCD", 7),
]


def holding_words() -> list[int]:
    words = [0] * 32
    for _, addr, type_, order, value in LAYOUT:
        enc = encode(value, type_, order)
        words[addr : addr + len(enc)] = enc
    return words


@pytest.fixture
async def device() -> AsyncIterator[ModbusServer]:
    srv = ModbusServer(
        {1: holding_words(), 2: [11, 12, 13, 14]},
        coils=[True, False, True] + [False] * 13,
        discrete=[False, True] + [False] * 14,
        inputs=[500, 600] + [0] * 14,
    )
    async with srv:
        yield srv


def modbus_config(srv: ModbusServer, **extra: Any) -> dict[str, Any]:
    registers: list[dict[str, Any]] = [
        {"field": f, "address": a, "data_type": t, "order": o} for f, a, t, o, _ in LAYOUT if f != "raw"
    ]
    registers += [
        {"field": "raw", "address": 22, "data_type": "uint16", "scale": 0.1, "offset": -50.0},
        {"field": "pump_on", "table": "coil", "address": 2},
        {"field": "alarm", "table": "discrete", "address": 1},
        {"field": "flow", "table": "input", "address": 1},
        {"twin": "meter-2", "unit": 2, "field": "a", "address": 0},
        {"twin": "meter-2", "unit": 2, "field": "d", "address": 3},
    ]
    cfg: dict[str, Any] = {
        "type": "modbus",
        "name": "meters",
        "host": "127.0.0.1",
        "port": srv.port,
        "twin": "meter-1",
        "poll_interval_s": 0.05,
        "timeout_s": 0.3,
        "registers": registers,
    }
    cfg.update(extra)
    return cfg


async def test_register_map_decodes_every_type_and_order(
    device: ModbusServer, sink: RecordingSink, interner: DictInterner
) -> None:
    adapter = build_adapter(modbus_config(device), "adapters[2]")
    assert isinstance(adapter, ModbusAdapter)
    # Unit 1 holding registers merge into one read; unit 2 into another; coil, discrete, input one each.
    assert len(adapter.blocks()) == 5
    runner = AdapterRunner(adapter, sink, interner, FAST)
    async with serving(runner):
        await wait_until(lambda: len(sink.seen()) == 16, 10, "every register read")
    for field, _, type_, _, value in LAYOUT:
        got = sink.values("meter-1", field)[0]
        if field == "raw":
            assert got == pytest.approx(1000 * 0.1 - 50.0)
        elif type_.startswith("float"):
            assert got == pytest.approx(value, rel=1e-6)
        else:
            assert got == float(value), field
    assert sink.values("meter-1", "pump_on")[0] == 1.0
    assert sink.values("meter-1", "alarm")[0] == 1.0
    assert sink.values("meter-1", "flow")[0] == 600.0
    assert sink.values("meter-2", "a")[0] == 11.0
    assert sink.values("meter-2", "d")[0] == 14.0
    assert all(r.quality == Quality.GOOD for r in sink.rows)


async def test_one_bad_register_leaves_the_others_flowing(
    device: ModbusServer, sink: RecordingSink, interner: DictInterner
) -> None:
    runner = AdapterRunner(build_adapter(modbus_config(device), "adapters[0]"), sink, interner, FAST)
    async with serving(runner), AsyncModbusTcpClient("127.0.0.1", port=device.port) as plc:
        await wait_until(lambda: len(sink.seen()) == 16, 10, "first full poll")
        device.bad_address = 22  # "raw" starts failing mid-stream
        await wait_until(
            lambda: any(r.field == "raw" and r.quality == Quality.BAD for r in sink.rows),
            10,
            "bad register reported",
        )
        await plc.write_register(23, 8, device_id=1)  # its neighbour in the same block keeps updating
        await wait_until(lambda: 8.0 in sink.values("meter-1", "near"), 10, "neighbour still flowing")
        mark = len(sink.rows)
        await wait_until(lambda: len(sink.rows) > mark + 50, 10, "more polls")
    after = sink.rows[mark:]
    assert {r.field for r in after if r.quality == Quality.BAD} == {"raw"}
    assert all(math.isnan(r.value) for r in after if r.field == "raw")
    assert {r.field for r in after if r.quality == Quality.GOOD} >= {"near", "i16", "f64", "a", "pump_on"}
    assert runner.reconnects == 0  # a refused register is not a connection problem


async def test_silent_unit_marks_only_its_fields_bad(
    device: ModbusServer, sink: RecordingSink, interner: DictInterner
) -> None:
    runner = AdapterRunner(build_adapter(modbus_config(device), "adapters[0]"), sink, interner, FAST)
    async with serving(runner), AsyncModbusTcpClient("127.0.0.1", port=device.port) as plc:
        await wait_until(lambda: len(sink.seen()) == 16, 10, "first full poll")
        device.silent_units.add(2)
        await wait_until(
            lambda: any(r.twin == "meter-2" and r.quality == Quality.BAD for r in sink.rows),
            10,
            "silent unit reported",
        )
        mark = len(sink.rows)
        await plc.write_register(0, 42, device_id=1)
        await wait_until(lambda: 42.0 in sink.values("meter-1", "i16"), 10, "unit 1 still flowing")
    after = sink.rows[mark:]
    assert {r.twin for r in after if r.quality == Quality.BAD} == {"meter-2"}
    assert runner.adapter.stats.bad_reads >= 2


async def test_server_restart_mid_stream_recovers(
    device: ModbusServer, sink: RecordingSink, interner: DictInterner
) -> None:
    runner = AdapterRunner(build_adapter(modbus_config(device), "adapters[0]"), sink, interner, FAST)
    async with serving(runner):
        await wait_until(lambda: len(sink.seen()) == 16, 10, "first full poll")
        await device.stop()
        await asyncio.sleep(0.3)
        device.holding[1][0] = 777  # the restarted device reports a new value
        await device.start()
        restarted = time.monotonic()
        await wait_until(lambda: 777.0 in sink.values("meter-1", "i16"), 10, "value after the restart")
        assert time.monotonic() - restarted < 10
    assert runner.reconnects >= 1
