"""Sparkplug B commands: an actuator on a Sparkplug device writes a typed DCMD (NCMD for an edge node's
metric); the device's DDATA echo applies it, never another write; a dead or unknown device, a metric not in
the birth and a value that does not fit the birth's type are refused with the reason. Encoding tests on the
decoder's state, then a real node, a real mosquitto and a Sparkplug edge node built from the spec's proto."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from drsdtp.actions import State
from drsdtp.adapters.mqtt import MqttAdapter, build
from drsdtp.adapters.payloads import DEFAULT_LIMITS
from drsdtp.adapters.sparkplug import SparkplugDecoder
from drsdtp.adapters.sparkplug_write import CommandRefused, Declared, command_message, encode_value
from drsdtp.config import parse_config
from drsdtp.errors import ConfigError
from drsdtp.node.node import Node
from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode, eventually

from .sparkplug_edge import EdgeNode, Metric
from .support import Mosquitto, running, wait_until
from .test_sparkplug import feed

DEVICE: list[Metric] = [
    ("Setpoint", 30, spb.Double, 20.0),
    ("Speed", 31, spb.Int8, 0),
    ("Enabled", 32, spb.Boolean, False),
]


def test_a_command_carries_the_metric_by_name_and_alias_typed_as_the_birth_declared() -> None:
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS)
    feed(dec, edge.birth([("Mode", 1, spb.UInt16, 2)]), edge.device_birth("pump-7", DEVICE))
    topic, payload = command_message("plant/press-1/pump-7", "Speed", dec.declared("plant/press-1/pump-7",
                                     "Speed"), -5.0, now_ms=1234)  # fmt: skip
    msg = spb.Payload.FromString(payload)
    assert topic == "spBv1.0/plant/DCMD/press-1/pump-7" and msg.timestamp == 1234
    (m,) = msg.metrics
    assert (m.name, m.alias, m.datatype, m.int_value, m.timestamp) == ("Speed", 31, spb.Int8, 2**32 - 5, 1234)
    topic, payload = command_message("plant/press-1", "Mode", dec.declared("plant/press-1", "Mode"), 3)
    assert topic == "spBv1.0/plant/NCMD/press-1"
    assert [(m.name, m.datatype, m.int_value) for m in spb.Payload.FromString(payload).metrics] == [
        ("Mode", spb.UInt16, 3)
    ]


@pytest.mark.parametrize(
    ("datatype", "value", "why"),
    [
        (spb.Int8, 300, "300 does not fit Int8 (-128..127)"),
        (spb.UInt32, -1, "-1 does not fit UInt32 (0..4294967295)"),
        (spb.Int16, 1.5, "1.5 is not a whole number for the Int16 metric"),
        (spb.Float, 1e39, "1e+39 does not fit Float"),
        (spb.Double, "hot", "'hot' is not a number for the Double metric"),
        (spb.Boolean, 0.5, "0.5 is not a Boolean (true/false or 0/1)"),
        (spb.String, 1.0, "1.0 is not text for the String metric"),
        (spb.DataSet, 1.0, "a DataSet metric cannot be written"),
        (spb.Double, None, "a Double metric needs a value"),
    ],
)
def test_a_value_that_does_not_fit_the_type_is_refused_with_the_reason(
    datatype: int, value: Any, why: str
) -> None:
    with pytest.raises(CommandRefused) as err:
        encode_value(spb.Payload.Metric(), datatype, value)
    assert str(err.value) == why


def test_a_dead_unknown_or_undeclared_target_is_refused_with_the_reason() -> None:
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS)

    def why(twin: str, metric: str) -> str:
        with pytest.raises(CommandRefused) as err:
            dec.declared(twin, metric)
        return str(err.value)

    assert why("plant/press-1/pump-7", "Setpoint") == (
        "edge node plant/press-1 is unknown: no NBIRTH since this node started"
    )
    feed(dec, edge.birth([]), edge.device_birth("pump-7", DEVICE))
    assert dec.declared("plant/press-1/pump-7", "Setpoint") == Declared(spb.Double, 30)
    assert why("plant/press-1/pump-7", "Nope") == "metric 'Nope' is not in the birth of plant/press-1/pump-7"
    assert why("plant/press-1/pump-9", "Setpoint") == (
        "device plant/press-1/pump-9 is unknown: no DBIRTH since its edge node's birth"
    )
    feed(dec, edge.device_death("pump-7"))
    assert why("plant/press-1/pump-7", "Setpoint") == "device plant/press-1/pump-7 is dead (DDEATH)"
    feed(dec, edge.death())
    assert why("plant/press-1", "Mode") == "edge node plant/press-1 is dead (NDEATH)"
    assert why("plant", "Mode").startswith("twin 'plant' is not a Sparkplug twin")


def test_a_sparkplug_write_needs_a_sparkplug_topic_rule_and_valid_keys() -> None:
    raw = {"type": "mqtt", "name": "b", "host": "127.0.0.1", "persistent_session": False,
           "topics": [{"template": "site/{twin}/{field}"}]}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        build(raw, "adapters[0]").write_target({"payload": "sparkplug_b"}, "actuators[0].write")
    assert err.value.key == "actuators[0].write.payload"
    raw["topics"] = [{"template": "spBv1.0/plant/#", "qos": 0, "payload": "sparkplug_b"}]
    adapter = build(raw, "adapters[0]")
    for bad, key in (({"qos": 2}, "qos"), ({"metric": ""}, "metric"), ({"topic": "x"}, "topic")):
        with pytest.raises(ConfigError) as err:
            adapter.write_target({"payload": "sparkplug_b", **bad}, "actuators[0].write")
        assert err.value.key == f"actuators[0].write.{key}"


# --- a real node, a real broker, a Sparkplug edge node with one device ------------------------------------


class SparkplugDevice:
    """Edge node plant/press-1 with device pump-7: births (again on a Rebirth NCMD), DDATA of every live
    metric every 0.1 s (the echo), a DCMD's metrics applied as sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.edge = EdgeNode()
        self.values: dict[str, tuple[int, int, float | bool | str]] = {
            name: (alias, datatype, value) for name, alias, datatype, value in DEVICE
        }
        self.commands: list[spb.Payload] = []
        self.alive = True
        self._client: aiomqtt.Client | None = None

    def _metrics(self) -> list[Metric]:
        return [(name, alias, dt, value) for name, (alias, dt, value) in self.values.items()]

    async def _publish(self, message: tuple[str, bytes]) -> None:
        assert self._client is not None
        await self._client.publish(*message, qos=0)

    async def births(self) -> None:
        await self._publish(self.edge.birth([]))
        if self.alive:
            await self._publish(self.edge.device_birth("pump-7", self._metrics()))

    async def kill_device(self) -> None:
        self.alive = False
        await self._publish(self.edge.device_death("pump-7"))

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="press-1") as client:
            self._client = client
            await client.subscribe("spBv1.0/plant/NCMD/press-1", qos=0)
            await client.subscribe("spBv1.0/plant/DCMD/press-1/+", qos=0)
            await self.births()
            echo = asyncio.create_task(self._echo())
            try:
                async for message in client.messages:
                    payload = spb.Payload.FromString(bytes(message.payload))
                    if str(message.topic).endswith("/NCMD/press-1"):
                        if any(m.name == "Node Control/Rebirth" for m in payload.metrics):
                            await self.births()
                        continue
                    self.commands.append(payload)
                    for m in payload.metrics:
                        alias, datatype, _ = self.values[m.name]
                        value = getattr(m, m.WhichOneof("value") or "double_value")
                        self.values[m.name] = (alias, datatype, value)
            finally:
                echo.cancel()

    async def _echo(self) -> None:
        while True:
            if self.alive:
                await self._publish(self.edge.data(self._metrics(), device="pump-7"))
            await asyncio.sleep(0.1)


