"""A real node publishing its twins as a Sparkplug B edge node, read by a host built from the specification's
payload schema: births with current values and a bdSeq, data by exception by alias, a rebirth on request, and
the death certificate when the node dies."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time
import urllib.request

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb
from tests.daemon.model_nodes import NodeProcess, stuck_rooms_toml
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


def scrape(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)


async def test_forecasts_are_born_and_published_past_their_deadband(tmp_path: pathlib.Path) -> None:
    """A simulated room under its model: each forecast field's next value, interval and times to its limits
    are metrics in the birth, and data carries one only when it moved past the deadband."""
    broker = Mosquitto(tmp_path)
    deadband = 0.25
    with running(broker):
        node = NodeProcess(
            tmp_path,
            "sp-forecast",
            stuck_rooms_toml(
                20.0,
                extra=f'[sparkplug]\nhost = "127.0.0.1"\nport = {broker.port}\ngroup_id = "plant"\n'
                f'edge_node_id = "edge-f"\ntwins = ["a/room-1"]\ninterval_s = 0.05\n'
                f"forecast_deadband = {deadband}\n",
            ),
        )
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"host-{time.monotonic_ns()}") as host:
            await host.subscribe("spBv1.0/plant/#", qos=1)
            node.start()
            try:
                # Births until one carries forecasts (the first intelligence pass comes after the first data).
                while True:
                    birth = await next_message(host.messages, "NBIRTH")
                    if any(m.name == "a/room-1/temp_1/forecast/value" for m in birth.metrics):
                        break
                names = {m.alias: m.name for m in birth.metrics if m.name != "bdSeq"}
                latest: dict[str, float | None] = {
                    m.name: None if m.is_null else m.double_value
                    for m in birth.metrics
                    if "/forecast/" in m.name
                }
                metric = next(m for m in birth.metrics if m.name == "a/room-1/temp_1/forecast/value")
                props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
                assert metric.datatype == spb.Double and props["horizon_s"].double_value > 0
                fields = {n.rsplit("/forecast/", 1)[0] for n in latest}
                assert {f"a/room-1/{f}" for f in ("temp_1", "temp_2", "humidity")} <= fields
                for field in fields:  # every forecast field has the whole set
                    assert {n for n in latest if n.startswith(field + "/forecast/")} == {
                        f"{field}/forecast/{k}"
                        for k in ("value", "lower", "upper", "eta_high_s", "eta_low_s")
                    }
                value = latest["a/room-1/temp_1/forecast/value"]
                low, high = latest["a/room-1/temp_1/forecast/lower"], latest["a/room-1/temp_1/forecast/upper"]
                # The first passes may forecast a value before they have the residuals for an interval: null.
                assert value is not None
                assert low is None or high is None or low <= value <= high
                # Data: every forecast value it carries moved past the deadband of what was published before
                # (with no interval published yet, past the deadband of a thousandth of the value).
                updates, held_back, scraped = 0, 0.0, 0.0
                interval = "a/room-1/temp_1/forecast/lower", "a/room-1/temp_1/forecast/upper"
                async with asyncio.timeout(60):
                    # Until three values, an interval, and forecasts held back inside the deadband (counted).
                    while updates < 3 or any(latest[n] is None for n in interval) or held_back == 0:
                        data = await next_message(host.messages, "NDATA")
                        for m in data.metrics:
                            name = names[m.alias]
                            if "/forecast/" not in name:
                                continue
                            new = None if m.is_null else m.double_value
                            old = latest[name]
                            field, kind = name.rsplit("/forecast/", 1)
                            if kind in ("value", "lower", "upper") and old is not None and new is not None:
                                lo, hi = latest[f"{field}/forecast/lower"], latest[f"{field}/forecast/upper"]
                                scale = (
                                    (hi - lo) / 2
                                    if lo is not None and hi is not None
                                    else 1e-3 * max(abs(old), 1)
                                )
                                assert abs(new - old) > deadband * scale, (name, old, new, lo, hi)
                            updates += kind == "value"
                            latest[name] = new
                        if time.monotonic() - scraped > 1:
                            scraped = time.monotonic()
                            held_back = await asyncio.to_thread(
                                scrape, node.metrics_port, "drsdtp_sparkplug_forecasts_held_back_total"
                            )
                low, high = (latest[n] for n in interval)
                value = latest["a/room-1/temp_1/forecast/value"]
                assert value is not None and low is not None and high is not None and low <= value <= high
            finally:
                node.stop()
