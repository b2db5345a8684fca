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

Rate: ``--clients`` clients (16) issue commands at once, each to its own actuator (its own register,
variable or topic), the node's commands sharing fsyncs and the adapter's one connection; "bare" is as many
tasks doing the bare round trip at once over one connection of the library (as the adapter has one).
Commands per second over the whole run, ours against bare; and the CPU this process spent per command in
that run (node, device server and clients, every thread; the device side is in process for both), ours
against bare: on a loaded machine the rate swings with everything else that runs, the CPU per command much
less, and at 16 clients the CPU is what limits the rate, so "cpu" is the rate ratio the hardware allows.
"fsync/cmd" and "rec/cmd": the node's log fsyncs and records per command in that run (a command alone
takes two fsyncs; concurrent commands share the log's group commits, so fewer each under load).

Batched ("batch" rows): the same CLIENTS actuators, driven by ``--batchers`` clients (1: one
``IssueCommands`` call carries one command to each of the CLIENTS actuators, ``wait_s``: answered once all
are applied), as many commands in flight as in the rate run: the gRPC call, the API guard and the waiter
are paid once per batch, and the batch's records and outcomes share group commits. Commands per second and
CPU per command against the same bare rate run; "p50/p99" there is a batch's round trip (every command of
it issued and applied). Two batchers of 8 measured worse than one of 16 (1.2-1.5 ms of CPU per command
against 0.7-0.9 on Modbus): the commands of one batch move through the node in step.

