"""The probe's poison through a real mosquitto into a real node (store, write-ahead log, dead letters):
QoS 1 and QoS 0 poison interleaved with 2,000 good readings. Every good reading is applied, every poison
message is dead-lettered once and acknowledged, the session never resets, and after a restart nothing comes
back from the broker while the letters are still there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drsdtp.adapters.mqtt import MqttAdapter
from drsdtp.config import NodeConfig, parse_config
from drsdtp.node.node import Node

from .support import Mosquitto, wait_until

pytestmark = pytest.mark.integration

GOOD = 2000


def node_config(data: Path, broker: Mosquitto) -> NodeConfig:
    return parse_config(
        {
            "node_id": "poison-1",
            "data_dir": str(data),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "history": {"enabled": False},
            "adapters": [
                {
                    "type": "mqtt",
                    "name": "site",
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "client_id": "drsdtp-poison-test",
                    "reconnect": {"initial_s": 0.05, "max_s": 0.5},
                    "topics": [
                        {"template": "g/{twin}/{field}", "qos": 1, "payload": "number"},
                        {"template": "j/{twin}/{field}", "qos": 1, "payload": "json", "ts_path": "ts"},
                    ],
                }
            ],
        }
    )


def poison(k: int) -> bytes:
    """The probe's three kinds, each message distinct (k) so every letter can be told apart."""
    huge = "1" + "0" * (400 + k)
    return [
        b"[" * (2000 + k),
        f'{{"value": {huge}}}'.encode(),
        f'{{"value": 1.0, "ts": {huge}}}'.encode(),
    ][k % 3]


async def publish_all(port: int) -> tuple[list[tuple[str, bytes, int]], int]:
    """2,000 good readings, QoS alternating, with a poison message after every 100th; returns the poison
    (topic, payload, qos) and how many QoS 1 messages were sent."""
    sent: list[tuple[str, bytes, int]] = []
    qos1 = 0
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
        for i in range(GOOD):
            qos = i % 2
            await pub.publish(f"g/m{i % 10}/v{i}", str(float(i)), qos=qos)
            qos1 += qos
            if i % 100 == 50:
                k = len(sent)
                topic, p_qos = f"j/bad/f{k}", k % 2
                await pub.publish(topic, poison(k), qos=p_qos)
                sent.append((topic, poison(k), p_qos))
                qos1 += p_qos
            if i % 50 == 0:
                await asyncio.sleep(0.005)  # a steady stream, not one burst
    return sent, qos1


def applied(node: Node) -> int:
    return sum(node.store.get(f"m{i % 10}", f"v{i}") == float(i) for i in range(GOOD))


async def test_poison_is_dead_lettered_once_acked_and_never_stalls_the_good_readings(
    tmp_path: Path, broker: Mosquitto
) -> None:
    cfg = node_config(tmp_path / "data", broker)
    async with Node(cfg) as node:
        runner = node.intake.service.runners["site"]
        async with asyncio.timeout(10):
            await runner.supervisor.wait_connected()
        poisoned, qos1 = await publish_all(broker.port)
        await wait_until(lambda: applied(node) == GOOD, 60, "every good reading applied")
        await wait_until(lambda: len(node.dead_letters) == len(poisoned), 10, "every poison message stored")
        await wait_until(lambda: runner.adapter.stats.acked == qos1, 10, "every QoS 1 message acknowledged")
        letters = node.dead_letters.letters()
        assert sorted(lt.source for lt in letters) == sorted(topic for topic, _, _ in poisoned)
        for letter in letters:
            payload = await node.dead_letters.payload(letter.id)
            assert (letter.source, payload) in {(t, p) for t, p, _ in poisoned}
        reasons = {lt.reason for lt in letters}
        assert reasons == {"too deep", "number too long"}
        stats = runner.pipeline.stats
        assert stats.rejected == len(poisoned)  # once each
        assert sum(stats.rejected_by_reason.values()) == len(poisoned)
        assert runner.supervisor.stats.failures == 0  # no session reset, no reconnect loop
        assert runner.reconnects == 0
        assert runner.adapter.stats.messages == GOOD + len(poisoned)
        assert runner.adapter.stats.dropped == 0
        assert isinstance(runner.adapter, MqttAdapter)
        assert runner.adapter.stats.qos0_lost == 0
        stored_once = node.dead_letters.counts()
        assert sum(v for (src, _, outcome), v in stored_once.items() if outcome == "stored") == len(poisoned)
    # A restart: every QoS 1 message was acknowledged, so the broker redelivers nothing; the letters stay.
    async with Node(cfg) as node:
        runner = node.intake.service.runners["site"]
        async with asyncio.timeout(10):
            await runner.supervisor.wait_connected()
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish("g/after/restart", "1.5", qos=1)  # a marker: everything before it came first
        await wait_until(lambda: node.store.get("after", "restart") == 1.5, 10, "the marker applied")
        assert runner.adapter.stats.messages == 1
        assert len(node.dead_letters) == len(poisoned)
        assert runner.pipeline.stats.rejected == 0


async def test_redelivered_poison_is_stored_and_counted_once(tmp_path: Path, broker: Mosquitto) -> None:
    """The node is stopped after a poison message is dead-lettered but before its PUBACK reached the broker
    (the sink holds the batch): the broker redelivers it with DUP set, and it is recognised."""
    cfg = node_config(tmp_path / "data", broker)
    first = Node(cfg)
    gate = asyncio.Event()
    inner = first.intake.sink.apply

    async def held(batch: Any) -> None:
        await gate.wait()
        await inner(batch)

    first.intake.sink.apply = held  # type: ignore[method-assign]
    async with first:
        runner = first.intake.service.runners["site"]
        async with asyncio.timeout(10):
            await runner.supervisor.wait_connected()
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish("g/a/b", "1", qos=1)  # held in the sink: the batch's ack waits
            await pub.publish("j/bad/x", json.dumps({"value": "warm"}), qos=1)
        await wait_until(lambda: len(first.dead_letters) == 1, 10, "the poison stored")
        assert runner.adapter.stats.acked == 0
    async with Node(cfg) as node:
        runner = node.intake.service.runners["site"]
        await wait_until(lambda: node.store.get("a", "b") == 1.0, 10, "the good message redelivered")
        await wait_until(lambda: runner.adapter.stats.messages >= 2, 10, "the poison redelivered")
        await node.intake.service.runners["site"].pipeline.drain()
        assert len(node.dead_letters) == 1  # not stored twice
        assert runner.pipeline.stats.rejected == 0  # nor counted twice
        assert node.dead_letters.counts()[("site", "no value", "duplicate")] == 1
        await wait_until(lambda: runner.adapter.stats.acked == 2, 10, "both acknowledged this time")
