"""Sparkplug B host side: births define metrics, data by alias, deaths mark fields BAD, gaps ask for a
rebirth. Decoder tests on built payloads, then an MQTT adapter reading a real mosquitto."""

from __future__ import annotations

import asyncio
import math
import time

import aiomqtt
import pytest

from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.payloads import DEFAULT_LIMITS, PayloadError
from drsdtp.adapters.sparkplug import REBIRTH_INTERVAL_S, SparkplugDecoder
from drsdtp.adapters.sparkplug_write import REBIRTH_METRIC
from drsdtp.ingest.runner import AdapterRunner
from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb

from .sparkplug_edge import EdgeNode, Metric
from .support import FAST, DictInterner, Mosquitto, RecordingSink, serving, wait_until
from .test_ingest_mqtt import adapter, mqtt_config

BIRTH: list[Metric] = [
    ("Motor/RPM", 1, spb.Double, 1450.0),
    ("Temperature", 2, spb.Float, 40.5),
    ("Offset", 3, spb.Int16, -12),
    ("Running", 4, spb.Boolean, True),
    ("Firmware", 5, spb.String, "2.1"),
]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def feed(dec: SparkplugDecoder, *messages: tuple[str, bytes]) -> tuple[SourceBatch, int]:
    out = SourceBatch(0)
    bad = sum(dec.decode_message(topic, payload, 1, out) for topic, payload in messages)
    return out, bad


def rows(out: SourceBatch) -> list[tuple[str, str, float, int]]:
    return [(r.twin, r.field, r.value, r.quality) for r in out.readings()]


def test_a_birth_defines_metrics_and_data_updates_them_by_alias() -> None:
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS)
    out, bad = feed(dec, edge.birth(BIRTH))
    assert bad == 1  # the string metric: not a number
    assert rows(out) == [
        ("plant/press-1", "Motor/RPM", 1450.0, 0),
        ("plant/press-1", "Temperature", 40.5, 0),
        ("plant/press-1", "Offset", -12.0, 0),
        ("plant/press-1", "Running", 1.0, 0),
    ]
    out, bad = feed(dec, edge.data([("", 1, spb.Double, 1500.0), ("", 3, spb.Int16, -1)]))
    assert (rows(out), bad) == (
        [("plant/press-1", "Motor/RPM", 1500.0, 0), ("plant/press-1", "Offset", -1.0, 0)],
        0,
    )
    assert dec.take_rebirths() == []


def test_devices_are_twins_under_their_edge_node_and_a_device_death_marks_only_them() -> None:
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS)
    feed(dec, edge.birth(BIRTH[:1]))
    out, _ = feed(dec, edge.device_birth("pump-7", [("flow", 20, spb.Double, 3.5)]))
    assert rows(out) == [("plant/press-1/pump-7", "flow", 3.5, 0)]
    out, _ = feed(dec, edge.data([("", 20, spb.Double, 3.75)], device="pump-7"))
    assert rows(out) == [("plant/press-1/pump-7", "flow", 3.75, 0)]
    out, _ = feed(dec, edge.device_death("pump-7"))
    (twin, field, value, quality), *more = rows(out)
    assert (twin, field, math.isnan(value), quality, more) == (
        "plant/press-1/pump-7",
        "flow",
        True,
        Quality.BAD,
        [],
    )
    out, bad = feed(dec, edge.data([("", 20, spb.Double, 4.0)], device="pump-7"))
    assert (rows(out), bad, dec.stats.not_born) == ([], 1, 1)  # a dead device's data waits for its rebirth


def test_a_node_death_marks_every_metric_bad_unless_it_is_an_older_sessions() -> None:
    edge, dec = EdgeNode(bd_seq=3), SparkplugDecoder(DEFAULT_LIMITS)
    feed(dec, edge.birth(BIRTH[:2]), edge.device_birth("pump-7", [("flow", 20, spb.Double, 3.5)]))
    out, _ = feed(dec, edge.death(bd_seq=2))  # the will of the session before: delivered late
    assert rows(out) == []
    out, _ = feed(dec, edge.death())
    assert sorted((t, f, q) for t, f, _, q in rows(out)) == [
        ("plant/press-1", "Motor/RPM", Quality.BAD),
        ("plant/press-1", "Temperature", Quality.BAD),
        ("plant/press-1/pump-7", "flow", Quality.BAD),
    ]
    assert dec.stats.deaths == 1


