"""MQTT ingest benchmark: the adapter + pipeline + store against bare aiomqtt and paho subscribers.

Runs against one mosquitto broker started here (loopback). Figures:

1. One reading per message (MQTT 5 and 3.1.1, QoS 0 and 1): drain rate of a backlog of N messages queued for
   each subscriber's persistent session, so the subscriber (not the publisher) is the bottleneck. The pipeline
   applies every reading to a real ``drsdtp._core.Store`` and, for QoS 1, acknowledges only after that; the
   bare clients just parse the number. Ratio = pipeline / bare client (goal >= 90 %).
2. Batched JSON payloads: readings/s into the store (goal >= 200k readings/s).
3. Latency at a paced 2,000 msg/s: publish (timestamp in the payload) -> applied, p50/p99 (ms resolution).

usage: python benches/bench_ingest_mqtt.py [--messages 50000] [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiomqtt
import paho.mqtt.client as paho
from bench_ingest_support import StoreSink, fmt_rate, loadavg, median, mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drsdtp._core import Store
from drsdtp.adapters import build_adapter
from drsdtp.ingest.latency import LatencyWindow
from drsdtp.ingest.runner import AdapterRunner
from drsdtp.supervisor import Backoff

# ---- publisher (a separate process: python bench_ingest_mqtt.py publish ...) -----------------------------


def publish(port: int, qos: int, n: int, kind: str, rate: float, per_msg: int) -> None:
    acked = 0
    lock = threading.Condition()

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            lock.notify_all()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}", protocol=paho.MQTTv5)
    c.on_publish = on_publish
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    for i in range(n):
        if kind == "one":
            topic, payload = f"bench/d{i % 100}/temp", f"{i}.5"
        elif kind == "batch":
            now = int(time.time() * 1000)
            items = [
                {"twin": f"d{(i * per_msg + j) % 1000}", "field": f"f{j % 10}", "value": j + 0.5, "ts": now}
                for j in range(per_msg)
            ]
            topic, payload = "gw/g1/batch", json.dumps(items)
        else:  # latency
            topic, payload = f"lat/d{i % 100}/temp", json.dumps({"value": i, "ts": time.time() * 1000.0})
        with lock:  # bound un-acked messages (paho runs out of 16-bit packet ids at ~65k)
            while i - acked > 20_000:
                lock.wait()
        c.publish(topic, payload, qos=qos)
        if rate:
            delay = t0 + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    with lock:
        while acked < n:
            lock.wait(timeout=1)
    c.disconnect()
    c.loop_stop()


def run_publisher(port: int, qos: int, n: int, kind: str, rate: float = 0.0, per_msg: int = 1) -> None:
    args = [sys.executable, __file__, "publish", str(port), str(qos), str(n), kind, str(rate), str(per_msg)]
    subprocess.run(args, check=True, timeout=600)


# ---- subscribers ------------------------------------------------------------------------------------------


V5 = "5"


def session_props(expiry: int = 3600) -> Properties:
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = expiry
    return p


def paho_session(port: int, cid: str, qos: int, n: int | None, protocol: str) -> float:
    """Register (n None) or drain n queued messages; returns seconds from connect to the n-th message."""
    count = 0
    done = threading.Event()

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe("bench/+/+", qos=qos)

    def on_subscribe(c: Any, u: Any, mid: Any, rc: Any, props: Any) -> None:
        if n is None:
            done.set()

    def on_message(c: Any, u: Any, m: Any) -> None:
        nonlocal count
        float(m.payload)
        count += 1
        if count == n:
            done.set()

    v5 = protocol == V5
    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else False,
    )
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    t0 = time.perf_counter()
    if v5:
        c.connect("127.0.0.1", port, clean_start=False, properties=session_props())
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    if not done.wait(timeout=300):
        raise RuntimeError(f"paho got {count} of {n}")
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return elapsed


async def aiomqtt_session(port: int, cid: str, qos: int, n: int | None, protocol: str) -> float:
    t0 = time.perf_counter()
    kw: dict[str, Any] = (
        {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": session_props()}
        if protocol == V5
        else {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
    )
    async with aiomqtt.Client("127.0.0.1", port, identifier=cid, **kw) as c:
        await c.subscribe("bench/+/+", qos=qos)
        count = 0
        if n is not None:
            async for m in c.messages:
                float(m.payload)
                count += 1
                if count == n:
                    break
        return time.perf_counter() - t0


def pipeline_runner(
    port: int, cid: str, topics: list[dict[str, Any]], store: Store, protocol: str = V5
) -> AdapterRunner:
    cfg = {
        "type": "mqtt",
        "name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "protocol": protocol,
        "client_id": cid,
        "topics": topics,
        "ingest": {"stale_after_s": 3600.0},
    }
    return AdapterRunner(build_adapter(cfg, "adapters[0]"), StoreSink(store), store, Backoff(0.05, 1.0))


async def pipeline_session(runner: AdapterRunner, target: int | None) -> float:
    """Run until ``target`` readings are applied (None: until connected); seconds from start."""
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(runner.run())
        if target is None:
            await runner.supervisor.wait_connected()
        else:
            deadline = t0 + 300
            while runner.pipeline.stats.applied < target:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"pipeline applied {runner.pipeline.stats.applied} of {target}")
                await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        task.cancel()
    return elapsed


# ---- phases -------------------------------------------------------------------------------------------


async def one_per_message(port: int, n: int, reps: int) -> None:
    print(f"\n1) one reading per message, drain of {n:,} queued messages (median of {reps})")
    for protocol in (V5, "3.1.1"):
        for qos in (0, 1):
            topics = [{"template": "bench/{twin}/{field}", "payload": "number", "qos": qos}]
            rates: dict[str, list[float]] = {"paho": [], "aiomqtt": [], "pipeline": []}
            for rep in range(reps):  # interleaved, so background load hits every subscriber alike
                for name in rates:
                    cid = f"{name}-v{protocol}-q{qos}-r{rep}"
                    if name == "paho":
                        await asyncio.to_thread(paho_session, port, cid, qos, None, protocol)
                        await asyncio.to_thread(run_publisher, port, qos, n, "one")
                        elapsed = await asyncio.to_thread(paho_session, port, cid, qos, n, protocol)
                    elif name == "aiomqtt":
                        await aiomqtt_session(port, cid, qos, None, protocol)
                        await asyncio.to_thread(run_publisher, port, qos, n, "one")
                        elapsed = await aiomqtt_session(port, cid, qos, n, protocol)
                    else:
                        store = Store(1)
                        await pipeline_session(pipeline_runner(port, cid, topics, store, protocol), None)
                        await asyncio.to_thread(run_publisher, port, qos, n, "one")
                        runner = pipeline_runner(port, cid, topics, store, protocol)
                        elapsed = await pipeline_session(runner, n)
                        assert runner.pipeline.stats.invalid == 0
                    rates[name].append(n / elapsed)
            med = {k: median(v) for k, v in rates.items()}
            print(
                f"   MQTT {protocol:5} QoS {qos}: paho {fmt_rate(med['paho']):>9}  aiomqtt "
                f"{fmt_rate(med['aiomqtt']):>9}  pipeline->store {fmt_rate(med['pipeline']):>9}  | "
                f"pipeline/aiomqtt {med['pipeline'] / med['aiomqtt']:4.0%}  "
                f"pipeline/paho {med['pipeline'] / med['paho']:4.0%}"
            )


async def batched(port: int, messages: int, per_msg: int, reps: int) -> None:
    total = messages * per_msg
    what = f"{messages:,} messages x {per_msg} readings = {total:,} readings"
    print(f"\n2) batched JSON: {what}, QoS 1, median of {reps}")
    topics = [{"template": "gw/+/batch", "qos": 1, "payload": "json_batch", "ts_path": "ts", "ts_unit": "ms"}]
    rates = []
    for rep in range(reps):
        store = Store(1)
        cid = f"batch-r{rep}"
        await pipeline_session(pipeline_runner(port, cid, topics, store), None)
        await asyncio.to_thread(run_publisher, port, 1, messages, "batch", 0.0, per_msg)
        runner = pipeline_runner(port, cid, topics, store)
        elapsed = await pipeline_session(runner, total)
        sink = runner.pipeline
        assert sink.stats.invalid == 0, sink.stats.invalid_by_reason
        rates.append(total / elapsed)
    rate = median(rates)
    print(f"   readings into the store: {fmt_rate(rate)}  (goal 200,000/s: {rate / 200_000:.2f}x)")


async def latency(port: int, seconds: float, rate: float) -> None:
    n = int(seconds * rate)
    print(f"\n3) latency at {rate:,.0f} msg/s for {seconds:.0f} s ({n:,} messages), publish -> applied")
    for qos in (0, 1):
        topics = [
            {
                "template": "lat/{twin}/{field}",
                "qos": qos,
                "payload": "json",
                "ts_path": "ts",
                "ts_unit": "ms",
            }
        ]
        runner = pipeline_runner(port, f"lat-q{qos}", topics, Store(1))
        runner.pipeline.stats.latency = LatencyWindow(n)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(runner.run())
            await runner.supervisor.wait_connected()
            await asyncio.to_thread(run_publisher, port, qos, n, "latency", rate)
            while runner.pipeline.stats.applied < n:  # noqa: ASYNC110 (polling a counter, once per 10 ms)
                await asyncio.sleep(0.01)
            task.cancel()
        p = runner.pipeline.stats.latency.percentiles((50.0, 99.0, 100.0))
        st = runner.pipeline.stats
        print(
            f"   QoS {qos}: p50 {p[50.0]:.1f} ms  p99 {p[99.0]:.1f} ms  max {p[100.0]:.1f} ms  "
            f"(applied {st.applied:,} in {st.batches:,} core calls)"
        )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args()
    n, reps = (5_000, 1) if args.quick else (args.messages, args.reps)
    print(f"drsdtp MQTT ingest benchmark; load average {loadavg()} on {os.cpu_count()} CPUs")
    with mosquitto() as port:
        await one_per_message(port, n, reps)
        await batched(port, 100 if args.quick else 1000, 500, reps)
        await latency(port, 2.0 if args.quick else 10.0, 2000.0)
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        port_, qos_, n_, kind_, rate_, per_ = sys.argv[2:8]
        publish(int(port_), int(qos_), int(n_), kind_, float(rate_), int(per_))
    else:
        asyncio.run(main())
