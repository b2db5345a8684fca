"""OPC UA ingest benchmark: notifications/s of a real node (adapter, pipeline, its durable sink) against a
bare asyncua client.

A server process holds 100 Double variables and rewrites them as fast as it can (about 12k writes/s on the
reference box: the server is the ceiling). Each client subscribes to all 100 (publishing interval 10 ms,
sampling interval 0, queue size 1000) and counts what it receives over a fixed window.

usage: python benches/bench_ingest_opcua.py [--seconds 8] [--reps 3]
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from bench_ingest_support import fmt_rate, ingesting_node, median, run_with_server
from bench_report import Goal, Row, emit

VARS = 100
NS = "urn:drsdtp:bench"


async def serve(port: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    srv = Server()
    await srv.init()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await srv.register_namespace(NS)
    obj = await srv.nodes.objects.add_object(idx, "Sensors")
    nodes = [
        await obj.add_variable(ua.NodeId.from_string(f"ns={idx};s=s{i}"), f"s{i}", 0.0) for i in range(VARS)
    ]
    async with srv:
        value = 0.0
        while True:
            value += 1.0
            for n in nodes:
                await srv.write_attribute_value(
                    n.nodeid, ua.DataValue(ua.Variant(value, ua.VariantType.Double))
                )
            await asyncio.sleep(0)


async def bare(url: str, seconds: float) -> float:
    async with Client(url) as client:
        idx = await client.get_namespace_index(NS)
        nodes = [client.get_node(f"ns={idx};s=s{i}") for i in range(VARS)]
        sub = await client.create_subscription(10, None, queue_maxsize=1_000_000)
        await sub.subscribe_data_change(nodes, queuesize=1000, sampling_interval=ua.Double(0.0))
        count = 0
        warm_until = time.monotonic() + 1.0
        async with sub:
            async for _ in sub:
                if time.monotonic() >= warm_until:
                    break
            t0 = time.monotonic()
            async for _ in sub:
                count += 1
                if time.monotonic() - t0 >= seconds:
                    break
        return count / (time.monotonic() - t0)


async def pipeline(url: str, seconds: float) -> float:
    nodes = [{"node_id": f"ns=2;s=s{i}", "field": f"s{i}", "queue_size": 1000} for i in range(VARS)]
    cfg = {
        "type": "opcua",
        "name": "bench",
        "url": url,
        "security_policy": "None",
        "publishing_interval_ms": 10,
        "twin": "plc",
        "nodes": nodes,
    }
    async with ingesting_node(cfg) as runner:
        await runner.supervisor.wait_connected()
        await asyncio.sleep(1.0)
        a0, t0 = runner.pipeline.stats.applied, time.monotonic()
        await asyncio.sleep(seconds)
        rate = (runner.pipeline.stats.applied - a0) / (time.monotonic() - t0)
        assert runner.pipeline.stats.invalid == 0
    return rate


async def measure(port: int, seconds: float, reps: int) -> None:
    url = f"opc.tcp://127.0.0.1:{port}/bench/"
    rates: dict[str, list[float]] = {"asyncua": [], "node": []}
    for _ in range(reps):  # interleaved, so background load hits both alike
        rates["asyncua"].append(await bare(url, seconds))
        rates["node"].append(await pipeline(url, seconds))
    b, p = median(rates["asyncua"]), median(rates["node"])
    print(f"   notifications/s (median of {reps}): bare asyncua {fmt_rate(b)}  node (durable) {fmt_rate(p)}")
    print(f"   ratio node/asyncua {p / b:.0%}")
    goal = Goal(">=", 0.9, on="ratio")
    emit("bench_ingest_opcua", [Row.of("OPC UA vs bare asyncua", p, "readings/s", goal, baseline=b,
                                       baseline_name="asyncua")])  # fmt: skip


if __name__ == "__main__":
    run_with_server(__file__, "OPC UA", serve, measure, seconds=8.0)
