"""History store figures: append throughput, flush and compaction cost, query latency, bytes per reading.

Workload: 1,000 sensors (100 twins x 10 fields), one reading each per second, appended as batches of 1,000
readings (one ``append_batch`` per second of data). Values are a random walk quantised to 0.01, like a
sensor with two decimals. Run: ``.venv/bin/python benches/bench_history.py [--seconds N] [--dir PATH]``
(default: an hour of data in a temporary directory; use ``--dir`` on the device's SD card for real fsync
figures). Prints medians; not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from drsdtp.core import BatchWriter, Store
from drsdtp.history import HistoryOptions, HistoryStore

TWINS, FIELDS = 100, 10
SENSORS = TWINS * FIELDS
T0 = 1_700_000_000_000
HOUR = 3_600_000


def names() -> tuple[list[str], list[str]]:
    twins = [f"asset-{i // FIELDS:03d}" for i in range(SENSORS)]
    fields = [f"sensor-{i % FIELDS}" for i in range(SENSORS)]
    return twins, fields


def walk(rng: np.random.Generator, seconds: int) -> NDArray[np.float64]:
    """[seconds, SENSORS] values: random walks quantised to 0.01."""
    steps = rng.normal(0.0, 0.05, (seconds, SENSORS))
    return np.round(20.0 + np.cumsum(steps, axis=0), 2)


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_append(
    directory: Path, values: NDArray[np.float64], use_ids: bool, flush_every: int
) -> tuple[float, float]:
    """Readings per second appending every row of ``values`` as one batch (flush every N batches), and the
    segment bytes per reading (closing leaves the segments on disk: the next open folds them)."""
    twins, fields = names()
    engine = Store(1)
    writer = BatchWriter(engine)
    tids, fids = writer.twin_ids(twins), writer.field_ids(fields)
    store = HistoryStore(directory, HistoryOptions(), names=engine, now_ms=T0)
    seconds = int(values.shape[0])
    start = time.perf_counter()
    for s in range(seconds):
        ts = np.full(SENSORS, T0 + s * 1000, np.int64)
        if use_ids:
            store.append_batch(tids, fids, values[s], ts)
        else:
            store.append_batch(twins, fields, values[s], ts)
        if flush_every and s % flush_every == flush_every - 1:
            store.flush()
    store.flush()
    elapsed = time.perf_counter() - start
    store.close()
    wal = sum(p.stat().st_size for p in (directory / "wal").iterdir())
    return seconds * SENSORS / elapsed, wal / (seconds * SENSORS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600, help="seconds of data (default: one hour)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    rng = np.random.default_rng(0)
    seconds = args.seconds
    values = walk(rng, seconds)
    print(f"workload: {SENSORS} sensors, {seconds} s of data = {seconds * SENSORS:,} readings, in {root}")

    # --- append -----------------------------------------------------------------------------------------
    sample = values[: min(seconds, 600)]
    for label, use_ids, every in (
        ("names, no flush", False, 0),
        ("engine ids, no flush", True, 0),
        ("engine ids, flush every batch", True, 1),
        ("engine ids, flush every 10 batches", True, 10),
    ):
        rates = []
        for rep in range(3):
            rate, wal_per_reading = bench_append(
                root / f"append-{label[:5]}-{every}-{rep}", sample, use_ids, every
            )
            rates.append(rate)
        print(f"append   {label:<36} {statistics.median(rates):>12,.0f} readings/s (batches of {SENSORS})")

    # --- fill one store as a node would (compact every 60 s of data), then query --------------------------
    twins, fields = names()
    options = HistoryOptions(raw_retention_ms=2 * seconds * 1000)
    store = HistoryStore(root / "main", options, now_ms=T0)
    for s in range(seconds):
        store.append_batch(twins, fields, values[s], np.full(SENSORS, T0 + s * 1000, np.int64))
        if s % 60 == 59:
            store.flush()
            store.compact(T0 + s * 1000)
    store.flush()
    live = store.level_bytes()["segments"]
    end = T0 + seconds * 1000
    head_query = functools.partial(store.query, "asset-042", "sensor-7", end - 60_000, end, "raw")
    head_latency = statistics.median(timed(head_query) for _ in range(20))
    store.rotate()
    fold = timed(lambda: store.compact(end))
    now = end
    raw_bytes = store.level_bytes()["raw"]
    n = seconds * SENSORS
    print(f"compact  fold the live segment ({live / 1e6:.1f} MB) into a raw block: {fold * 1000:.0f} ms")
    print(f"query    {'raw, last 60 s, from the live segment':<40} {head_latency * 1000:8.2f} ms")
    cases = {
        "raw, last 60 s": ("raw", end - 60_000),
        "raw, whole range": ("raw", T0),
        "1m, whole range (bucketed on the fly)": ("1m", T0),
        "auto, whole range": ("auto", T0),
    }
    for label, (resolution, start) in cases.items():
        query = functools.partial(store.query, "asset-042", "sensor-7", start, end, resolution)
        latency = statistics.median(timed(query) for _ in range(20))
        got = query()
        print(f"query    {label:<40} {latency * 1000:8.2f} ms  ({len(got)} points, {got.resolution})")

    out = io.StringIO()
    export_time = timed(lambda: store.export(out, "csv", twin_prefix="asset-00", resolution="raw"))
    print(f"export   csv raw, 100 fields: {export_time * 1000:.0f} ms, {len(out.getvalue()) / 1e6:.1f} MB")

    # --- downsampled sizes --------------------------------------------------------------------------------
    store.close()
    # Reopen with a short raw retention: every raw block moves down into 1 min buckets.
    store = HistoryStore(root / "main", dataclasses.replace(options, raw_retention_ms=1000), now_ms=now)
    move = timed(lambda: store.compact(now + 1000 * seconds))
    minute_bytes = store.level_bytes()["1m"]
    minute_buckets = SENSORS * -(-seconds // 60)
    store.close()

    uncompressed = HistoryStore(root / "plain", dataclasses.replace(options, compress=False), now_ms=T0)
    for s in range(min(seconds, 600)):
        uncompressed.append_batch(twins, fields, values[s], np.full(SENSORS, T0 + s * 1000, np.int64))
    uncompressed.rotate()
    uncompressed.compact(now)
    plain = uncompressed.level_bytes()["raw"] / (min(seconds, 600) * SENSORS)
    uncompressed.close()

    print(f"size     segment (write-ahead)        {wal_per_reading:6.2f} B/reading")
    print(f"size     raw block, zlib              {raw_bytes / n:6.2f} B/reading")
    print(f"size     raw block, uncompressed      {plain:6.2f} B/reading")
    print(
        f"size     1m buckets, zlib             {minute_bytes / minute_buckets:6.2f} B/bucket = "
        f"{minute_bytes / n:.3f} B per raw reading (move down: {move * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
