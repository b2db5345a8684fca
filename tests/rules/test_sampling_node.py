"""Adaptive sampling with a real node process and a real Modbus server: a rule that fires switches the
PLC adapter from polling hourly to every 50 ms, so a register change is seen at once (with the hourly
interval only the poll at start would ever have read it)."""

from __future__ import annotations

import pathlib

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.client import field_to_python
from drsdtp.wire.v1 import api_pb2
from tests.alarms.support import report
from tests.api.nodes import ApiNode, eventually
from tests.ingest.modbus_server import ModbusServer

pytestmark = pytest.mark.integration


def config(port: int) -> str:
    return f"""
[alerting]
period_s = 0.1
[[adapters]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = {port}
twin = "pump-1"
poll_interval_s = 3600.0
timeout_s = 0.5
[[adapters.registers]]
field = "pressure"
address = 0
data_type = "uint16"
[[rules]]
name = "look-closer"
twins = "tank-*"
when = "level > 80"
alarm = false
[[rules.actions]]
type = "sampling"
adapter = "plc"
interval_s = 0.05
[[rules.actions]]
on = "clear"
type = "sampling"
adapter = "plc"
interval_s = 3600.0
"""


async def test_a_rule_speeds_up_a_modbus_adapters_polling(tmp_path: pathlib.Path) -> None:
    server = ModbusServer({1: [100] + [0] * 15})
    await server.start()
    node = ApiNode("solo", tmp_path)
    node.configure({}, config(server.port))
    try:
        await node.start()

        async def pressure_is(value: int) -> bool:
            twin = await node.get("pump-1")
            found = {f.name: field_to_python(f) for f in twin.fields} if twin is not None else {}
            return found.get("pressure") == value

        await eventually(lambda: pressure_is(100), 30, "the poll at start read the register")
        async with AsyncModbusTcpClient("127.0.0.1", port=server.port) as plc:
            await plc.write_register(0, 200, device_id=1)
        await node.call("Write", report("tank-1", create=True, level=90.0))
        await eventually(lambda: pressure_is(200), 30, "the faster polling read the new value")
        reply = await node.call("ListRules", api_pb2.ListRulesRequest())
        (rule,) = reply.rules
        assert (rule.fired, rule.errors) == (1, 0), rule.last_error
    finally:
        node.stop()
        server.release.set()
        await server.stop()
