"""MQTT writes against a real mosquitto and a device played by an MQTT client: a command is published
(QoS 1), the device's ack topic acknowledges it and its reported echo applies it; without an ack topic the
echo alone confirms; a negative ack rejects with the device's words; the echo, which keeps arriving, never
starts another write (no sync loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from drsdtp.actions import State
from drsdtp.config import parse_config
from drsdtp.node.node import Node
from tests.ingest.support import Mosquitto, running

pytestmark = pytest.mark.integration


class Device:
    """Receives commands on site/<twin>/set/<field>; reports the value back (and again every 0.1 s) on
    site/<twin>/<field>; acks on site/<twin>/ack, refusing values above ``refuse_above``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, bytes]] = []
        self.values: dict[str, float] = {}
        self.refuse_above = 100.0

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="device") as client:
            await client.subscribe("site/+/set/+", qos=1)
            echo = asyncio.create_task(self._echo(client))
            try:
                async for message in client.messages:
                    await self._command(client, str(message.topic), bytes(message.payload))
            finally:
                echo.cancel()

    async def _command(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        self.received.append((topic, payload))
        _, twin, _, field = topic.split("/")
        if field == "setpoint":  # JSON commands with an ack
            doc = json.loads(payload)
            ok = doc["value"] <= self.refuse_above
            await client.publish(
                f"site/{twin}/ack",
                json.dumps({"id": doc["id"], "ok": ok, "detail": "done" if ok else "above the limit"}),
                qos=1,
            )
            if ok:
                self.values[f"{twin}/{field}"] = float(doc["value"])
        else:  # a bare value, confirmed only by the echo
            self.values[f"{twin}/{field}"] = float(payload)

    async def _echo(self, client: aiomqtt.Client) -> None:
        while True:
            for key, value in list(self.values.items()):
                await client.publish(f"site/{key}", str(value), qos=1)
            await asyncio.sleep(0.1)


@pytest.fixture
async def device(tmp_path: pathlib.Path) -> AsyncIterator[Device]:
    with running(Mosquitto(tmp_path)) as broker:
        dev = Device(broker.port)
        task = asyncio.create_task(dev.run())
        try:
            yield dev
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


def config(tmp: pathlib.Path, port: int) -> dict[str, Any]:
    return {
        "node_id": "a",
        "data_dir": str(tmp / "node"),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{
            "type": "mqtt", "name": "broker", "host": "127.0.0.1", "port": port, "client_id": "node-a",
            "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            "topics": [{"template": "site/{twin}/{field}", "qos": 1, "payload": "number"}],
        }],
        "actuators": [
            {"twin": "ahu-1", "field": "setpoint", "node": "a", "adapter": "broker", "tolerance": 0.01,
             "write": {"topic": "site/{twin}/set/{field}", "ack_topic": "site/{twin}/ack"}},
            {"twin": "ahu-1", "field": "damper", "node": "a", "adapter": "broker", "tolerance": 0.01,
             "write": {"topic": "site/{twin}/set/{field}", "payload": "{value}"}},
            {"twin": "ahu-1", "field": "fan", "node": "a", "adapter": "broker", "tolerance": 0.01,
             "deadline_s": 1.5, "write": {"topic": "nobody/{twin}/{field}", "payload": "{value}"}},
        ],
    }  # fmt: skip


async def test_a_command_is_published_acknowledged_on_the_ack_topic_and_applied_by_the_echo(
    tmp_path: pathlib.Path, device: Device
) -> None:
    async with Node(parse_config(config(tmp_path, device.port))) as node:
        book = node.commands
        command = await book.issue_command("ahu-1", "setpoint", 21.5, actor="op")
        record = await book.wait(command, 20)
        assert record is not None and record.state == State.APPLIED, record
        assert record.marks[State.ACKNOWLEDGED].reason == "done" and record.attempts == 1
        ((topic, payload),) = device.received
        assert topic == "site/ahu-1/set/setpoint"
        assert json.loads(payload) == {"id": command, "twin": "ahu-1", "action": "setpoint", "value": 21.5,
                                       "args": []}  # fmt: skip
        refused = await book.wait(await book.issue_command("ahu-1", "setpoint", 150.0, actor="op"), 20)
        assert refused is not None and refused.state == State.REJECTED
        assert refused.why == "the device refused it: site/{twin}/ack: above the limit"
        # The acks also match the reading topics (site/+/+), but are consumed as acks, never dead letters.
        assert len(node.dead_letters) == 0 and node.store.get("ahu-1", "ack") is None


async def test_the_echo_confirms_a_bare_value_and_never_starts_another_write(
    tmp_path: pathlib.Path, device: Device
) -> None:
    async with Node(parse_config(config(tmp_path, device.port))) as node:
        book = node.commands
        command = await book.issue_command("ahu-1", "damper", 0.4, actor="op")
        record = await book.wait(command, 20)
        assert record is not None and record.state == State.APPLIED, record
        assert State.ACKNOWLEDGED not in record.marks  # published (PUBACK), confirmed by the echo only
        assert record.marks[State.SENT].reason == "written to topic site/{twin}/set/{field}"
        # Twenty more echoes of the reported value reach the node: none becomes a write or a command.
        stream = node.feed.subscribe()
        seen = 0
        async with asyncio.timeout(30):
            while seen < 20:
                seen += sum(c.twin == "ahu-1" for c in await stream.next_batch(4096))
        assert device.received == [("site/ahu-1/set/damper", b"0.4")]
        assert len(book.list("ahu-1")) == 1 and node.actuation.executor.stats.writes == 1


async def test_a_write_the_twin_never_reports_times_out_at_its_deadline_with_the_reason(
    tmp_path: pathlib.Path, device: Device
) -> None:
    async with Node(parse_config(config(tmp_path, device.port))) as node:
        command = await node.commands.issue_command("ahu-1", "fan", 0.8, actor="op")
        record = await node.commands.wait(command, 20)
        assert record is not None and record.state == State.TIMED_OUT, record
        assert State.SENT in record.marks and record.attempts == 1  # the broker took it; nobody applied it
        assert record.why == "deadline passed with the reported fan at nothing (not within 0.01 of 0.8)"
