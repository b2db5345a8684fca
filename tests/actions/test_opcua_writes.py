"""OPC UA writes against a real asyncua server: a typed write of a writable variable, acknowledged and
applied when the monitored variable reports it; a method call with typed arguments and its result; a Bad
status (a read-only variable) rejects with its name; a value of the wrong type rejects before it is sent."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.methods import uamethod

from drsdtp.actions import State
from drsdtp.config import parse_config
from drsdtp.node.node import Node
from tests.ingest.opcua_server import OpcServer

pytestmark = pytest.mark.integration


class ActuatedServer(OpcServer):
    """Adds Plant/Setpoint (Double, writable), Plant/Locked (Double, read-only) and Plant.Start(speed)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[float] = []
        self.plant_id = ""

    async def start(self) -> None:
        await super().start()
        assert self.server is not None
        plant = await self.server.nodes.objects.get_child([f"{self.idx}:Plant"])
        self.plant_id = plant.nodeid.to_string()
        setpoint = await plant.add_variable(self.node("Setpoint"), f"{self.idx}:Setpoint", 0.0)
        await setpoint.set_writable()
        await plant.add_variable(self.node("Locked"), f"{self.idx}:Locked", 0.0)

        @uamethod
        def start(parent: Any, speed: float) -> str:
            self.calls.append(speed)
            return f"running at {speed:g}"

        await plant.add_method(
            self.node("Start"), f"{self.idx}:Start", start, [ua.VariantType.Double], [ua.VariantType.String]
        )


@pytest.fixture
async def server() -> AsyncIterator[ActuatedServer]:
    server = ActuatedServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(tmp: pathlib.Path, server: ActuatedServer) -> dict[str, Any]:
    ns = server.idx
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{
            "type": "opcua", "name": "plc", "url": server.url, "security_policy": "None", "twin": "boiler-1",
            "publishing_interval_ms": 50, "sampling_interval_ms": 20,
            "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            "nodes": [{"node_id": f"ns={ns};s=Setpoint", "field": "setpoint"},
                      {"node_id": f"ns={ns};s=Locked", "field": "locked"}],
        }],
        "actuators": [
            {"twin": "boiler-1", "field": "setpoint", "node": "a", "adapter": "plc", "tolerance": 1e-6,
             "write": {"node_id": f"ns={ns};s=Setpoint", "type": "Double"}},
            {"twin": "boiler-1", "field": "locked", "node": "a", "adapter": "plc", "retries": 0,
             "write": {"node_id": f"ns={ns};s=Locked", "type": "Double"}},
            {"twin": "boiler-1", "action": "start", "node": "a", "adapter": "plc",
             "write": {"object_id": server.plant_id, "method_id": f"ns={ns};s=Start",
                       "arg_types": ["Double"]}},
        ],
    }  # fmt: skip


async def test_a_variable_write_and_a_method_call_land_and_are_acknowledged(
    tmp_path: pathlib.Path, server: ActuatedServer
) -> None:
    async with Node(parse_config(config(tmp_path, server))) as node:
        book = node.commands
        setpoint = await book.issue_command("boiler-1", "setpoint", 64.25, actor="op")
        start = await book.issue_command("boiler-1", "start", args=[1450.0], actor="op")
        record = await book.wait(setpoint, 20)
        assert record is not None and record.state == State.APPLIED, record
        assert record.why == "reported setpoint = 64.25" and record.attempts == 1
        assert server.server is not None
        assert await server.server.get_node(server.node("Setpoint")).read_value() == 64.25
        call = await book.wait(start, 20)
        assert call is not None and call.state == State.APPLIED, call
        assert server.calls == [1450.0] and "running at 1450" in call.result
        assert State.ACKNOWLEDGED in call.marks


async def test_bad_status_and_wrong_types_are_rejected_with_the_reason(
    tmp_path: pathlib.Path, server: ActuatedServer
) -> None:
    async with Node(parse_config(config(tmp_path, server))) as node:
        book = node.commands
        locked = await book.wait(await book.issue_command("boiler-1", "locked", 5.0, actor="op"), 20)
        assert locked is not None and locked.state == State.REJECTED
        assert (
            locked.why.startswith("the device refused it: node ns=") and "BadUserAccessDenied" in locked.why
        )
        bad = await book.wait(await book.issue_command("boiler-1", "start", args=["fast"], actor="op"), 20)
        assert bad is not None and bad.state == State.REJECTED
        assert "Double takes a number, got 'fast'" in bad.why and server.calls == []
