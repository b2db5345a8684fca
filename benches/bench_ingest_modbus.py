"""Modbus TCP ingest benchmark: polls/s of a real node (adapter, pipeline, its durable sink) against a bare
pymodbus client.

A server process serves 100 holding registers. The bare client reads the 100-register block sequentially
(one request in flight, as the adapter does). The node's adapter polls a map of 50 float32 values (the same
100 registers, planned into one block read) as fast as it can; the node makes every value durable (store,
write-ahead log, history, intelligence).

Also printed: this process's CPU time (every thread) per poll, node vs bare (goal: at most 1.5x). The
polls/s ratio swings with the machine's load (a loaded box slows the bare client's round trips; an idle one
lets it run at the server's pace while the node stays CPU-bound), the CPU per poll much less: it is what the
node must cut. To show where that CPU goes, the node's Modbus adapter also runs alone in the same run (its
real session, polls and decoding into batches that are then dropped: no pipeline, no store): the node's CPU
per poll less the adapter's is what the pipeline and the node's commit path (WAL, history, intelligence)
cost per poll.

usage: python benches/bench_ingest_modbus.py [--seconds 5] [--reps 3]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest_support import fmt_rate, ingesting_node, median, run_with_server
from bench_report import Goal, Row, emit
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drsdtp.adapters import build_adapter
from drsdtp.adapters.modbus import ModbusAdapter


async def serve(port: int) -> None:
    dev = SimDevice(id=1, simdata=[SimData(address=0, count=100, values=0x4148, datatype=DataType.REGISTERS)])
    await ModbusTcpServer(dev, address=("127.0.0.1", port)).serve_forever()


async def bare(port: int, seconds: float) -> tuple[float, float]:
    """Polls/s and this process's CPU seconds per poll."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    warm_until = time.monotonic() + 0.5  # as the node's run is timed after 0.5 s of polls
    while time.monotonic() < warm_until:
        await client.read_holding_registers(0, count=100, device_id=1)
    n, t0, cpu0 = 0, time.monotonic(), time.process_time()
    while time.monotonic() - t0 < seconds:
        rr = await client.read_holding_registers(0, count=100, device_id=1)
        assert not rr.isError()
        n += 1
    cpu = time.process_time() - cpu0
    client.close()
    return n / (time.monotonic() - t0), cpu / n


def adapter_config(port: int) -> dict[str, object]:
    registers = [{"field": f"v{i}", "address": 2 * i, "data_type": "float32"} for i in range(50)]
    return {
        "type": "modbus",
        "name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "twin": "meter",
        "poll_interval_s": 0,
        "max_block": 100,
        "registers": registers,
    }


async def adapter_alone(port: int, seconds: float) -> tuple[float, float]:
    """The node's Modbus adapter without the node: its session's polls, each batch dropped."""
    adapter = build_adapter(adapter_config(port), "adapters[0]")
    assert isinstance(adapter, ModbusAdapter)
    async with adapter.session() as polls:
        warm_until, readings = time.monotonic() + 0.5, 0
        async for batch in polls:
            readings += len(batch)
            if time.monotonic() >= warm_until:
                break
        p0, t0, cpu0 = adapter.stats.messages, time.monotonic(), time.process_time()
        async for batch in polls:
            readings += len(batch)
            if time.monotonic() - t0 >= seconds:
                break
        n, cpu = adapter.stats.messages - p0, time.process_time() - cpu0
        rate = n / (time.monotonic() - t0)
    assert adapter.stats.bad_reads == 0 and readings > 0
    return rate, cpu / max(n, 1)


async def pipeline(port: int, seconds: float) -> tuple[float, float]:
    """Polls/s the node's adapter made and this process's CPU seconds per poll (every node thread)."""
    async with ingesting_node(adapter_config(port)) as runner:
        adapter = runner.adapter
        await runner.supervisor.wait_connected()
        await asyncio.sleep(0.5)
        p0, t0, cpu0 = adapter.stats.messages, time.monotonic(), time.process_time()
        await asyncio.sleep(seconds)
        polls, cpu = adapter.stats.messages - p0, time.process_time() - cpu0
        rate = polls / (time.monotonic() - t0)
        assert runner.pipeline.stats.applied > 0
        assert adapter.stats.bad_reads == 0
    return rate, cpu / max(polls, 1)


async def measure(port: int, seconds: float, reps: int) -> None:
    runs = {"pymodbus": bare, "adapter": adapter_alone, "node": pipeline}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):  # interleaved, so background load hits them alike
        for name, run in runs.items():
            rate, per_poll = await run(port, seconds)
            rates[name].append(rate)
            cpu[name].append(per_poll * 1000)
    b, p = median(rates["pymodbus"]), median(rates["node"])
    cb, ca, cp = median(cpu["pymodbus"]), median(cpu["adapter"]), median(cpu["node"])
    print(f"   100-register polls/s, median of {reps}: bare pymodbus {fmt_rate(b)}  node {fmt_rate(p)}")
    print(f"   = {fmt_rate(p * 50)} float32 readings made durable; ratio node/pymodbus {p / b:.0%}")
    print(f"   CPU per poll (this process, every thread): bare {cb:.3f} ms  node {cp:.3f} ms"
          f"  (its adapter alone {ca:.3f} ms, {fmt_rate(median(rates['adapter']))} polls;"
          f" pipeline and commit path {cp - ca:.3f} ms)")  # fmt: skip
    emit("bench_ingest_modbus", [
        Row.of("Modbus polls vs bare pymodbus", p, "polls/s", Goal(">=", 0.9, on="ratio"),
               baseline=b, baseline_name="pymodbus"),
        Row.of("Modbus CPU per poll vs bare pymodbus", cp, "ms", Goal("<=", 1.5, on="ratio"),
               baseline=cb, baseline_name="pymodbus"),
        Row.of("Modbus adapter alone, CPU per poll", ca, "ms", None, baseline=cb, baseline_name="pymodbus"),
    ])  # fmt: skip


if __name__ == "__main__":
    run_with_server(__file__, "Modbus", serve, measure, seconds=5.0)