@pytest.fixture
async def device(tmp_path: pathlib.Path) -> AsyncIterator[SparkplugDevice]:
    with running(Mosquitto(tmp_path)) as broker:
        dev = SparkplugDevice(broker.port)
        task = asyncio.create_task(dev.run())
        try:
            yield dev
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


def config(tmp: pathlib.Path, port: int) -> dict[str, Any]:
    twin = "plant/press-1/pump-7"
    return {
        "node_id": "a",
        "data_dir": str(tmp / "node"),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{
            "type": "mqtt", "name": "scada", "host": "127.0.0.1", "port": port, "client_id": "node-a",
            "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            "topics": [{"template": "spBv1.0/plant/#", "qos": 0, "payload": "sparkplug_b"}],
        }],
        "actuators": [
            {"twin": twin, "field": "Setpoint", "node": "a", "adapter": "scada", "tolerance": 0.01,
             "write": {"payload": "sparkplug_b"}},
            {"twin": twin, "field": "Speed", "node": "a", "adapter": "scada", "tolerance": 0.5,
             "write": {"payload": "sparkplug_b", "qos": 1}},
        ],
    }  # fmt: skip


async def born(node: Node, twin: str, field: str) -> None:
    await wait_until(lambda: twin in node.store and node.store.get(twin, field) is not None, 30, "the births")


