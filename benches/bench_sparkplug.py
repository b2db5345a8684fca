"""Sparkplug B DDATA into readings, against the JSON path and bare protobuf parsing, in one run.

Per message of ``--metrics`` readings (default 100), all through ``MqttAdapter.decode`` (topic routing,
limits, the batch the pipeline gets): a Sparkplug DDATA by alias, the same readings as a ``json_batch``
payload, and bare ``Payload.ParseFromString`` of the DDATA bytes (the floor any Sparkplug decoder pays).

usage: python benches/bench_sparkplug.py [--metrics 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=100)
    n = parser.parse_args().metrics
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


if __name__ == "__main__":
    main()
