"""Benchmark: one rule evaluation pass, 10,000 rules over 100,000 fields.

Run: ``python benches/bench_rules.py [--rules N] [--twins T] [--passes P] [--quick]``. ``T`` twins of 10
fields each sit in a real store; rule ``i`` watches field ``f(i mod 10)`` of the 10 twins ``m-<i // 10>?``,
so every field is read by exactly one slot (rule x twin) and the rules use four shapes: a threshold, a
threshold with a quality guard, a band with a duration, and a band with a deadband. Between passes 1% of
the fields get new values (written outside the timing). Prints the median and worst pass time of
:meth:`RuleEngine.evaluate` and, in the same run, the bare floor: one native read of the 100,000 values and
one numpy comparison against per-field thresholds (what any vectorised evaluation must pay), and a plain
Python loop over the rules for scale. Goal (issue 12): a pass in <= 20 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from drsdtp.core import BatchWriter, Store
from drsdtp.rules.engine import RuleEngine
from drsdtp.rules.inputs import StoreSource
from drsdtp.rules.spec import parse_rules

FIELDS_PER_TWIN = 10


def build(rules: int, twins: int, seed: int = 0) -> tuple[Store, BatchWriter, list[dict[str, object]]]:
    store = Store(1)
    writer = BatchWriter(store)
    rng = np.random.default_rng(seed)
    names = [f"m-{t:05d}" for t in range(twins)]
    tw = [n for n in names for _ in range(FIELDS_PER_TWIN)]
    fl = [f"f{k}" for _ in names for k in range(FIELDS_PER_TWIN)]
    writer.write(tw, fl, rng.normal(50.0, 10.0, len(tw)))
    writer.write(tw, [f + ".q" for f in fl], rng.uniform(0.3, 1.0, len(tw)))
    tables: list[dict[str, object]] = []
    for i in range(rules):
        k, c = i % FIELDS_PER_TWIN, round(float(rng.uniform(55, 75)), 2)
        glob = f"m-{i // FIELDS_PER_TWIN:04d}?"
        table: dict[str, object] = {"name": f"r{i}", "twins": glob}
        match i % 4:
            case 0:
                table["when"] = f"f{k} > {c}"
            case 1:
                table["when"] = f"f{k} > {c} and quality(f{k}) > 0.5"
            case 2:
                table |= {"when": f"abs(f{k} - 50) > {c - 45}", "for": "5s"}
            case _:
                table |= {"when": f"f{k} < {100 - c} or f{k} > {c}", "deadband": 2.0}
        tables.append(table)
    return store, writer, tables


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--twins", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="100 rules over 1,000 fields, 5 passes")
    args = parser.parse_args()
    if args.quick:
        args.rules, args.twins, args.passes = 100, 100, 5
    store, writer, tables = build(args.rules, args.twins)
    t0 = time.perf_counter()
    rules = parse_rules(tables)
    parsed = time.perf_counter() - t0
    engine = RuleEngine(rules, StoreSource(store))
    t0 = time.perf_counter()
    engine.layout(store.twins())
    laid_out = time.perf_counter() - t0
    fields = args.twins * FIELDS_PER_TWIN
    rng = np.random.default_rng(1)
    names = store.twins()
    twin_ids = writer.twin_ids([t for t in names for _ in range(FIELDS_PER_TWIN)])
    field_ids = writer.field_ids([f"f{k}" for _ in names for k in range(FIELDS_PER_TWIN)])
    thresholds = rng.uniform(55, 75, fields)

    def churn() -> None:
        pick = rng.choice(len(names) * FIELDS_PER_TWIN, max(1, fields // 100), replace=False)
        writer.write(
            [names[p // FIELDS_PER_TWIN] for p in pick],
            [f"f{p % FIELDS_PER_TWIN}" for p in pick],
            rng.normal(50.0, 12.0, len(pick)),
        )

    samples, floor, events = [], [], 0
    now = 1000.0
    for _ in range(args.passes + 1):
        churn()
        now += 1.0
        start = time.perf_counter()
        events += len(engine.evaluate(now, now))
        samples.append(time.perf_counter() - start)
        start = time.perf_counter()
        values, _ = store.read_numeric(twin_ids, field_ids)
        np.flatnonzero(values > thresholds)
        floor.append(time.perf_counter() - start)
    samples, floor = samples[1:], floor[1:]  # the first pass warms caches
    values, _ = store.read_numeric(twin_ids, field_ids)
    start = time.perf_counter()
    plain = 0
    for i, rule in enumerate(rules):  # a per-rule Python loop over its twins, same number of comparisons
        c = rule.when.constants[0]
        base = (i // FIELDS_PER_TWIN) * FIELDS_PER_TWIN * FIELDS_PER_TWIN + i % FIELDS_PER_TWIN
        for j in range(FIELDS_PER_TWIN):
            idx = base + j * FIELDS_PER_TWIN
            if idx < len(values) and values[idx] > c:
                plain += 1
    loop = time.perf_counter() - start
    median = statistics.median(samples) * 1e3
    print(f"{len(rules)} rules, {engine.slots} slots over {fields} fields, {len(engine.groups)} shape groups")
    print(f"parse {parsed * 1e3:.0f} ms, layout {laid_out * 1e3:.0f} ms (once, and when twins come or go)")
    print(f"pass: median {median:.2f} ms, worst {max(samples) * 1e3:.2f} ms ({events} transitions)")
    bare = statistics.median(floor) * 1e3
    print(
        f"bare floor (one native read, one numpy comparison): {bare:.2f} ms; pass/floor {median / bare:.1f}x"
    )
    print(f"plain Python loop over the rules (one comparison per slot): {loop * 1e3:.1f} ms")
    print(f"goal: <= 20 ms per pass: {'met' if median <= 20 else 'MISSED'}")


if __name__ == "__main__":
    main()