def test_a_seq_gap_or_data_before_a_birth_asks_for_a_rebirth_at_most_once_an_interval() -> None:
    clock = Clock()
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS, clock=clock)
    _, bad = feed(dec, edge.data([("", 1, spb.Double, 1.0)]))  # never born since we started
    assert (bad, dec.stats.not_born) == (1, 1)
    ((topic, payload),) = dec.take_rebirths()
    request = spb.Payload.FromString(payload)
    assert topic == "spBv1.0/plant/NCMD/press-1"
    assert [(m.name, m.boolean_value) for m in request.metrics] == [(REBIRTH_METRIC, True)]
    feed(dec, edge.birth(BIRTH[:1]), edge.data([("", 1, spb.Double, 2.0)]))
    out, _ = feed(dec, edge.data([("", 1, spb.Double, 3.0)], seq=edge.seq + 5))  # five messages lost
    assert rows(out) == [("plant/press-1", "Motor/RPM", 3.0, 0)]  # taken: the value itself is good
    assert dec.stats.seq_gaps == 1
    assert dec.take_rebirths() == []  # asked less than an interval ago
    clock.t += REBIRTH_INTERVAL_S
    assert [t for t, _ in dec.take_rebirths()] == ["spBv1.0/plant/NCMD/press-1"]
    assert dec.stats.rebirths_requested == 2


def test_an_unknown_alias_is_unusable_and_asks_for_a_rebirth() -> None:
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS)
    feed(dec, edge.birth(BIRTH[:1]))
    out, bad = feed(dec, edge.data([("", 99, spb.Double, 1.0), ("", 1, spb.Double, 7.0)]))
    assert (rows(out), bad, dec.stats.unknown_aliases) == ([("plant/press-1", "Motor/RPM", 7.0, 0)], 1, 1)
    assert len(dec.take_rebirths()) == 1


def test_metrics_past_the_cap_are_unusable() -> None:
    edge, dec = EdgeNode(), SparkplugDecoder(DEFAULT_LIMITS, max_metrics=2)
    out, bad = feed(dec, edge.birth(BIRTH[:3]))
    assert (len(rows(out)), bad) == (2, 1)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("spBv1.0/plant/NDATA/press-1", b"\xff\xff\xff", "not sparkplug b"),
        ("other/plant/NDATA/press-1", b"", "bad topic"),
        ("spBv1.0/plant/DDATA/press-1", b"", "bad topic"),
        ("spBv1.0/plant/NDATA/press-1/dev", b"", "bad topic"),
        ("spBv1.0/plant/XDATA/press-1", EdgeNode().birth([])[1], "bad topic"),
    ],
    # ids without the payloads: a birth carries its timestamp, and pytest-xdist's workers must collect the
    # same test names
    ids=[
        "not-sparkplug",
        "other-namespace",
        "device-message-without-device",
        "node-message-with-device",
        "unknown-message-type",
    ],
)
def test_bad_messages_are_refused_with_the_reason(topic: str, payload: bytes, reason: str) -> None:
    dec = SparkplugDecoder(DEFAULT_LIMITS)
    feed(dec, EdgeNode().birth([]))
    with pytest.raises(PayloadError) as err:
        feed(dec, (topic, payload))
    assert err.value.reason == reason


def test_commands_and_host_state_are_not_data() -> None:
    dec = SparkplugDecoder(DEFAULT_LIMITS)
    out, bad = feed(dec, ("spBv1.0/plant/NCMD/press-1", b"\x00"), ("spBv1.0/STATE/scada-1", b"{}"))
    assert (rows(out), bad, dec.stats.ignored) == ([], 0, 2)


@pytest.mark.integration
async def test_an_mqtt_adapter_reads_a_sparkplug_group_and_asks_a_gapped_node_for_a_rebirth(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner
) -> None:
    cfg = mqtt_config(broker, topics=[{"template": "spBv1.0/plant/#", "qos": 0, "payload": "sparkplug_b"}])
    runner = AdapterRunner(adapter(cfg), sink, interner, FAST)
    edge = EdgeNode()
    async with (
        serving(runner),
        aiomqtt.Client("127.0.0.1", broker.port, identifier=f"edge-{time.monotonic_ns()}") as pub,
    ):
        await pub.subscribe("spBv1.0/plant/NCMD/#")
        for topic, payload in (
            edge.birth(BIRTH[:2]),
            edge.device_birth("pump-7", [("flow", 20, spb.Double, 3.5)]),
            edge.data([("", 20, spb.Double, 3.75)], device="pump-7"),
        ):
            await pub.publish(topic, payload)
        await wait_until(
            lambda: sink.values("plant/press-1/pump-7", "flow") == [3.5, 3.75], 10, "device data"
        )
        assert sink.values("plant/press-1", "Motor/RPM") == [1450.0]
        await pub.publish(*edge.data([("", 1, spb.Double, 1500.0)], seq=edge.seq + 3))  # a gap
        async with asyncio.timeout(10):
            request = await anext(pub.messages)
        assert str(request.topic) == "spBv1.0/plant/NCMD/press-1"
        await pub.publish(*edge.death())
        await wait_until(lambda: any(r.quality == Quality.BAD for r in sink.rows), 10, "the death applied")
    assert {(r.twin, r.field) for r in sink.rows if r.quality == Quality.BAD} == {
        ("plant/press-1", "Motor/RPM"),
        ("plant/press-1", "Temperature"),
        ("plant/press-1/pump-7", "flow"),
    }