@pytest.mark.integration
async def test_a_command_reaches_the_device_as_a_typed_dcmd_and_its_ddata_echo_applies_it(
    tmp_path: pathlib.Path, device: SparkplugDevice
) -> None:
    twin = "plant/press-1/pump-7"
    async with Node(parse_config(config(tmp_path, device.port))) as node:
        await born(node, twin, "Setpoint")
        book = node.commands
        record = await book.wait(await book.issue_command(twin, "Setpoint", 21.5, actor="op"), 20)
        assert record is not None and record.state == State.APPLIED, record
        assert State.ACKNOWLEDGED not in record.marks  # Sparkplug has no command ack: the echo confirms
        ((m,),) = [list(c.metrics) for c in device.commands]
        assert (m.name, m.alias, m.datatype, m.double_value) == ("Setpoint", 30, spb.Double, 21.5)
        assert m.timestamp > 0
        # More echoes of the applied value arrive (and our own DCMD on the group's subscription): no write.
        adapter = node.intake.service.runners["scada"].adapter
        seen = adapter.stats.messages
        await wait_until(lambda: adapter.stats.messages >= seen + 20, 30, "twenty more messages")
        assert len(device.commands) == 1 and node.actuation.executor.stats.writes == 1
        assert len(book.list(twin)) == 1 and len(node.dead_letters) == 0
        # A value out of the birth's Int8 range never leaves the node.
        refused = await book.wait(await book.issue_command(twin, "Speed", 300.0, actor="op"), 20)
        assert refused is not None and refused.state == State.REJECTED
        assert refused.why == "the device refused it: 300.0 does not fit Int8 (-128..127)"
        assert len(device.commands) == 1


@pytest.mark.integration
async def test_a_write_to_a_dead_device_is_rejected_with_the_reason(
    tmp_path: pathlib.Path, device: SparkplugDevice
) -> None:
    twin = "plant/press-1/pump-7"
    async with Node(parse_config(config(tmp_path, device.port))) as node:
        await born(node, twin, "Setpoint")
        await device.kill_device()
        adapter = node.intake.service.runners["scada"].adapter
        assert isinstance(adapter, MqttAdapter)
        decoder = adapter.settings.topics[0].decoder
        assert isinstance(decoder, SparkplugDecoder)
        await wait_until(lambda: decoder.stats.deaths > 0, 30, "the DDEATH")
        book = node.commands
        record = await book.wait(await book.issue_command(twin, "Setpoint", 22.0, actor="op"), 20)
        assert record is not None and record.state == State.REJECTED, record
        assert record.why == "the device refused it: device plant/press-1/pump-7 is dead (DDEATH)"
        assert device.commands == []


@pytest.mark.integration
async def test_a_command_issued_over_the_api_to_a_node_process_is_applied_by_the_ddata_echo(
    tmp_path: pathlib.Path, device: SparkplugDevice
) -> None:
    node = ApiNode("a", tmp_path / "nodes")
    node.configure(
        {},
        f"""
[[adapters]]
type = "mqtt"
name = "scada"
host = "127.0.0.1"
port = {device.port}
persistent_session = false
[[adapters.topics]]
template = "spBv1.0/plant/#"
qos = 0
payload = "sparkplug_b"
[[actuators]]
twin = "plant/press-1/pump-7"
field = "Enabled"
node = "node-a"
adapter = "scada"
value = "bool"
[actuators.write]
payload = "sparkplug_b"
""",
    )
    await node.start()
    try:

        async def born() -> bool:
            return await node.get("plant/press-1/pump-7") is not None

        await eventually(born, 30, "the device's births reached the node")
        request = api_pb2.CommandIssueRequest(
            twin_id="plant/press-1/pump-7", action="Enabled", value=api_pb2.FieldValue(flag=True), wait_s=20
        )
        done = (await node.call("IssueCommand", request, deadline_s=30)).command
        assert done.state == "applied", done
        ((m,),) = [list(c.metrics) for c in device.commands]
        assert (m.name, m.alias, m.datatype, m.boolean_value) == ("Enabled", 32, spb.Boolean, True)
    finally:
        node.stop()
