"""Sparkplug B DDATA into the twin, against the JSON path in the same run.

1. Decode: per message of ``--metrics`` readings (default 100), through ``MqttAdapter.decode`` (topic
   routing, limits, the batch the pipeline gets): a Sparkplug DDATA by alias, the same readings as a
   ``json_batch`` payload, and bare ``Payload.ParseFromString`` of the DDATA bytes (the floor any Sparkplug
   decoder pays).
2. Into the twin: a real node (every service of ``drsdtp run``, in this process) drains ``--messages``
   messages queued for its MQTT session on a mosquitto broker (QoS 1), once as Sparkplug (an NBIRTH and a
   DBIRTH, then DDATA by alias) and once as the same readings in ``json_batch`` messages; metrics/s from its
   session's start to the last reading durable in its store. Ratio = Sparkplug / JSON (goal >= 1x: the
   binary format by alias should not cost more than JSON with names).

usage: python benches/bench_sparkplug.py [--metrics 100] [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import paho.mqtt.client as paho
from bench_ingest_support import fmt_rate, ingesting_node, loadavg, mosquitto, wait_applied
from bench_report import Goal, Row, emit
from paho.mqtt.enums import CallbackAPIVersion

from drsdtp.adapters import build_adapter
from drsdtp.adapters.mqtt import Arrival, MqttAdapter
from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb
from tests.ingest.sparkplug_edge import EdgeNode, Metric


def per_call_us(fn: Callable[[], object], min_s: float = 0.2, repeats: int = 5) -> float:
    n = 1
    while timeit.timeit(fn, number=n) < min_s:
        n *= 2
    return min(timeit.repeat(fn, number=n, repeat=repeats)) / n * 1e6


def adapter(payload: str, template: str) -> MqttAdapter:
    a = build_adapter(
        {
            "type": "mqtt",
            "name": "bench",
            "host": "127.0.0.1",
            "client_id": "bench",
            "topics": [{"template": template, "qos": 0, "payload": payload}],
        },
        "adapters[0]",
    )
    assert isinstance(a, MqttAdapter)
    return a


def decode(n: int, rows: list[Row]) -> None:
    now = int(time.time() * 1000)
    edge = EdgeNode()
    metrics: list[Metric] = [(f"m{i}", i + 1, spb.Double, float(i)) for i in range(n)]
    sp = adapter("sparkplug_b", "spBv1.0/plant/#")
    birth = [Arrival(*edge.birth([]), now), Arrival(*edge.device_birth("dev", metrics), now)]
    sp.decode(birth)
    data_topic, data = edge.data([("", i + 1, spb.Double, float(i) + 0.5) for i in range(n)], device="dev")
    ddata = [Arrival(data_topic, data, now)]
    edge.seq -= 1  # decode the same DDATA again and again without a seq gap each time

    def sparkplug() -> object:
        sp._stats.messages = 0
        dec = sp.settings.topics[0].decoder
        dec._nodes[("plant", "press-1")].seq = None  # type: ignore[attr-defined]
        return sp.decode(ddata)

    js = adapter("json_batch", "site/batch")
    items = [{"twin": "plant/press-1/dev", "field": f"m{i}", "value": i + 0.5, "ts": now} for i in range(n)]
    body = json.dumps(items).encode()
    jmsg = [Arrival("site/batch", body, now)]
    assert len(sp.decode(ddata)) == n == len(js.decode(jmsg))

    t_sp = per_call_us(sparkplug)
    t_js = per_call_us(lambda: js.decode(jmsg))
    t_pb = per_call_us(lambda: spb.Payload.FromString(data))
    print(f"{n} readings per message")
    print(f"  bare protobuf parse    {t_pb:8.1f} us/msg  {n / t_pb:6.2f} M metrics/s (floor)")
    print(f"  sparkplug_b DDATA      {t_sp:8.1f} us/msg  {n / t_sp:6.2f} M metrics/s")
    print(f"  json_batch             {t_js:8.1f} us/msg  {n / t_js:6.2f} M metrics/s")
    print(f"  Sparkplug / JSON       {t_js / t_sp:.2f}x the JSON path's rate")
    rows.append(Row.of("Sparkplug DDATA decode vs JSON batch", n / t_sp * 1e6, "metrics/s",
                       baseline=n / t_js * 1e6, baseline_name="json_batch decode"))  # fmt: skip


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publishes ``messages`` in order at QoS 1 and waits for every PUBACK."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sp-pub-{time.monotonic_ns()}")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=120)
    finally:
        c.disconnect()
        c.loop_stop()


def node_adapter(port: int, cid: str, template: str, payload: str) -> dict[str, Any]:
    topic: dict[str, Any] = {"template": template, "qos": 1, "payload": payload}
    if payload == "json_batch":
        topic.update(ts_path="ts", ts_unit="ms")
    return {
        "type": "mqtt",
        "name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "client_id": cid,
        "topics": [topic],
        "ingest": {"stale_after_s": 3600.0},
    }


async def drain(
    port: int, adapter: dict[str, Any], messages: list[tuple[str, bytes]], readings: int
) -> float:
    """A node registers its session and stops; ``messages`` are queued for it; a node on the same data dir
    drains them. Returns readings/s from its session's start to the last one durable."""
    with tempfile.TemporaryDirectory() as d:
        async with ingesting_node(adapter, d) as runner:
            await runner.supervisor.wait_connected()
        await asyncio.to_thread(publish_all, port, messages)
        async with ingesting_node(adapter, d) as runner:
            elapsed = await wait_applied(runner, readings)
            st = runner.pipeline.stats
            assert st.invalid == 0 and st.rejected == 0, st.invalid_by_reason
            return readings / elapsed


