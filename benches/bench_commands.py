"""Command round trip per protocol: API -> actuator write -> reported echo -> ``applied``, against the bare
library's write and read-back in the same run.

For each protocol a real server runs in this process (pymodbus, asyncua, mosquitto with a device played by
an MQTT client that echoes each command as the reported value) and a node (in process, its gRPC API on
loopback) executes commands issued with ``IssueCommand(wait_s=...)``, one at a time, each a new value (so
each is written); then again with the node's write-ahead log off ("no-log": what the two fsyncs a command
needs cost, its record before the write and its outcome before the reply). "bare" is the library alone
doing the same round trip by hand: write the value, then read it back (Modbus: write_registers +
read_holding_registers; OPC UA: write_value + read_value; MQTT: publish the command, receive the device's
echo).

usage: python benches/bench_commands.py [--commands 200] [--protocols modbus,opcua,mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
from asyncua import ua
from asyncua.client.client import Client as OpcClient
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.adapters.modbus_codec import encode
from drsdtp.client import connect
from drsdtp.config import Address, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.ingest.modbus_server import ModbusServer
from tests.ingest.opcua_server import OpcServer
from tests.ingest.support import Mosquitto, running

Timed = Callable[[int], Awaitable[None]]
Samples = tuple[list[float], list[float], list[float]]  # bare, ours, ours without the log (no fsync)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(n: int, one: Timed) -> list[float]:
    for i in range(5):  # warm-up
        await one(10_000 + i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await one(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


@contextlib.asynccontextmanager
async def node_with(
    tmp: Path, adapter: dict[str, Any], write: dict[str, Any], *, wal: bool = True
) -> AsyncIterator[Timed]:
    actuator = {"twin": "bench-1", "field": "setpoint", "node": "bench", "adapter": adapter["name"],
                "tolerance": 1e-6, "ack_timeout_s": 5.0, "write": write}  # fmt: skip
    config = {
        "node_id": "bench",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "wal": {"fsync_interval_ms": 1, "enabled": wal},
        "adapters": [{**adapter, "reconnect": {"initial_s": 0.05, "max_s": 0.2}}],
        "actuators": [actuator],
    }
    async with Node(parse_config(config)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:

            async def one(i: int) -> None:
                request = api_pb2.CommandIssueRequest(
                    twin_id="bench-1",
                    action="setpoint",
                    value=api_pb2.FieldValue(f64=float(i + 1)),
                    wait_s=10,
                )
                reply = await stub.IssueCommand(request)
                assert reply.command.state == "applied", reply.command

            yield one


async def ours(
    n: int, tmp: Path, adapter: dict[str, Any], write: dict[str, Any]
) -> tuple[list[float], list[float]]:
    """The node's round trips: as configured, then with the write-ahead log off (what fsync costs)."""
    async with node_with(tmp / "node", adapter, write) as one:
        ours_ms = await measure(n, one)
    async with node_with(tmp / "node-nowal", adapter, write, wal=False) as one:
        nowal_ms = await measure(n, one)
    return ours_ms, nowal_ms


async def bench_modbus(n: int, tmp: Path) -> Samples:
    server = ModbusServer({1: [0] * 32})
    await server.start()
    try:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
        await client.connect()

        async def bare(i: int) -> None:
            words = encode(float(i + 1), "float32", "ABCD")
            assert not (await client.write_registers(10, words, device_id=1)).isError()
            rr = await client.read_holding_registers(10, count=2, device_id=1)
            assert rr.registers == words

        bare_ms = await measure(n, bare)
        client.close()
        register = {"field": "setpoint", "address": 10, "data_type": "float32"}
        # A plant-like poll interval: the adapter reads a written point back at once, not at the next poll.
        adapter = {"type": "modbus", "name": "plc", "host": "127.0.0.1", "port": server.port,
                   "twin": "bench-1", "poll_interval_s": 1.0, "registers": [register]}  # fmt: skip
        return bare_ms, *await ours(n, tmp, adapter, {"address": 10, "data_type": "float32"})
    finally:
        server.release.set()
        await server.stop()


async def bench_opcua(n: int, tmp: Path) -> Samples:
    server = OpcServer()
    await server.start()
    assert server.server is not None
    await (server.server.get_node(server.node("Temp"))).set_writable()
    try:
        client = OpcClient(server.url)
        await client.connect()
        var = client.get_node(server.node("Temp"))

        async def bare(i: int) -> None:
            await var.write_value(ua.DataValue(ua.Variant(float(i + 1), ua.VariantType.Double)))
            assert await var.read_value() == float(i + 1)

        bare_ms = await measure(n, bare)
        await client.disconnect()
        node_id = f"ns={server.idx};s=Temp"
        # A plant-like publishing interval: the adapter reads a written variable back at once.
        adapter = {"type": "opcua", "name": "plc", "url": server.url, "security_policy": "None",
                   "twin": "bench-1", "publishing_interval_ms": 100, "sampling_interval_ms": 0,
                   "nodes": [{"node_id": node_id, "field": "setpoint"}]}  # fmt: skip
        return bare_ms, *await ours(n, tmp, adapter, {"node_id": node_id, "type": "Double"})
    finally:
        await server.stop()


async def echo_device(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-device") as client:
        await client.subscribe("site/+/set/+", qos=1)
        async for message in client.messages:
            _, twin, _, field = str(message.topic).split("/")
            await client.publish(f"site/{twin}/{field}", message.payload, qos=1)


async def bench_mqtt(n: int, tmp: Path) -> Samples:
    with running(Mosquitto(tmp)) as broker:
        device = asyncio.create_task(echo_device(broker.port))
        await asyncio.sleep(0.5)
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-bare") as client:
                await client.subscribe("site/bare-1/setpoint", qos=1)
                messages = client.messages

                async def bare(i: int) -> None:
                    await client.publish("site/bare-1/set/setpoint", str(float(i + 1)), qos=1)
                    echo = await anext(messages)
                    assert float(bytes(echo.payload)) == float(i + 1)

                bare_ms = await measure(n, bare)
            topic = {"template": "site/{twin}/{field}", "qos": 1, "payload": "number"}
            adapter = {"type": "mqtt", "name": "broker", "host": "127.0.0.1", "port": broker.port,
                       "client_id": "bench-node", "topics": [topic]}  # fmt: skip
            write = {"topic": "site/{twin}/set/{field}", "payload": "{value}"}
            return bare_ms, *await ours(n, tmp, adapter, write)
        finally:
            device.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await device


BENCHES = {"modbus": bench_modbus, "opcua": bench_opcua, "mqtt": bench_mqtt}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--protocols", default="modbus,opcua,mqtt")
    args = parser.parse_args()
    heads = ("bare p50", "bare p99", "ours p50", "ours p99", "no-log p50", "no-log p99")
    print(f"{'protocol':<8} " + " ".join(f"{h:>10}" for h in heads) + f" {'vs bare':>8} {'no-log':>7}")
    for name in args.protocols.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            bare_ms, ours_ms, nowal_ms = await BENCHES[name](args.commands, Path(tmp))
        cells = [pct(s, q) for s in (bare_ms, ours_ms, nowal_ms) for q in (0.5, 0.99)]
        rate = [statistics.mean(bare_ms) / statistics.mean(s) for s in (ours_ms, nowal_ms)]
        print(f"{name:<8} " + " ".join(f"{c:8.2f}ms" for c in cells) + f" {rate[0]:8.0%} {rate[1]:7.0%}")


if __name__ == "__main__":
    asyncio.run(main())
