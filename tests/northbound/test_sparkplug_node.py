"""A real node publishing its twins as a Sparkplug B edge node, read by a host built from the specification's
payload schema: births with current values and a bdSeq, data by exception by alias, a rebirth on request, and
the death certificate when the node dies."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time

import aiomqtt
import pytest

from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb
from tests.daemon.test_history_durability import publish, wait_subscribed
from tests.daemon.test_mqtt_durability import node_toml, start_node
from tests.ingest.support import Mosquitto, free_port, running

pytestmark = pytest.mark.integration


async def next_message(messages: aiomqtt.client.MessagesIterator, kind: str) -> spb.Payload:
    """The next Sparkplug message of ``kind`` (others are skipped)."""
    async with asyncio.timeout(30):
        async for message in messages:
            if str(message.topic).split("/")[2] == kind:
                return spb.Payload.FromString(bytes(message.payload))
    raise AssertionError("the subscription ended")


def values(birth: spb.Payload) -> dict[str, float]:
    return {m.name: m.double_value for m in birth.metrics if m.name != "bdSeq"}


def quality(metric: spb.Payload.Metric) -> tuple[int, float]:
    """The metric's ``Quality`` code and ``drsdtp/quality`` score properties."""
    props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
    return props["Quality"].int_value, props["drsdtp/quality"].double_value


def bd_seq(message: spb.Payload) -> int:
    return next(int(m.long_value) for m in message.metrics if m.name == "bdSeq")


async def test_twins_are_born_updated_reborn_and_die_as_a_sparkplug_edge_node(tmp_path: pathlib.Path) -> None:
    broker = Mosquitto(tmp_path)
    with running(broker):
        cfg = tmp_path / "node.toml"
        api_port = free_port()
        toml = node_toml(tmp_path / "data", broker, api_port)
        cfg.write_text(
            f'{toml}\n[sparkplug]\nhost = "127.0.0.1"\nport = {broker.port}\ngroup_id = "plant"\n'
            'edge_node_id = "edge-7"\ntwins = ["room-*"]\ninterval_s = 0.05\n'
        )
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"host-{time.monotonic_ns()}") as host:
            await host.subscribe("spBv1.0/plant/#", qos=1)
            messages = host.messages
            node = start_node(cfg)
            try:
                first = await next_message(messages, "NBIRTH")
                assert values(first) == {}  # nothing to publish yet
                await wait_subscribed(broker, api_port, "-1")
                await asyncio.to_thread(publish, broker, [("site/room-1/temp", "21.5")], "pub-sp")
                # A metric the birth did not declare: the node is born again with it.
                birth = await next_message(messages, "NBIRTH")
                assert values(birth) == {"room-1/temp": 21.5}
                assert "probe/v" not in {m.name for m in birth.metrics}  # outside twins = ["room-*"]
                assert bd_seq(birth) == bd_seq(first)  # one session, one death certificate
                (metric,) = [m for m in birth.metrics if m.name == "room-1/temp"]
                assert (metric.datatype, metric.alias > 0, birth.seq) == (spb.Double, True, 0)
                await asyncio.to_thread(publish, broker, [("site/room-1/temp", "22.5")], "pub-sp")
                data = await next_message(messages, "NDATA")
                assert [(m.alias, m.double_value, m.name) for m in data.metrics] == [(metric.alias, 22.5, "")]
                assert data.seq == 1
                # A health quality below the interlock threshold rides on the metric as a bad Quality.
                await asyncio.to_thread(publish, broker, [("site/room-1/temp.q", "0.2")], "pub-sp")
                flagged = await next_message(messages, "NDATA")
                assert [(m.alias, m.double_value) for m in flagged.metrics] == [(metric.alias, 22.5)]
                assert quality(flagged.metrics[0]) == (0, 0.2)
                request = spb.Payload(timestamp=int(time.time() * 1000))
                request.metrics.add(name="Node Control/Rebirth", datatype=spb.Boolean, boolean_value=True)
                await host.publish("spBv1.0/plant/NCMD/edge-7", request.SerializeToString())
                again = await next_message(messages, "NBIRTH")
                assert values(again) == {"room-1/temp": 22.5}
                assert [quality(m) for m in again.metrics if m.name == "room-1/temp"] == [(0, 0.2)]
                node.send_signal(signal.SIGKILL)
                node.wait(10)
                death = await next_message(messages, "NDEATH")
                assert bd_seq(death) == bd_seq(again)
            finally:
                if node.poll() is None:
                    node.send_signal(signal.SIGTERM)
                    node.wait(30)
