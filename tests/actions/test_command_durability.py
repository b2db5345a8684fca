"""Commands against real ``drsdtp run`` processes and a real Modbus device (a pymodbus server that records
every write): the executor SIGKILLed after its write landed completes the command exactly once after a
restart (the device sees one write); a command issued on the other side of a partition executes once after
the heal, and the same idempotency key used on both sides is one command, written once.

The device has a command register (holding 10, written) and a status register (holding 11, read back as
the reported ``setpoint``): the test plays the device's firmware and copies one to the other when it
chooses, so "written but not yet applied" is a state the test holds, not a race it hopes to hit.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.adapters.modbus_codec import decode, encode
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode, eventually
from tests.gossip.procs import Proxy

from .writes_support import RecordingModbusServer

pytestmark = pytest.mark.integration


def device_config(port: int) -> str:
    return f"""
[[adapters]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = {port}
twin = "boiler-1"
poll_interval_s = 0.1
[adapters.reconnect]
initial_s = 0.1
max_s = 0.5
[[adapters.registers]]
field = "setpoint"
address = 11
data_type = "float32"
"""


# An attempt whose acknowledgement takes longer than ack_timeout_s is retried, by design (a write that may
# not have landed is written again): a second write the device records. The device is a pymodbus server in
# the test's process; at load 13-30 on two cores, the test process and the node each wait seconds for a core,
# so a 2 s ack timeout was a second attempt and "written once" failed. The timeouts here are generous: what
# the test proves is how often the device is written, not how fast.
ACTUATOR = """
[[actuators]]
twin = "boiler-1"
field = "setpoint"
node = "node-a"
adapter = "plc"
min = 0.0
max = 90.0
tolerance = 0.01
ack_timeout_s = 30.0
deadline_s = 600.0
[actuators.write]
address = 10
data_type = "float32"
"""


@pytest.fixture
async def device() -> AsyncIterator[RecordingModbusServer]:
    async with RecordingModbusServer({1: [0] * 32}) as server:
        yield server


async def firmware_applies(device: RecordingModbusServer) -> None:
    """The device's firmware: the status register takes the last commanded value (written as a client
    would, to the status register only, so it is not counted as a command write)."""
    (_, _, words) = [w for w in device.writes if w[1] == 10][-1]
    client = AsyncModbusTcpClient("127.0.0.1", port=device.port)
    await client.connect()
    try:
        await client.write_registers(11, list(encode(decode(words, "float32", "ABCD"), "float32", "ABCD")))
    finally:
        client.close()


def command_writes(device: RecordingModbusServer) -> list[float]:
    return [decode(list(w), "float32", "ABCD") for kind, address, w in device.writes if address == 10]


async def state(node: ApiNode, command: str) -> api_pb2.Command:
    reply = await node.call("GetCommand", api_pb2.CommandGetRequest(command_id=command))
    assert isinstance(reply.command, api_pb2.Command)
    return reply.command


async def test_a_command_survives_sigkill_of_its_executor_and_is_written_once(
    tmp_path: Path, device: RecordingModbusServer
) -> None:
    node = ApiNode("a", tmp_path)
    node.configure({}, device_config(device.port) + ACTUATOR)
    await node.start()
    try:
        issued = await node.call(
            "IssueCommand",
            api_pb2.CommandIssueRequest(
                twin_id="boiler-1", action="setpoint", value=api_pb2.FieldValue(f64=42.5), actor="op-1"
            ),
        )
        command = issued.command.command_id

        async def acknowledged() -> bool:
            return (await state(node, command)).state == "acknowledged"

        await eventually(acknowledged, 120, "the write landed and was acknowledged")
        node.kill()  # mid-flight: written, acknowledged, not applied (the device has not applied it yet)
        assert command_writes(device) == [42.5]
        await firmware_applies(device)
        await node.start()

        async def applied() -> bool:
            return (await state(node, command)).terminal

        await eventually(applied, 120, "the resumed command reached an outcome")
        record = await state(node, command)
        assert (record.state, record.attempts) == ("applied", 1), record
        assert command_writes(device) == [42.5]  # exactly one write: the resumed executor did not rewrite
        assert [m.state for m in record.marks] == ["sent", "acknowledged", "applied"]
    finally:
        node.stop()


async def test_a_command_issued_across_a_partition_executes_once_after_the_heal(
    tmp_path: Path, device: RecordingModbusServer
) -> None:
    nodes = {n: ApiNode(n, tmp_path) for n in ("a", "b")}
    proxies: dict[tuple[str, str], Proxy] = {}
    for x, y in itertools.permutations(nodes, 2):
        proxies[x, y] = Proxy(nodes[y].peer_port)
        await proxies[x, y].start()
    for name, node in nodes.items():
        other = "b" if name == "a" else "a"
        device_part = device_config(device.port) if name == "a" else ""
        node.configure({nodes[other].node_id: proxies[name, other].port}, device_part + ACTUATOR)
    try:
        await asyncio.gather(*(n.start() for n in nodes.values()))
        a, b = nodes["a"], nodes["b"]
        for proxy in proxies.values():
            proxy.block()

        def issue(value: float, key: str) -> api_pb2.CommandIssueRequest:
            return api_pb2.CommandIssueRequest(
                twin_id="boiler-1",
                action="setpoint",
                value=api_pb2.FieldValue(f64=value),
                idempotency_key=key,
            )

        on_a = await a.call("IssueCommand", issue(30.0, "shift-start"))
        on_b = await b.call("IssueCommand", issue(30.0, "shift-start"))
        assert on_a.command.command_id == on_b.command.command_id  # one command, named by its key
        await eventually(lambda: _is(a, on_a.command.command_id, "acknowledged"), 120, "a wrote it")
        await firmware_applies(device)
        await eventually(lambda: _is(a, on_a.command.command_id, "applied"), 120, "a applied it")
        later = await b.call("IssueCommand", issue(35.0, "late-shift"))
        await asyncio.sleep(1.0)  # the partition holds it: b has no executor for it
        assert (await state(b, later.command.command_id)).state == "pending"
        assert command_writes(device) == [30.0]
        for proxy in proxies.values():
            proxy.unblock()
        await eventually(lambda: _is(a, later.command.command_id, "acknowledged"), 120, "a wrote b's command")
        await firmware_applies(device)
        await eventually(lambda: _is(b, later.command.command_id, "applied"), 120, "b sees it applied")
        shared = await state(b, on_a.command.command_id)
        assert shared.state == "applied" and shared.attempts == 1
        assert command_writes(device) == [30.0, 35.0]  # each command written once
    finally:
        for node in nodes.values():
            node.stop()
        for proxy in proxies.values():
            await proxy.close()


async def _is(node: ApiNode, command: str, wanted: str) -> bool:
    try:
        return (await state(node, command)).state == wanted
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False  # not replicated here yet
