"""MQTT ingest benchmark: a real node (adapter, pipeline, the node's durable sink) against bare paho and
aiomqtt subscribers on the same mosquitto broker.

Runs against one mosquitto broker started here (loopback). Figures:

1. One reading per message (MQTT 5 and 3.1.1, QoS 0 and 1): drain rate of a backlog of N messages queued for
   each subscriber's persistent session, so the subscriber (not the publisher) is the bottleneck; the rate
   runs from the first message taken to the N-th. The node (every service of `drsdtp run`, in this process)
   writes each reading to its store, its write-ahead log, history and intelligence and, for QoS 1,
   acknowledges only once that is durable; the bare clients just parse the number. Ratio = node / bare paho
   (goal >= 90 %).
2. Batched JSON payloads: readings/s made durable by the node (goal >= 200k readings/s).
3. Latency at a paced 2,000 msg/s: publish (timestamp in the payload) -> durable, p50/p99 (ms resolution).

usage: python benches/bench_ingest_mqtt.py [--messages 50000] [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiomqtt
import paho.mqtt.client as paho
from bench_ingest_support import fmt_rate, ingesting_node, loadavg, median, mosquitto, wait_applied
from bench_report import Goal, Row, emit
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drsdtp.ingest.latency import LatencyWindow

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
    """Register (n None) or drain n queued messages; returns messages/s from the connect call to the n-th
    message (as the node's rate runs from its connect attempt)."""
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
    t0 = time.monotonic()
    if v5:
        c.connect("127.0.0.1", port, clean_start=False, properties=session_props())
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    if not done.wait(timeout=300):
        raise RuntimeError(f"paho got {count} of {n}")
    elapsed = time.monotonic() - t0
    c.disconnect()
    c.loop_stop()
    return count / elapsed


async def aiomqtt_session(port: int, cid: str, qos: int, n: int | None, protocol: str) -> float:
    kw: dict[str, Any] = (
        {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": session_props()}
        if protocol == V5
        else {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
    )
    t0 = time.monotonic()
    async with aiomqtt.Client("127.0.0.1", port, identifier=cid, **kw) as c:
        count = 0
        if n is None:  # the session keeps it: subscribing again would wait behind the whole queue
            await c.subscribe("bench/+/+", qos=qos)
        else:
            async for m in c.messages:
                float(m.payload)
                count += 1
                if count == n:
                    break
        return count / (time.monotonic() - t0)


def adapter_config(port: int, cid: str, topics: list[dict[str, Any]], protocol: str = V5) -> dict[str, Any]:
    return {
        "type": "mqtt",
        "name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "protocol": protocol,
        "client_id": cid,
        "topics": topics,
        "ingest": {"stale_after_s": 3600.0},
    }


async def node_drain(port: int, cid: str, topics: list[dict[str, Any]], protocol: str, qos: int, n: int,
                     kind: str = "one", per_msg: int = 1) -> float:  # fmt: skip
    """A node registers its session and stops; n messages are queued for it; a node on the same data dir
    drains them. Returns readings/s from its session's start to the last one durable."""
    cfg = adapter_config(port, cid, topics, protocol)
    with tempfile.TemporaryDirectory() as d:
        async with ingesting_node(cfg, d) as runner:
            await runner.supervisor.wait_connected()
        await asyncio.to_thread(run_publisher, port, qos, n, kind, 0.0, per_msg)
        async with ingesting_node(cfg, d) as runner:
            total = n * per_msg
            elapsed = await wait_applied(runner, total)
            st = runner.pipeline.stats
            assert st.invalid == 0 and st.rejected == 0, st.invalid_by_reason
            return total / elapsed


# ---- phases -------------------------------------------------------------------------------------------


async def one_per_message(port: int, n: int, reps: int, rows: list[Row]) -> None:
    print(f"\n1) one reading per message, drain of {n:,} queued messages (median of {reps})")
    for protocol in (V5, "3.1.1"):
        for qos in (0, 1):
            topics = [{"template": "bench/{twin}/{field}", "payload": "number", "qos": qos}]
            rates: dict[str, list[float]] = {"paho": [], "aiomqtt": [], "node": []}
            for rep in range(reps):  # interleaved, so background load hits every subscriber alike
                for name in rates:
                    cid = f"{name}-v{protocol}-q{qos}-r{rep}"
                    if name == "paho":
                        await asyncio.to_thread(paho_session, port, cid, qos, None, protocol)
                        await asyncio.to_thread(run_publisher, port, qos, n, "one")
                        rate = await asyncio.to_thread(paho_session, port, cid, qos, n, protocol)
                    elif name == "aiomqtt":
                        await aiomqtt_session(port, cid, qos, None, protocol)
                        await asyncio.to_thread(run_publisher, port, qos, n, "one")
                        rate = await aiomqtt_session(port, cid, qos, n, protocol)
                    else:
                        rate = await node_drain(port, cid, topics, protocol, qos, n)
                    rates[name].append(rate)
            med = {k: median(v) for k, v in rates.items()}
            print(
                f"   MQTT {protocol:5} QoS {qos}: paho {fmt_rate(med['paho']):>9}  aiomqtt "
                f"{fmt_rate(med['aiomqtt']):>9}  node {fmt_rate(med['node']):>9}  | "
                f"node/aiomqtt {med['node'] / med['aiomqtt']:4.0%}  "
                f"node/paho {med['node'] / med['paho']:4.0%}"
            )
            version = "" if protocol == V5 else f" {protocol}"  # MQTT 5: the rows
            rows.append(
                Row.of(
                    f"MQTT{version} QoS {qos}, node vs bare paho",
                    med["node"],
                    "msg/s",
                    Goal(">=", 0.9, on="ratio"),
                    baseline=med["paho"],
                    baseline_name="paho",
                )
            )
            rows.append(Row.of(f"MQTT{version} QoS {qos}, node vs bare aiomqtt", med["node"], "msg/s",
                               baseline=med["aiomqtt"], baseline_name="aiomqtt"))  # fmt: skip


async def batched(port: int, messages: int, per_msg: int, reps: int, rows: list[Row]) -> None:
    total = messages * per_msg
    what = f"{messages:,} messages x {per_msg} readings = {total:,} readings"
    print(f"\n2) batched JSON: {what}, QoS 1, median of {reps}")
    topics = [{"template": "gw/+/batch", "qos": 1, "payload": "json_batch", "ts_path": "ts", "ts_unit": "ms"}]
    rates = [await node_drain(port, f"batch-r{rep}", topics, V5, 1, messages, "batch", per_msg)
             for rep in range(reps)]  # fmt: skip
    rate = median(rates)
    print(f"   readings made durable by the node: {fmt_rate(rate)}  (goal 200,000/s: {rate / 200_000:.2f}x)")
    rows.append(Row.of("MQTT batched JSON, readings made durable", rate, "readings/s", Goal(">=", 200_000)))


async def latency(port: int, seconds: float, rate: float, rows: list[Row]) -> None:
    n = int(seconds * rate)
    print(f"\n3) latency at {rate:,.0f} msg/s for {seconds:.0f} s ({n:,} messages), publish -> durable")
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
        async with ingesting_node(adapter_config(port, f"lat-q{qos}", topics)) as runner:
            runner.pipeline.stats.latency = LatencyWindow(n)
            await runner.supervisor.wait_connected()
            await asyncio.to_thread(run_publisher, port, qos, n, "latency", rate)
            await wait_applied(runner, n)
            st = runner.pipeline.stats
            p = st.latency.percentiles((50.0, 99.0, 100.0))
        print(
            f"   QoS {qos}: p50 {p[50.0]:.1f} ms  p99 {p[99.0]:.1f} ms  max {p[100.0]:.1f} ms  "
            f"(applied {st.applied:,} in {st.batches:,} core calls)"
        )
        for pct in (50.0, 99.0):
            what = f"MQTT QoS {qos} publish -> durable at {rate:,.0f} msg/s, p{pct:.0f}"
            rows.append(Row.of(what, p[pct], "ms"))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args()
    n, reps = (5_000, 1) if args.quick else (args.messages, args.reps)
    print(f"drsdtp MQTT ingest benchmark; load average {loadavg()} on {os.cpu_count()} CPUs")
    rows: list[Row] = []
    with mosquitto() as port:
        await one_per_message(port, n, reps, rows)
        await batched(port, 100 if args.quick else 1000, 500, reps, rows)
        await latency(port, 2.0 if args.quick else 10.0, 2000.0, rows)
    emit("bench_ingest_mqtt", rows)
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        port_, qos_, n_, kind_, rate_, per_ = sys.argv[2:8]
        publish(int(port_), int(qos_), int(n_), kind_, float(rate_), int(per_))
    else:
        asyncio.run(main())