async def into_the_twin(n: int, count: int, rows: list[Row]) -> None:
    print(f"\n{count:,} messages x {n} metrics queued for a node's session, drained into its twins (QoS 1)")
    now = int(time.time() * 1000)
    devices = 10
    edge = EdgeNode(group="bench")
    sp: list[tuple[str, bytes]] = [edge.birth([])]
    for d in range(devices):
        sp.append(edge.device_birth(f"dev{d}", [(f"m{i}", i + 1, spb.Double, 0.0) for i in range(n)]))
    for k in range(count):
        sp.append(
            edge.data([("", i + 1, spb.Double, k + i + 0.5) for i in range(n)], device=f"dev{k % devices}")
        )
    js: list[tuple[str, bytes]] = []
    for k in range(count):
        twin = f"bench/press-1/dev{k % devices}"
        items = [{"twin": twin, "field": f"m{i}", "value": k + i + 0.5, "ts": now} for i in range(n)]
        js.append(("gw/g1/batch", json.dumps(items).encode()))
    total = count * n
    # The births' own values are readings too: the node applies them before the data.
    births = adapter("sparkplug_b", "spBv1.0/bench/#").decode(
        [Arrival(t, p, now) for t, p in sp[: devices + 1]]
    )
    with mosquitto() as port:
        config = node_adapter(port, "sp", "spBv1.0/bench/#", "sparkplug_b")
        rate_sp = await drain(port, config, sp, total + len(births.twins))
        rate_js = await drain(port, node_adapter(port, "js", "gw/+/batch", "json_batch"), js, total)
    print(f"  sparkplug_b DDATA    {fmt_rate(rate_sp):>12} metrics/s into the twin")
    print(f"  json_batch           {fmt_rate(rate_js):>12} readings/s into the twin")
    print(f"  Sparkplug / JSON     {rate_sp / rate_js:.2f}x   (load {loadavg()})")
    goal = Goal(">=", 1.0, on="ratio")
    rows.append(Row.of("Sparkplug DDATA into the twin vs the JSON path", rate_sp, "metrics/s", goal,
                       baseline=rate_js, baseline_name="json_batch"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=100, help="readings per message")
    parser.add_argument("--messages", type=int, default=2000, help="messages per path into the twin")
    args = parser.parse_args()
    rows: list[Row] = []
    decode(args.metrics, rows)
    asyncio.run(into_the_twin(args.metrics, args.messages, rows))
    emit("bench_sparkplug", rows)


if __name__ == "__main__":
    main()
