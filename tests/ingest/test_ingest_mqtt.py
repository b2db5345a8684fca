"""MQTT adapter against a real mosquitto broker started per test."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import Quality, ReadingBatch
from drsdtp.adapters.mqtt import Arrival, MqttAdapter
from drsdtp.ingest.deadletters import DeadLetterStore
from drsdtp.ingest.runner import AdapterRunner

from .support import FAST, DictInterner, Mosquitto, RecordingSink, password_file, running, serving, wait_until
from .tls import make_pki

pytestmark = pytest.mark.integration


def mqtt_config(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "type": "mqtt",
        "name": "site",
        "host": "127.0.0.1",
        "port": broker.port,
        "client_id": f"drsdtp-test-{time.monotonic_ns()}",
        "topics": [{"template": "site/{twin}/{field}", "qos": 1, "payload": "number"}],
    }
    cfg.update(extra)
    return cfg


def adapter(cfg: dict[str, Any]) -> MqttAdapter:
    a = build_adapter(cfg, "adapters[0]")
    assert isinstance(a, MqttAdapter)
    return a


async def publish(port: int, messages: list[tuple[str, bytes | str]], qos: int = 1) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
        for topic, payload in messages:
            await pub.publish(topic, payload, qos=qos)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_number_payloads_map_topic_segments_to_twin_and_field(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner, protocol: str
) -> None:
    runner = AdapterRunner(adapter(mqtt_config(broker, protocol=protocol)), sink, interner, FAST)
    async with serving(runner):
        await publish(broker.port, [("site/room-1/temp", "21.5"), ("site/room-2/humidity", b"40")])
        await wait_until(lambda: len(sink.rows) == 2, 10, "two readings applied")
    assert sink.values("room-1", "temp") == [21.5]
    assert sink.values("room-2", "humidity") == [40.0]
    assert runner.adapter.stats.acked == 2  # QoS 1 acknowledged, after apply
    assert runner.received == 2
    assert runner.invalid == 0


async def test_json_object_and_batch_payloads(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner
) -> None:
    cfg = mqtt_config(
        broker,
        topics=[
            {
                "template": "dev/{twin}/state",
                "payload": "json",
                "ts_path": "ts",
                "fields": {"temperature": "data.t", "humidity": "data.h"},
            },
            {"template": "dev/{twin}/flat", "payload": "json", "fields": "*", "ts_path": "time"},
            {"template": "gw/+/batch", "qos": 0, "payload": "json_batch", "items_path": "readings"},
        ],
    )
    now_s = time.time()
    batch = {
        "readings": [{"twin": f"r{i}", "field": "t", "value": i, "ts": (now_s - 1) * 1000} for i in range(50)]
    }
    runner = AdapterRunner(adapter(cfg), sink, interner, FAST)
    async with serving(runner):
        await publish(
            broker.port,
            [
                ("dev/boiler/state", json.dumps({"ts": now_s - 2, "data": {"t": 70.5, "h": None}})),
                ("dev/pump/flat", json.dumps({"time": "2030-01-01T00:00:00Z", "rpm": 1200, "on": True})),
                ("gw/g1/batch", json.dumps(batch)),
            ],
        )
        await wait_until(lambda: len(sink.rows) >= 52, 10, "all readings applied")
    assert sink.values("boiler", "temperature") == [70.5]
    [hum] = [r for r in sink.rows if r.field == "humidity"]
    assert hum.quality == Quality.BAD
    assert math.isnan(hum.value)
    assert abs(sink.rows[0].source_ms - (now_s - 2) * 1000) < 1  # timestamp from the payload, in seconds
    # 2030 is in the future: refused as an absurd timestamp, counted, nothing stored for the pump.
    assert not sink.values("pump", "rpm")
    assert runner.pipeline.stats.invalid_by_reason == {"timestamp in the future": 2}
    assert sorted(sink.values(f"r{i}", "t")[0] for i in range(50)) == list(range(50))


async def test_malformed_input_is_counted_and_the_rest_flows(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = mqtt_config(
        broker,
        topics=[
            {"template": "site/{twin}/{field}", "payload": "number"},
            {"template": "json/{twin}/{field}", "payload": "json", "ts_path": "ts"},
            {"template": "unrouted/#", "payload": "number", "twin": "x"},  # no field: cannot be mapped
        ],
    )
    runner = AdapterRunner(adapter(cfg), sink, interner, FAST)
    async with serving(runner):
        await publish(
            broker.port,
            [
                ("site/a/t", "not a number"),  # malformed
                ("site/a/t", "nan"),  # parses, but NaN is refused by validation
                ("site/a/t", "1e999"),  # inf
                ("json/a/t", "{broken"),  # malformed JSON
                ("json/a/t", json.dumps({"value": "warm"})),  # wrong type
                ("json/a/t", json.dumps({"value": 1.0, "ts": 1e300})),  # absurd timestamp
                ("json/a/t", json.dumps({"value": 2.0, "ts": 86400})),  # 1970: too old
                ("unrouted/z", "5"),  # matches a rule that cannot name a field
                ("site/a/t", "7.25"),  # the one good reading
            ],
        )
        await wait_until(lambda: runner.adapter.stats.messages == 9, 10, "all nine messages seen")
        await runner.pipeline.drain()
    assert sink.values("a", "t") == [7.25]
    stats = runner.pipeline.stats
    assert stats.invalid_by_reason == {"not a finite number": 2, "timestamp too old": 1}
    # Refused whole, each a dead letter with its reason: text, broken JSON, wrong type, 1e300 ts, no field.
    assert stats.rejected_by_reason == {
        "not a number": 1,
        "not JSON": 1,
        "no value": 1,
        "bad timestamp": 1,
        "no twin or field": 1,
    }
    letters = runner.pipeline.dead_letters
    assert isinstance(letters, DeadLetterStore)
    assert sorted(letter.source for letter in letters.letters()) == [
        "json/a/t",
        "json/a/t",
        "json/a/t",
        "site/a/t",
        "unrouted/z",
    ]
    assert runner.adapter.stats.malformed == 0  # no message was half usable
    assert runner.invalid == 8
    assert runner.adapter.stats.acked == 9  # every QoS 1 message is acknowledged, even the bad ones
    assert "not a finite number" in caplog.text
    assert "not JSON" in caplog.text


def test_unknown_topic_is_counted(broker: Mosquitto) -> None:
    # Subscriptions come from the templates, so a broker normally sends only matching topics; an unknown one
    # arrives through a bridge or a session that kept an old subscription. Decoding is where it is counted.
    a = adapter(mqtt_config(broker))
    now = int(time.time() * 1000)
    out = a.decode([Arrival("other/x/y", b"1", now), Arrival("site/r/f", b"2", now)])
    assert [(r.source, r.reason, r.payload) for r in out.rejects] == [("other/x/y", "no topic rule", b"1")]
    assert next(iter(out.readings())).value == 2.0


async def test_broker_restart_mid_stream_loses_no_qos1_message(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner
) -> None:
    n = 400
    runner = AdapterRunner(adapter(mqtt_config(broker)), sink, interner, FAST)
    async with serving(runner):
        published = 0

        async def publisher() -> None:
            # At-least-once publisher: on a broken connection it republishes from the first unacked message.
            nonlocal published
            while published < n:
                try:
                    async with aiomqtt.Client(
                        "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5, timeout=2
                    ) as pub:
                        while published < n:
                            await pub.publish("site/line/seq", str(published), qos=1)
                            published += 1
                            await asyncio.sleep(0.002)
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.1)

        pub_task = asyncio.create_task(publisher())
        await wait_until(lambda: published >= n // 3, 10, "a third published")
        await asyncio.to_thread(broker.restart, 0.5)
        restarted = time.monotonic()
        await wait_until(lambda: runner.reconnects >= 1, 10, "adapter reconnected after the restart")
        assert time.monotonic() - restarted < 10
        await pub_task
        await wait_until(
            lambda: set(range(n)) <= {int(v) for v in sink.values("line", "seq")},
            10,
            "every sequence number applied",
        )
    assert runner.supervisor.stats.failures >= 1


async def test_ack_waits_for_apply_so_a_crash_before_apply_loses_nothing(
    broker: Mosquitto, interner: DictInterner
) -> None:
    cfg = mqtt_config(broker)

    class BlockedSink:
        """A core that never finishes applying (the node dies mid-apply)."""

        def __init__(self) -> None:
            self.entered = asyncio.Event()

        async def apply(self, batch: ReadingBatch) -> None:
            self.entered.set()
            await asyncio.Event().wait()

    blocked = BlockedSink()
    first = AdapterRunner(adapter(cfg), blocked, interner, FAST)
    async with serving(first):
        await publish(broker.port, [("site/tank/level", "3.5")])
        await asyncio.wait_for(blocked.entered.wait(), 10)
    assert first.adapter.stats.acked == 0
    # "Restart the node": same client id, persistent session; the broker redelivers the unacked message.
    sink = RecordingSink(interner)
    second = AdapterRunner(adapter(cfg), sink, interner, FAST)
    async with serving(second):
        await wait_until(lambda: sink.values("tank", "level") == [3.5], 10, "redelivered reading applied")
    assert second.adapter.stats.acked == 1


async def test_messages_published_while_the_node_is_down_arrive_later(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner
) -> None:
    cfg = mqtt_config(broker, protocol="3.1.1")
    async with serving(AdapterRunner(adapter(cfg), sink, interner, FAST)):
        pass  # creates the persistent session and its subscription
    await publish(broker.port, [("site/r/v", str(i)) for i in range(20)])
    runner = AdapterRunner(adapter(cfg), sink, interner, FAST)
    async with serving(runner):
        await wait_until(lambda: len(sink.values("r", "v")) == 20, 10, "queued messages delivered")
    assert sink.values("r", "v") == [float(i) for i in range(20)]  # in order


async def test_tls_and_password(tmp_path: Path, sink: RecordingSink, interner: DictInterner) -> None:
    pki = make_pki(tmp_path)
    passwd = password_file(tmp_path / "passwd", "node", "s3cret")
    (tmp_path / "node.pass").write_text("s3cret\n")
    conf = (
        f"cafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        f"password_file {passwd}\n"
    )
    with running(Mosquitto(tmp_path, extra_conf=conf, anonymous=False)) as b:
        cfg = mqtt_config(
            b, username="node", password_file=str(tmp_path / "node.pass"), tls={"ca_file": str(pki.ca_cert)}
        )
        secure = adapter(cfg)
        assert secure.settings.tls is not None
        ctx = secure.settings.tls.context()  # the publisher trusts the same CA
        runner = AdapterRunner(secure, sink, interner, FAST)
        async with serving(runner):
            async with aiomqtt.Client(
                "localhost", b.port, username="node", password="s3cret", tls_context=ctx
            ) as pub:
                await pub.publish("site/secure/t", "1.5", qos=1)
            await wait_until(lambda: sink.values("secure", "t") == [1.5], 10, "reading over TLS")


async def test_wrong_password_is_retried_not_fatal(
    tmp_path: Path, sink: RecordingSink, interner: DictInterner
) -> None:
    passwd = password_file(tmp_path / "passwd", "node", "s3cret")
    with running(Mosquitto(tmp_path, extra_conf=f"password_file {passwd}\n", anonymous=False)) as b:
        runner = AdapterRunner(
            adapter(mqtt_config(b, username="node", password="wrong")), sink, interner, FAST
        )
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(runner.run())
            await wait_until(lambda: runner.supervisor.stats.failures >= 3, 10, "three refused connects")
            task.cancel()
    assert not runner.supervisor.stats.connected
    assert (
        "not authorised" in runner.supervisor.stats.last_error.lower()
        or "auth" in runner.supervisor.stats.last_error.lower()
    )


async def test_unbounded_broker_inflight_resets_the_session_instead_of_growing(
    tmp_path: Path, interner: DictInterner
) -> None:
    # MQTT 3.1.1 has no receive maximum; a broker with unlimited in-flight messages may send more unacked
    # QoS 1 messages than we hold. The adapter resets the session so the broker redelivers them.
    with running(Mosquitto(tmp_path, extra_conf="max_inflight_messages 0\n")) as b:
        cfg = mqtt_config(
            b, protocol="3.1.1", max_unacked=5, max_batch_messages=1, ingest={"buffer_readings": 1}
        )
        gate = asyncio.Event()

        class SlowCore(RecordingSink):
            async def apply(self, batch: ReadingBatch) -> None:
                await gate.wait()
                await super().apply(batch)

        sink = SlowCore(interner)
        runner = AdapterRunner(adapter(cfg), sink, interner, FAST)
        async with serving(runner):
            await publish(b.port, [("site/r/v", str(i)) for i in range(50)])
            await wait_until(lambda: runner.adapter.stats.messages >= 2, 10, "first messages taken")
            await asyncio.sleep(0.2)  # the broker keeps sending; the inbox passes its limit
            gate.set()
            await wait_until(
                lambda: set(sink.values("r", "v")) == {float(i) for i in range(50)},
                10,
                "all 50 applied after the reset",
            )
        assert runner.reconnects >= 1


class GatedSink(RecordingSink):
    """A core that applies nothing until the gate opens: the adapter backs up behind a full buffer."""

    def __init__(self, interner: DictInterner) -> None:
        super().__init__(interner)
        self.gate = asyncio.Event()

    async def apply(self, batch: ReadingBatch) -> None:
        await self.gate.wait()
        await super().apply(batch)


async def backed_up(runner: AdapterRunner, port: int) -> None:
    """Three messages, one batch each, fill the sink, the buffer (one reading) and the adapter's put."""
    taken = runner.adapter.stats
    for i in range(1, 4):
        await publish(port, [("site/block/b", str(i))])
        await wait_until(
            functools.partial(lambda n: taken.messages == n, i), 10, f"blocking message {i} taken"
        )


