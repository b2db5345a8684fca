"""What the payload guards and the dead-letter store cost.

1. Decoding with the limits checked (size, digit runs, nesting: drsdtp.adapters.payloads.load_json) against
   bare ``json.loads`` of the same bytes, for a small JSON object and a 1,000-item JSON batch.
2. ``MqttAdapter.decode`` per message for number, JSON and batch payloads (topic routing included).
3. The dead-letter store on this disk: letters/s when a burst of poison arrives (one fsync per group), and
   opening a full store (64 MiB bound) again.

usage: python benches/bench_payloads.py
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import Rejected
from drsdtp.adapters.mqtt import Arrival, MqttAdapter
from drsdtp.adapters.payloads import PayloadLimits, load_json
from drsdtp.ingest.deadletters import DeadLetterOptions, DeadLetterStore


def per_call_us(fn: Callable[[], object], min_s: float = 0.2, repeats: int = 7) -> float:
    """The fastest of ``repeats`` timings (the least disturbed by other work on the machine)."""
    n = 1
    while timeit.timeit(fn, number=n) < min_s:
        n *= 2
    return min(timeit.repeat(fn, number=n, repeat=repeats)) / n * 1e6


def guards() -> None:
    limits = PayloadLimits()
    small = json.dumps({"value": 21.5, "ts": 1_700_000_000.25, "data": {"t": 70.5, "h": 40}}).encode()
    batch = json.dumps(
        {
            "readings": [
                {"twin": f"r{i}", "field": "t", "value": i * 0.5, "ts": 1_700_000_000_000 + i}
                for i in range(1000)
            ]
        }
    ).encode()
    for name, payload in (("small object", small), (f"batch of 1,000 ({len(batch) // 1024} KiB)", batch)):
        bare = per_call_us(functools.partial(json.loads, payload))
        guarded = per_call_us(functools.partial(load_json, payload, limits))
        extra = guarded / bare - 1
        print(f"  {name:28s} json.loads {bare:8.1f} us   load_json {guarded:8.1f} us   ({extra:+.0%})")


def adapter_decode() -> None:
    a = build_adapter(
        {
            "type": "mqtt",
            "name": "b",
            "host": "h",
            "client_id": "c",
            "topics": [
                {"template": "n/{twin}/{field}", "payload": "number"},
                {"template": "j/{twin}/{field}", "payload": "json", "ts_path": "ts"},
                {"template": "b/+/batch", "payload": "json_batch", "items_path": "r", "ts_path": "ts"},
            ],
        },
        "adapters[0]",
    )
    assert isinstance(a, MqttAdapter)
    now = int(time.time() * 1000)
    number = [Arrival(f"n/t{i % 100}/f", b"21.5", now) for i in range(1000)]
    obj = [Arrival(f"j/t{i % 100}/f", b'{"value": 21.5, "ts": 1700000000.5}', now) for i in range(1000)]
    items = [{"twin": f"r{i}", "field": "t", "value": i, "ts": now} for i in range(1000)]
    batch = [Arrival("b/g/batch", json.dumps({"r": items}).encode(), now)]
    poison = [Arrival("j/x/f", b"[" * 2000, now) for _ in range(1000)]
    for name, msgs, readings in (
        ("number", number, 1000),
        ("json object", obj, 1000),
        ("json_batch of 1,000", batch, 1000),
        ("poison (b'[' * 2000)", poison, 0),
    ):
        us = per_call_us(functools.partial(a.decode, msgs))
        rate = (
            f"{readings / us * 1e6:>12,.0f} readings/s"
            if readings
            else f"{len(msgs) / us * 1e6:>12,.0f} rejects/s"
        )
        print(f"  {name:24s} {us / len(msgs):8.2f} us per message {rate}")


async def store() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
        path = Path(d)
        async with DeadLetterStore(path, DeadLetterOptions()) as letters:
            payload = b"[" * 2000
            n, t0 = 20_000, time.perf_counter()
            waits = []
            for i in range(n):
                _, durable = await letters.put("b", [Rejected(f"t/{i}", i, "too deep", "", payload)])
                if durable is not None and (i % 500 == 499 or i == n - 1):
                    waits.append(durable)
            for w in waits:
                await w
            took = time.perf_counter() - t0
            held, size = len(letters), letters.size_bytes
        rate = n / took
        print(
            f"  burst of {n:,} letters of 2 KB: {rate:,.0f} letters/s; {held:,} held, {size / 2**20:.1f} MiB"
        )
        t0 = time.perf_counter()
        reopened = DeadLetterStore(path, DeadLetterOptions())
        print(f"  open with {len(reopened):,} letters on disk: {(time.perf_counter() - t0) * 1e3:.0f} ms")


def main() -> None:
    print("payload guards (limits checked before parsing) vs bare json.loads:")
    guards()
    print("MqttAdapter.decode:")
    adapter_decode()
    print("dead-letter store:")
    asyncio.run(store())


if __name__ == "__main__":
    main()
