"""The engine from Python against pycrdt (Yrs via PyO3), same run, same workloads as crdt_core/benches/peers:

  (a) 100k new numeric fields; (b) 1,000 sensors each overwritten 1,000 times (batched per tick), by
  interned id and by name (``BatchWriter``); (c) the catch-up after a peer missed 50 ticks of 1,000
  sensors: bytes and time; (d) set adds on a twin whose number is written between them, against the
  number writes alone, and the add's delta size alone and after 1,000 such writes.

Run: ``.venv/bin/python benches/bench_core.py`` (``make bench``). Prints medians and ratios; not a test.
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pycrdt
from bench_report import Goal, Row, emit

from drsdtp.core import BatchWriter, Store

N_NEW, SENSORS, TICKS, MISSED, REPS = 100_000, 1_000, 1_000, 50, 5
T0 = 1_700_000_000_000


def median_rate(n: int, run: Callable[[], float]) -> float:
    return statistics.median(n / run() for _ in range(REPS))


def ours_store(rid: int = 1) -> Store:
    s = Store(rid)
    s.set_manual_time(T0)
    return s


def ours_ids(s: Store, n: int) -> tuple[np.ndarray, np.ndarray]:
    tid = s.intern_twin("twin")
    fids = np.fromiter((s.intern_field(f"s{i}") for i in range(n)), np.uint32, n)
    return np.full(n, tid, np.uint32), fids


def ours_new_fields() -> float:
    s = ours_store()
    tids, fids = ours_ids(s, N_NEW)
    vals = 20.0 + np.arange(N_NEW, dtype=np.float64) * 0.013
    src = np.zeros(N_NEW, np.int64)
    t = time.perf_counter()
    s.write_batch(tids, fids, vals, src)
    return time.perf_counter() - t


def ours_overwrites() -> tuple[float, float]:
    """Wall and thread CPU seconds of (b) by id."""
    s = ours_store()
    tids, fids = ours_ids(s, SENSORS)
    src = np.zeros(SENSORS, np.int64)
    base = 20.0 + np.arange(SENSORS, dtype=np.float64) * 0.013
    t, c = time.perf_counter(), time.thread_time()
    for r in range(TICKS):
        s.write_batch(tids, fids, base + r, src)
    return time.perf_counter() - t, time.thread_time() - c


def ours_overwrites_by_name() -> tuple[float, float]:
    """Wall and thread CPU seconds of (b) by name."""
    s = ours_store()
    w = BatchWriter(s)
    twins, fields = ["twin"] * SENSORS, [f"s{i}" for i in range(SENSORS)]
    base = 20.0 + np.arange(SENSORS, dtype=np.float64) * 0.013
    t, c = time.perf_counter(), time.thread_time()
    for r in range(TICKS):
        w.write(twins, fields, base + r)
    return time.perf_counter() - t, time.thread_time() - c


def ours_catch_up() -> tuple[int, int, float]:
    a = ours_store(1)
    tids, fids = ours_ids(a, SENSORS)
    src = np.zeros(SENSORS, np.int64)
    base = 20.0 + np.arange(SENSORS, dtype=np.float64) * 0.013
    a.write_batch(tids, fids, base.astype(np.float64), src)
    b_state = a.encode_state()
    for r in range(1, MISSED + 1):
        a.write_batch(tids, fids, (base + r).astype(np.float64), src)
    times, size, packed = [], 0, 0
    for _ in range(REPS):
        b = ours_store(2)
        b.merge(b_state)
        t = time.perf_counter()
        chunks = a.catch_up(b.version())
        for c in chunks:
            b.merge(c)
        times.append(time.perf_counter() - t)
        assert b.encode_state() == a.encode_state()
        size = sum(map(len, chunks))
        packed = len(zlib.compress(b"".join(chunks)))
    return size, packed, statistics.median(times)


N_SET = 20_000


def ours_set_adds(interleaved: bool) -> float:
    """Thread CPU seconds of N_SET adds cycling over 8 elements of one set (each after a number write when
    ``interleaved``), the number writes' own time excluded by timing the adds only."""
    s = ours_store()
    spent = 0.0
    for i in range(N_SET):
        if interleaved:
            s.set("twin", "n", float(i))
        c = time.thread_time()
        s.add("twin", "tags", f"e{i % 8}")
        spent += time.thread_time() - c
    return spent


def ours_set_delta_bytes() -> tuple[int, int]:
    """An add's delta alone, and the same add's after 1,000 writes of a number on its twin."""
    s = ours_store()
    alone = len(s.add("twin", "tags", "a"))
    for i in range(1_000):
        s.set("twin", "n", float(i))
        last = s.add("twin", "tags", "a")
    return alone, len(last)


def yrs_doc(cid: int | None = None) -> tuple[Any, Any]:
    d: Any = pycrdt.Doc(client_id=cid) if cid else pycrdt.Doc()
    m: Any = pycrdt.Map()
    d["twin"] = m
    return d, m


def pycrdt_new_fields() -> float:
    d, m = yrs_doc()
    data = {f"s{i}": 20.0 + i * 0.013 for i in range(N_NEW)}
    t = time.perf_counter()
    with d.transaction():
        m.update(data)
    return time.perf_counter() - t


def pycrdt_overwrites() -> float:
    d, m = yrs_doc()
    keys = [f"s{i}" for i in range(SENSORS)]
    ticks = 100  # pycrdt is ~30x slower; the rate is per write either way
    t = time.thread_time()  # CPU time, as ours in (b)
    for r in range(ticks):
        with d.transaction():
            m.update({k: 20.0 + i * 0.013 + r for i, k in enumerate(keys)})
    return (time.thread_time() - t) * TICKS / ticks