Serial: our firmware (the real .elf in simavr, paced to the wall clock, its UART at 115200 baud on a pty):
commands switch the board's output on and off, one at a time; the board acks each with the state it left
(the echo). "bare" writes the same command line (an id as long as a command's) on the same pty and reads
up to the board's ack, in the same run (before the node opens the port: it holds it exclusively), with an id
as long as the tag a command goes by on the line (8 hex digits), and again with a command's whole id (24)
for what the tags save. No rate run: a board reads its commands one by one off one line.

usage: python benches/bench_commands.py [--commands 200] [--rate-commands 1600] [--clients 16]
       [--batchers 1] [--protocols modbus,opcua,mqtt,serial]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
from asyncua import ua
from asyncua.client.client import Client as OpcClient
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.adapters.modbus_codec import encode
from drsdtp.adapters.serial import TAG_HEX
from drsdtp.client import connect
from drsdtp.config import Address, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.firmware.sim import Line, SimBoard, build_firmware
from tests.ingest.modbus_server import ModbusServer
from tests.ingest.opcua_server import OpcServer
from tests.ingest.support import Mosquitto, running

Timed = Callable[[int, int], Awaitable[None]]  # (actuator, i): one round trip
Batched = Callable[[list[int], int], Awaitable[None]]  # (actuators, i): one command to each, one call
CLIENTS = 16
BATCHERS = 1
RATE_COMMANDS = 1600


@dataclass
class Samples:
    bare: list[float]  # serial round trips, ms
    ours: list[float]
    nowal: list[float]  # ours without the log (no fsync)
    bare_rate: float  # round trips per second with CLIENTS at once
    ours_rate: float
    bare_cpu: float  # CPU ms (this process, every thread) per round trip during the rate run
    ours_cpu: float
    fsyncs: float  # the node's log fsyncs (group commits) per command in the rate run
    records: float  # records appended to the node's log per command in the rate run
    batch: list[float] | None = None  # batch round trips (ms) in the batched rate run
    batch_rate: float = float("nan")  # commands per second, batched
    batch_cpu: float = float("nan")  # CPU ms per command, batched
    batch_fsyncs: float = float("nan")
    batch_records: float = float("nan")  # log records per command, batched


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(n: int, one: Timed) -> list[float]:
    for i in range(5):  # warm-up
        await one(0, 10_000 + i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await one(0, i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def rate(one: Timed, node: Node | None = None) -> tuple[float, float, float, float]:
    """Round trips per second with CLIENTS clients at once, each on its own actuator, RATE_COMMANDS in
    all (enough for a run of a few seconds: 200 took half a second, which one neighbour's burst skewed),
    and the
    CPU ms they cost this process (node, server and clients: each side's whole cost). On a loaded machine
    the rate swings with what else runs; the CPU per round trip much less, and once the CPU is the limit
    (16 clients on 2 cores) its ratio is the rate ratio the hardware allows."""
    each = max(2, RATE_COMMANDS // CLIENTS)

    async def client(k: int) -> None:
        for i in range(each):
            await one(k, 20_000 + i)

    await asyncio.gather(*(one(k, 30_000) for k in range(CLIENTS)))  # warm-up
    log0 = (0, 0) if node is None else log_counts(node)
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    done = each * CLIENTS
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    log1 = (0, 0) if node is None else log_counts(node)
    fsyncs, records = ((b - a) / done for a, b in zip(log0, log1, strict=True))
    return done / elapsed, cpu * 1000 / done, fsyncs, records


async def batch_rate(batch: Batched, node: Node) -> tuple[list[float], float, float, float, float]:
    """The rate run's commands (as many, as many in flight) issued as batches by BATCHERS clients, each
    owning CLIENTS / BATCHERS actuators: (batch round trips ms, commands/s, CPU ms per command, fsyncs
    and log records per command)."""
    owned = [list(range(CLIENTS))[b::BATCHERS] for b in range(BATCHERS)]
    rounds = max(2, RATE_COMMANDS // CLIENTS)
    times: list[float] = []

    async def batcher(ks: list[int]) -> None:
        for i in range(rounds):
            t0 = time.perf_counter()
            await batch(ks, 40_000 + i)
            times.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(batch(ks, 50_000) for ks in owned))  # warm-up
    fsyncs0, records0 = log_counts(node)
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(batcher(ks) for ks in owned))
    done = rounds * CLIENTS
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    fsyncs1, records1 = log_counts(node)
    return times, done / elapsed, cpu * 1000 / done, (fsyncs1 - fsyncs0) / done, (records1 - records0) / done


def log_counts(node: Node) -> tuple[int, int]:
    """(fsyncs, records) of the node's write-ahead log so far."""
    stats = node.durable.stats
    return stats.commits, stats.records


async def bare_samples(n: int, one: Timed) -> tuple[list[float], tuple[float, float]]:
    serial = await measure(n, one)
    return serial, (await rate(one))[:2]


@contextlib.asynccontextmanager
async def node_with(
    tmp: Path, adapter: dict[str, Any], write: Callable[[int], dict[str, Any]], *, wal: bool = True
) -> AsyncIterator[tuple[Timed, Batched, Node]]:
    actuators = [
        {
            "twin": "bench-1",
            "field": f"sp{k}",
            "node": "bench",
            "adapter": adapter["name"],
            "tolerance": 1e-6,
            "ack_timeout_s": 5.0,
            "write": write(k),
        }
        for k in range(CLIENTS)
    ]
    if "client_id" in adapter:  # each node its own MQTT session (see bench_mqtt)
        adapter = {**adapter, "client_id": f"{adapter['client_id']}-{tmp.name}"}
    config = {
        "node_id": "bench",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "wal": {"fsync_interval_ms": 1, "enabled": wal},
        "adapters": [{**adapter, "reconnect": {"initial_s": 0.05, "max_s": 0.2}}],
        "actuators": actuators,
    }
    async with Node(parse_config(config)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:

            async def one(k: int, i: int) -> None:
                request = api_pb2.CommandIssueRequest(
                    twin_id="bench-1",
                    action=f"sp{k}",
                    value=api_pb2.FieldValue(f64=float(i + 1)),
                    wait_s=10,
                )
                reply = await stub.IssueCommand(request)
                assert reply.command.state == "applied", reply.command

            async def batch(ks: list[int], i: int) -> None:
                commands = [
                    api_pb2.CommandIssueRequest(
                        twin_id="bench-1", action=f"sp{k}", value=api_pb2.FieldValue(f64=float(i + 1))
                    )
                    for k in ks
                ]
                reply = await stub.IssueCommands(api_pb2.CommandIssueBatch(commands=commands, wait_s=10))
                assert all(r.command.state == "applied" for r in reply.results), reply

            yield one, batch, node


async def ours(
    n: int,
    tmp: Path,
    bare: tuple[list[float], tuple[float, float]],
    adapter: dict[str, Any],
    write: Callable[[int], dict[str, Any]],
) -> Samples:
    """The node's round trips (serial, then CLIENTS at once), then serial with the write-ahead log off
    (what fsync costs)."""
    async with node_with(tmp / "node", adapter, write) as (one, batch, node):
        ours_ms = await measure(n, one)
        ours_rate, ours_cpu, fsyncs, records = await rate(one, node)
        batch_ms, b_rate, b_cpu, b_fsyncs, b_records = await batch_rate(batch, node)
    async with node_with(tmp / "node-nowal", adapter, write, wal=False) as (one, _, _):
        nowal_ms = await measure(n, one)
    return Samples(
        bare[0], ours_ms, nowal_ms, bare[1][0], ours_rate, bare[1][1], ours_cpu, fsyncs, records,
        batch_ms, b_rate, b_cpu, b_fsyncs, b_records,
    )  # fmt: skip


async def bench_modbus(n: int, tmp: Path) -> Samples:
    server = ModbusServer({1: [0] * (10 + 2 * CLIENTS)})
    await server.start()
    try:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
        await client.connect()

        async def bare(k: int, i: int) -> None:
            words = encode(float(i + 1), "float32", "ABCD")
            assert not (await client.write_registers(10 + 2 * k, words, device_id=1)).isError()
            rr = await client.read_holding_registers(10 + 2 * k, count=2, device_id=1)
            assert rr.registers == words

        bare_samples_ = await bare_samples(n, bare)
        client.close()
        registers = [
            {"field": f"sp{k}", "address": 10 + 2 * k, "data_type": "float32"} for k in range(CLIENTS)
        ]
        # A plant-like poll interval: the adapter reads a written point back at once, not at the next poll.
        adapter = {"type": "modbus", "name": "plc", "host": "127.0.0.1", "port": server.port,
                   "twin": "bench-1", "poll_interval_s": 1.0, "registers": registers}  # fmt: skip
        return await ours(
            n, tmp, bare_samples_, adapter, lambda k: {"address": 10 + 2 * k, "data_type": "float32"}
        )
    finally:
        server.release.set()
        await server.stop()


async def bench_opcua(n: int, tmp: Path) -> Samples:
    server = OpcServer()
    await server.start()
    assert server.server is not None
    objects = server.server.nodes.objects
    for k in range(CLIENTS):
        name = f"Sp{k}"
        var = await objects.add_variable(server.node(name), f"{server.idx}:{name}", 0.0)
        await var.set_writable()
    try:
        client = OpcClient(server.url)
        await client.connect()
        variables = [client.get_node(server.node(f"Sp{k}")) for k in range(CLIENTS)]

        async def bare(k: int, i: int) -> None:
            await variables[k].write_value(ua.DataValue(ua.Variant(float(i + 1), ua.VariantType.Double)))
            assert await variables[k].read_value() == float(i + 1)

        bare_samples_ = await bare_samples(n, bare)
        await client.disconnect()
        nodes = [{"node_id": f"ns={server.idx};s=Sp{k}", "field": f"sp{k}"} for k in range(CLIENTS)]
        # A plant-like publishing interval: the adapter reads a written variable back at once.
        adapter = {"type": "opcua", "name": "plc", "url": server.url, "security_policy": "None",
                   "twin": "bench-1", "publishing_interval_ms": 100, "sampling_interval_ms": 0,
                   "nodes": nodes}  # fmt: skip
        return await ours(
            n, tmp, bare_samples_, adapter, lambda k: {"node_id": nodes[k]["node_id"], "type": "Double"}
        )
    finally:
        await server.stop()


def no_delay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY on the client's socket (paho leaves Nagle on: a PUBACK then a PUBLISH waits ~40 ms for
    the peer's delayed ACK), as the node's MQTT adapter does."""
    sock = client._client.socket()
    assert isinstance(sock, socket.socket)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def echo_device(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-device") as client:
        no_delay(client)
        await client.subscribe("site/+/set/+", qos=1)
        async for message in client.messages:
            _, twin, _, field = str(message.topic).split("/")
            await client.publish(f"site/{twin}/{field}", message.payload, qos=1)


async def bench_mqtt(n: int, tmp: Path) -> Samples:
    with running(Mosquitto(tmp, extra_conf="set_tcp_nodelay true\n")) as broker:
        device = asyncio.create_task(echo_device(broker.port))
        await asyncio.sleep(0.5)
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-bare") as client:
                no_delay(client)
                client.pending_calls_threshold = 1000  # CLIENTS publishes at once: no warning each
                await client.subscribe("site/bare-1/+", qos=1)
                echoes: dict[str, asyncio.Queue[bytes]] = {f"sp{k}": asyncio.Queue() for k in range(CLIENTS)}

                async def route() -> None:
                    async for message in client.messages:
                        echoes[str(message.topic).rsplit("/", 1)[1]].put_nowait(bytes(message.payload))

                router = asyncio.create_task(route())

                async def bare(k: int, i: int) -> None:
                    await client.publish(f"site/bare-1/set/sp{k}", str(float(i + 1)), qos=1)
                    assert float(await echoes[f"sp{k}"].get()) == float(i + 1)

                bare_samples_ = await bare_samples(n, bare)
                router.cancel()
            topic = {"template": "site/{twin}/{field}", "qos": 1, "payload": "number"}
            adapter = {"type": "mqtt", "name": "broker", "host": "127.0.0.1", "port": broker.port,
                       "client_id": "bench-node", "topics": [topic]}  # fmt: skip
            write = {"topic": "site/{twin}/set/{field}", "payload": "{value}"}
            return await ours(n, tmp, bare_samples_, adapter, lambda k: write)
        finally:
            device.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await device


@contextlib.asynccontextmanager
async def serial_node(tmp: Path, port: Path, *, wal: bool = True) -> AsyncIterator[Timed]:
    actuator = {"twin": "board-1", "field": "out", "node": "bench", "adapter": "board", "value": "bool",
                "ack_timeout_s": 5.0, "write": {"op": "out"}}  # fmt: skip
    config = {
        "node_id": "bench",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "wal": {"fsync_interval_ms": 1, "enabled": wal},
        "adapters": [{"type": "serial", "name": "board", "port": str(port), "checksum": "required",
                      "devices": {"avr-1": "board-1"}, "reconnect": {"initial_s": 0.05, "max_s": 0.2}}],
        "actuators": [actuator],
    }  # fmt: skip
    async with Node(parse_config(config)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:

            async def one(_: int, i: int) -> None:
                request = api_pb2.CommandIssueRequest(
                    twin_id="board-1", action="out", value=api_pb2.FieldValue(flag=i % 2 == 0), wait_s=10
                )
                reply = await stub.IssueCommand(request)
                assert reply.command.state == "applied", reply.command

            yield one


async def bench_serial(n: int, tmp: Path) -> Samples:
    """Serial round trips only (bare, ours, ours without the log); the rate columns stay empty."""
    await asyncio.to_thread(build_firmware)
    board = await asyncio.to_thread(SimBoard, tmp, speed=1.0)
    try:
        line = Line(board.link)
        try:
            await asyncio.to_thread(line.until, "boot")

            def bare_with(digits: int) -> Timed:
                async def bare(_: int, i: int) -> None:
                    ident = f"{i:0{digits}x}"
                    line.command(ident, "out", i % 2 == 0)
                    frame, _before = await asyncio.to_thread(line.until, "ack", id=ident)
                    assert frame.readings.get("out") == (i % 2 == 0), frame

                return bare

            # As long as a command's id on the line (its tag, 8 hex digits): the same bytes as the node's.
            bare_ms = await measure(n, bare_with(TAG_HEX))
            full_ms = await measure(n, bare_with(24))  # a command's whole id (as sent before the tags)
        finally:
            line.close()
        async with serial_node(tmp / "node", board.link) as one:
            ours_ms = await measure(n, one)
        async with serial_node(tmp / "node-nowal", board.link, wal=False) as one:
            nowal_ms = await measure(n, one)
    finally:
        await asyncio.to_thread(board.close)
    print(f"serial: bare with 24-hex-digit ids p50/p99 {pct(full_ms, 0.5):.2f}/{pct(full_ms, 0.99):.2f} ms")
    nan = float("nan")
    return Samples(bare_ms, ours_ms, nowal_ms, nan, nan, nan, nan, nan, nan)


BENCHES = {"modbus": bench_modbus, "opcua": bench_opcua, "mqtt": bench_mqtt, "serial": bench_serial}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--rate-commands", type=int, default=RATE_COMMANDS)
    parser.add_argument("--batchers", type=int, default=BATCHERS)
    parser.add_argument("--protocols", default=",".join(BENCHES))
    args = parser.parse_args()
    globals()["CLIENTS"] = args.clients
    globals()["RATE_COMMANDS"] = args.rate_commands
    globals()["BATCHERS"] = max(1, min(args.batchers, args.clients))
    heads = ("bare p50", "bare p99", "ours p50", "ours p99", "no-log p50", "no-log p99")
    rates = (f"bare/s x{CLIENTS}", f"ours/s x{CLIENTS}")
    print(
        f"{'protocol':<8} " + " ".join(f"{h:>10}" for h in heads) + f" {'serial':>7}"
        + " ".join(f"{h:>13}" for h in rates) + f" {'rate':>6}"
        + f" {'bare cpu':>9} {'ours cpu':>9} {'cpu':>5} {'fsync/cmd':>9} {'rec/cmd':>7}"
    )  # fmt: skip
    for name in args.protocols.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            s = await BENCHES[name](args.commands, Path(tmp))
        cells = [pct(x, q) for x in (s.bare, s.ours, s.nowal) for q in (0.5, 0.99)]
        serial = statistics.mean(s.bare) / statistics.mean(s.ours)
        head = f"{name:<8} " + " ".join(f"{c:8.2f}ms" for c in cells) + f" {serial:7.0%}"
        if s.ours_rate != s.ours_rate:  # NaN: no rate run (serial)
            print(head)
            continue
        print(
            head
            + f" {s.bare_rate:13.0f} {s.ours_rate:13.0f} {s.ours_rate / s.bare_rate:6.0%}"
            + f" {s.bare_cpu:7.2f}ms {s.ours_cpu:7.2f}ms {s.bare_cpu / s.ours_cpu:5.0%}"
            + f" {s.fsyncs:9.2f} {s.records:7.2f}"
        )  # fmt: skip
        if s.batch:
            size = CLIENTS // BATCHERS
            cells = [pct(s.bare, 0.5), pct(s.bare, 0.99), pct(s.batch, 0.5), pct(s.batch, 0.99)]
            print(
                f"{name + ' batch':<14} x{BATCHERS} batchers of {size}: bare p50/p99 "
                + "/".join(f"{c:.2f}" for c in cells[:2]) + " ms, batch round trip p50/p99 "
                + "/".join(f"{c:.2f}" for c in cells[2:]) + " ms,"
                + f" {s.bare_rate:.0f} vs {s.batch_rate:.0f}/s ({s.batch_rate / s.bare_rate:.0%}),"
                + f" cpu {s.bare_cpu:.2f} vs {s.batch_cpu:.2f} ms ({s.bare_cpu / s.batch_cpu:.0%}),"
                + f" {s.batch_fsyncs:.2f} fsync/cmd, {s.batch_records:.2f} rec/cmd"
            )  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