async def test_each_message_keeps_its_own_receive_time(broker: Mosquitto, interner: DictInterner) -> None:
    sink = GatedSink(interner)
    runner = AdapterRunner(adapter(mqtt_config(broker, ingest={"buffer_readings": 1})), sink, interner, FAST)
    a = runner.adapter
    assert isinstance(a, MqttAdapter)
    async with serving(runner):
        await backed_up(runner, broker.port)
        await publish(broker.port, [("site/early/t", "1")])
        await wait_until(lambda: a.queued_messages == 1, 10, "the first message waiting in the inbox")
        between = int(time.time() * 1000)
        await asyncio.sleep(0.05)
        await publish(broker.port, [("site/late/t", "2")])
        await wait_until(lambda: a.queued_messages == 2, 10, "both waiting, to be drained as one batch")
        sink.gate.set()
        await wait_until(lambda: len(sink.rows) == 5, 10, "everything applied")
    [early] = [r for r in sink.rows if r.twin == "early"]
    [late] = [r for r in sink.rows if r.twin == "late"]
    # Drained together, yet each reading has the time its message arrived (the payloads carry none).
    assert early.source_ms <= between < late.source_ms


async def test_qos0_messages_unread_when_a_session_ends_are_counted_lost(
    broker: Mosquitto, interner: DictInterner
) -> None:
    sink = GatedSink(interner)
    runner = AdapterRunner(adapter(mqtt_config(broker, ingest={"buffer_readings": 1})), sink, interner, FAST)
    a = runner.adapter
    assert isinstance(a, MqttAdapter)
    async with serving(runner):
        await backed_up(runner, broker.port)
        await publish(broker.port, [("site/q0/v", str(i)) for i in range(50)], qos=0)
        await publish(broker.port, [("site/q1/v", str(i)) for i in range(10)], qos=1)
        await wait_until(lambda: a.queued_messages == 60, 10, "all sixty waiting in the inbox")
    # The session ended with them unread: the QoS 1 ones come back from the broker, the QoS 0 ones cannot.
    assert a.stats.qos0_lost == 50
