"""End to end through a real broker and a real node process: QoS 1 readings are acknowledged to the broker
only after the node's write-ahead log made them durable, so killing the node with SIGKILL mid-stream loses
none of them: the broker redelivers what was not acknowledged, the restarted node recovers what was."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time

import grpc
import paho.mqtt.client as paho
import pytest

from drsdtp.client import connect
from drsdtp.config import Address, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.ingest.support import Mosquitto, free_port, running

ROOT = pathlib.Path(__file__).parents[2]
N = 3000


def node_toml(
    data: pathlib.Path, broker: Mosquitto, api_port: int, *, history: bool = False, payload: str = "number"
) -> str:
    return f"""
node_id = "mqtt-1"
data_dir = "{data}"
[listen]
api = "127.0.0.1:{api_port}"
metrics = "127.0.0.1:0"
peer = "127.0.0.1:0"
[history]
enabled = {str(history).lower()}
[wal]
fsync_interval_ms = 50  # a wide group-commit window: acks sent before the commit would be lost by SIGKILL
[[adapters]]
type = "mqtt"
name = "broker"
host = "127.0.0.1"
port = {broker.port}
client_id = "drsdtp-durability-test"
persistent_session = true
[adapters.reconnect]
initial_s = 0.05
max_s = 0.5
[[adapters.topics]]
template = "site/{{twin}}/{{field}}"
qos = 1
payload = "{payload}"
{'ts_path = "ts"' if payload == "json" else ""}
"""


def start_node(cfg: pathlib.Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "drsdtp", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def publish(broker: Mosquitto, start: int, stop: int) -> None:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
        client_id=f"pub-{start}",
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for i in range(start, stop):
            info = client.publish(f"site/m{i % 10}/v{i}", str(float(i)), qos=1)
            if i % 50 == 0 or i == stop - 1:
                info.wait_for_publish(timeout=30)  # a steady stream, not one burst
                assert info.is_published()
                time.sleep(0.01)
    finally:
        client.loop_stop()
        client.disconnect()


async def count_applied(api_port: int) -> int:
    channel, stub = connect(Address("127.0.0.1", api_port))
    async with channel:
        try:
            twins = await stub.ListTwins(api_pb2.ListTwinsRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return 0
        # Every twin also holds its _scope; the probe twin is not part of the stream.
        return sum(t.fields - 1 for t in twins.twins if t.twin_id != "probe")


async def subscribed(broker: Mosquitto, api_port: int) -> None:
    """Returns once the node applied a probe: its subscription (and persistent session) is live, so the
    broker keeps everything published from now on for it. A fixed sleep is not enough on a loaded machine:
    messages published before the node subscribed never reach it."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="probe")  # type: ignore[attr-defined]
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            client.publish("site/probe/up", "1", qos=1)
            channel, stub = connect(Address("127.0.0.1", api_port))
            async with channel:
                try:
                    await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="probe"), timeout=2)
                    return
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)
        raise AssertionError("the node never applied the probe: is it subscribed?")
    finally:
        client.loop_stop()
        client.disconnect()


async def applied(data: pathlib.Path) -> dict[str, object]:
    cfg = parse_config(
        {
            "node_id": "mqtt-1",
            "data_dir": str(data),
            "history": {"enabled": False},
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        }
    )
    async with Node(cfg) as node:
        return {
            f: v for t in node.store.twins() for f, v in node.store.fields(t).items() if f.startswith("v")
        }


@pytest.mark.integration
async def test_sigkill_mid_stream_loses_no_qos1_reading(tmp_path: pathlib.Path) -> None:
    broker = Mosquitto(tmp_path)
    with running(broker):
        cfg = tmp_path / "node.toml"
        api_port = free_port()
        cfg.write_text(node_toml(tmp_path / "data", broker, api_port))
        node = start_node(cfg)
        try:
            await subscribed(broker, api_port)
            publisher = asyncio.create_task(asyncio.to_thread(publish, broker, 0, N))
            # Kill while the stream flows: readings received, some applied, some waiting for their commit.
            while True:
                if await count_applied(api_port) >= N // 3:
                    break
                await asyncio.sleep(0.02)
            node.send_signal(signal.SIGKILL)
            node.wait(10)
            await publisher  # the broker queues the rest for the node's persistent session
            node = start_node(cfg)
            # The restarted node drains what the broker kept for its session.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await count_applied(api_port) >= N:
                    break
                await asyncio.sleep(0.5)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
    got = await applied(tmp_path / "data")
    missing = [i for i in range(N) if got.get(f"v{i}") != float(i)]
    assert not missing, f"{len(missing)} QoS 1 readings lost, e.g. {missing[:5]}"