def pycrdt_catch_up() -> tuple[int, int, float]:
    a, m = yrs_doc(1)
    keys = [f"s{i}" for i in range(SENSORS)]
    with a.transaction():
        m.update({k: 20.0 + i * 0.013 for i, k in enumerate(keys)})
    snapshot = a.get_update()
    for r in range(1, MISSED + 1):
        with a.transaction():
            m.update({k: 20.0 + i * 0.013 + r for i, k in enumerate(keys)})
    times, size, packed = [], 0, 0
    for _ in range(REPS):
        b, _ = yrs_doc(2)
        b.apply_update(snapshot)
        t = time.perf_counter()
        delta = a.get_update(b.get_state())
        b.apply_update(delta)
        times.append(time.perf_counter() - t)
        size, packed = len(delta), len(zlib.compress(delta))
    return size, packed, statistics.median(times)


def main() -> None:
    print(f"drsdtp._core vs pycrdt {pycrdt.__version__} from Python (medians of {REPS})\n")
    ours_a, theirs_a = median_rate(N_NEW, ours_new_fields), median_rate(N_NEW, pycrdt_new_fields)
    print("(a) 100k new numeric fields in one batch / transaction")
    print(
        f"    drsdtp  {ours_a:>12,.0f} writes/s\n    pycrdt  {theirs_a:>12,.0f} writes/s"
        f"\n    ratio   {ours_a / theirs_a:>12.1f}x (target >= 10x)"
    )
    n_b = SENSORS * TICKS
    # By id and by name alternate, so the load of the machine moves both alike; the by-name figure is by id's
    # median times the median of the paired ratios (three unpaired medians moved 0.74x-0.92x at load 10).
    # Both run on this thread (the native write releases the GIL but not the thread), so the ratio is taken
    # on its CPU time: at load 8-10 a 30 ms run's wall time is a third its own and two thirds other
    # processes' (wall-time ratios are printed beside it).
    pairs = [(ours_overwrites(), ours_overwrites_by_name()) for _ in range(7)]
    ours_b = statistics.median(n_b / p[0][1] for p in pairs)
    named_b = ours_b * statistics.median(p[0][1] / p[1][1] for p in pairs)
    wall_ratio = statistics.median(p[0][0] / p[1][0] for p in pairs)
    theirs_b = statistics.median(n_b / pycrdt_overwrites() for _ in range(3))
    print("(b) 1,000 sensors x 1,000 overwrites, one batch / transaction per tick")
    print(
        f"    drsdtp  {ours_b:>12,.0f} writes/s by id (CPU time)"
        f"\n    drsdtp  {named_b:>12,.0f} writes/s by name"
        f"\n    pycrdt  {theirs_b:>12,.0f} writes/s (CPU time)"
        f"\n    ratio   {ours_b / theirs_b:>12.1f}x (target >= 50x); by name / by id {named_b / ours_b:.2f}x"
        f" (target >= 0.8x; on wall time {wall_ratio:.2f}x)"
    )
    (ob, oz, ot), (pb, pz, pt) = ours_catch_up(), pycrdt_catch_up()
    print("(c) catch-up after missing 50 ticks of 1,000 sensors (compute + apply)")
    print(f"    drsdtp  {ob:>9,} B ({oz:,} B zlib) {ot * 1e3:8.2f} ms")
    print(f"    pycrdt  {pb:>9,} B ({pz:,} B zlib) {pt * 1e3:8.2f} ms")
    print(f"    pycrdt/drsdtp: {pb / ob:.1f}x the bytes, {pt / ot:.1f}x the time (target <= 16 KB)")
    pairs_d = [(ours_set_adds(False), ours_set_adds(True)) for _ in range(5)]
    alone_d = statistics.median(N_SET / p[0] for p in pairs_d)
    inter_d = alone_d * statistics.median(p[0] / p[1] for p in pairs_d)
    bytes_alone, bytes_after = ours_set_delta_bytes()
    print("(d) set adds, 8 elements, with a number written on the twin between adds or not (CPU time)")
    print(
        f"    alone        {alone_d:>12,.0f} adds/s\n    interleaved  {inter_d:>12,.0f} adds/s"
        f"\n    ratio        {inter_d / alone_d:>12.2f}x (target >= 0.8x)"
        f"\n    an add's delta: {bytes_alone} B alone, {bytes_after} B after 1,000 interleaved writes"
        f" (target <= 64 B)"
    )
    emit(
        "bench_core",
        [
            Row.of("Python new fields vs pycrdt", ours_a, "writes/s", Goal(">=", 10, "ratio"),
                   baseline=theirs_a, baseline_name="pycrdt"),
            Row.of("Python batched writes vs pycrdt", ours_b, "writes/s", Goal(">=", 50, "ratio"),
                   baseline=theirs_b, baseline_name="pycrdt"),
            Row.of("Python by-name writes vs by-id", named_b, "writes/s", Goal(">=", 0.8, "ratio"),
                   baseline=ours_b, baseline_name="by id"),
            Row.of("Python catch-up bytes after 50 ticks", ob, "B", Goal("<=", 16_384),
                   baseline=pb, baseline_name="pycrdt"),
            Row.of("Python set adds between number writes vs alone", inter_d, "adds/s",
                   Goal(">=", 0.8, "ratio"), baseline=alone_d, baseline_name="alone"),
            Row.of("Set add delta after 1,000 interleaved writes", bytes_after, "B", Goal("<=", 64),
                   baseline=bytes_alone, baseline_name="alone"),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
