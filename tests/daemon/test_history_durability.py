"""History keeps every acknowledged reading. Through a real broker and a real node process killed with
SIGKILL mid-stream, the per-field history afterwards holds each reading the broker had published (and the
node therefore eventually acknowledged) exactly once; readings that reach the node together stay apart."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import time
from collections import Counter

import grpc
import paho.mqtt.client as paho
import pytest

from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.daemon.test_mqtt_durability import node_toml, start_node
from tests.ingest.support import Mosquitto, free_port, running

N = 3000
SERIES = 5


def publish(broker: Mosquitto, messages: list[tuple[str, str]], client_id: str) -> None:
    """QoS 1, a steady stream: every message is PUBACKed by the broker before this returns."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)  # type: ignore[attr-defined]
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for i, (topic, payload) in enumerate(messages):
            info = client.publish(topic, payload, qos=1)
            if i % 50 == 0 or i == len(messages) - 1:
                info.wait_for_publish(timeout=30)
                assert info.is_published()
                time.sleep(0.01)
    finally:
        client.loop_stop()
        client.disconnect()


async def history_values(api_port: int, twins: list[str], field: str) -> list[tuple[int, float]]:
    """Every raw (timestamp, value) the node's history holds for these twins' field; [] if it is not up."""
    channel, stub = connect(Address("127.0.0.1", api_port))
    out: list[tuple[int, float]] = []
    async with channel:
        try:
            for twin in twins:
                reply = await stub.ReadHistory(
                    api_pb2.HistoryRequest(
                        twin_id=twin, field=field, start_ms=1, end_ms=1 << 62, resolution="raw", limit=10**6
                    ),
                    timeout=5,
                )
                out.extend(zip(reply.ts_ms, reply.values, strict=True))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return []
    return out


async def wait_subscribed(broker: Mosquitto, api_port: int, probe: str) -> None:
    """Until the node's persistent session receives what is published (a message sent before the node has
    subscribed is acknowledged by the broker and never delivered to it)."""
    deadline = time.monotonic() + 60
    while await received(api_port) == 0:
        assert time.monotonic() < deadline, "the node never received a probe message"
        await asyncio.to_thread(publish, broker, [("site/probe/v", probe)], "pub-probe")
        await asyncio.sleep(0.2)


async def received(api_port: int) -> int:
    channel, stub = connect(Address("127.0.0.1", api_port))
    async with channel:
        try:
            return int((await stub.Status(api_pb2.StatusRequest(), timeout=2)).received)
        except grpc.aio.AioRpcError:
            return 0


@pytest.mark.integration
async def test_sigkill_mid_stream_loses_no_acknowledged_reading_from_history(tmp_path: pathlib.Path) -> None:
    broker = Mosquitto(tmp_path)
    twins = [f"h{k}" for k in range(SERIES)]
    t0_ms = int(time.time() * 1000) - N  # recent: inside the raw retention, never in the future
    # Source timestamps, so a redelivery (a reading applied but not yet acknowledged when the node died) is
    # the same reading again, and must count once.
    messages = [(f"site/h{i % SERIES}/v", json.dumps({"value": float(i), "ts": t0_ms + i})) for i in range(N)]
    with running(broker):
        cfg = tmp_path / "node.toml"
        api_port = free_port()
        cfg.write_text(node_toml(tmp_path / "data", broker, api_port, history=True, payload="json"))
        node = start_node(cfg)
        try:
            await wait_subscribed(broker, api_port, json.dumps({"value": -1.0, "ts": t0_ms}))
            publisher = asyncio.create_task(asyncio.to_thread(publish, broker, messages, "pub-history"))
            while await received(api_port) < N // 3:  # kill while readings flow  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            node.send_signal(signal.SIGKILL)
            node.wait(10)
            await publisher  # the broker queues the rest for the node's persistent session
            node = start_node(cfg)
            deadline = time.monotonic() + 60
            got: list[tuple[int, float]] = []
            while time.monotonic() < deadline:
                got = await history_values(api_port, twins, "v")
                if len(got) >= N:
                    break
                await asyncio.sleep(0.5)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
    counts = Counter(value for _, value in got)
    missing = [i for i in range(N) if counts[float(i)] == 0]
    repeated = [v for v, n in counts.items() if n > 1]
    assert not missing, f"{len(missing)} acknowledged readings missing from history, e.g. {missing[:5]}"
    assert not repeated, f"{len(repeated)} readings in history twice, e.g. {repeated[:5]}"
    assert sorted(ts for ts, _ in got) == [t0_ms + i for i in range(N)]


@pytest.mark.integration
async def test_readings_that_arrive_together_are_all_kept(tmp_path: pathlib.Path) -> None:
    """Plain numbers carry no timestamp: the node stamps them on receipt. Ten published while the node was
    down arrive in one burst, possibly within one millisecond; they are ten readings, not one."""
    broker = Mosquitto(tmp_path)
    with running(broker):
        cfg = tmp_path / "node.toml"
        api_port = free_port()
        cfg.write_text(node_toml(tmp_path / "data", broker, api_port, history=True))
        node = start_node(cfg)  # once, so the broker knows the persistent session ...
        try:
            await wait_subscribed(broker, api_port, "-1")
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
        # ... and queues for it while the node is down.
        await asyncio.to_thread(
            publish, broker, [("site/burst/v", str(float(i))) for i in range(10)], "pub-burst"
        )
        node = start_node(cfg)
        try:
            deadline = time.monotonic() + 30
            got: list[tuple[int, float]] = []
            while time.monotonic() < deadline and len(got) < 10:
                await asyncio.sleep(0.3)
                got = await history_values(api_port, ["burst"], "v")
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
    assert sorted(v for _, v in got) == [float(i) for i in range(10)]
