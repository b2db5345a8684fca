"""Benchmark: one health + forecast pass over 10,000 fields with 1,000-sample windows.

Run: ``python benches/bench_intelligence.py [--fields N] [--window W] [--reps R]``. Prints the median time of
``TwinIntelligence.evaluate`` (health, drift, traits, forecasts for every field) against a per-sensor Python
loop computing the same statistics from each field's window, in the same run, and the ratio. Also: the cost
of ingesting one reading per field (windows and the model-free detector), of recomputing every running sum
from the raw windows (cold start), of the model-free detector's online scoring alone (per reading, batched
over fields, and for a lone field), and of a pass with the thermal kernel tracking every room.
Goals (issues 6 and 10): the pass in <= 50 ms on this box; <= 20 us per reading batched.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from drsdtp.intelligence import FieldSpec, IntelligenceConfig, ModelSpec, TwinIntelligence
from drsdtp.sim import FIELDS, Plant
from drsdtp.sim.room_spec import room_model_spec

FIELDS_PER_TWIN = 10
PERIOD_S = 10.0


def timed(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def generic_engine(fields: int, window: int, seed: int = 0) -> tuple[TwinIntelligence, float]:
    """``fields`` noisy trending sensors (pairs share a redundancy group), each with ``window`` samples."""
    specs = tuple(
        FieldSpec(
            f"s{i}",
            expected_period_s=PERIOD_S,
            resolution=0.01,
            redundancy_group=f"g{i // 2}",
            high_limit=40.0,
            low_limit=0.0,
        )
        for i in range(FIELDS_PER_TWIN)
    )
    engine = TwinIntelligence(IntelligenceConfig(capacity=window))
    engine.add_model(ModelSpec("generic", specs))
    engine.reserve(fields)
    for t in range(fields // FIELDS_PER_TWIN):
        engine.add_twin(f"twin-{t}", "generic")
    n = len(engine.table)
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    base = rng.uniform(15, 25, n)
    slope = rng.normal(0, 1e-3, n)
    for k in range(window):
        t_s = k * PERIOD_S
        engine.ingest(rows, np.full(n, t_s), base + slope * t_s + rng.normal(0, 0.05, n), np.full(n, k))
    return engine, (window - 1) * PERIOD_S


def python_loop_pass(engine: TwinIntelligence, now_s: float) -> list[tuple[float, ...]]:
    """The same statistics, one field at a time (what a per-sensor implementation would do)."""
    cfg = engine.config
    horizons = np.asarray(cfg.horizons_min) * 60.0
    out = []
    for row in range(len(engine.table)):
        t, v = engine.windows.history(row)
        spec = engine.table.specs[row]
        # long-window line (drift rate), short-window line (trend, forecast)
        slope_long = float(np.polyfit(t - t[-1], v, 1)[0])
        ts, vs = t[-cfg.short_window :] - now_s, v[-cfg.short_window :]
        tm, vm = ts.mean(), vs.mean()
        stt = float(((ts - tm) ** 2).sum())
        slope = float(((ts - tm) * (vs - vm)).sum() / stt)
        resid = vs - (vm + slope * (ts - tm))
        sigma = float(math.sqrt((resid**2).sum() / (len(vs) - 2)))
        level = vm - slope * tm
        mean = level + slope * horizons
        half = cfg.interval_z * sigma * np.sqrt(1 + 1 / len(vs) + (horizons - tm) ** 2 / stt)
        # health: noise (MAD of differences), spike z, stuck run, staleness
        recent = v[-cfg.health.recent :]
        d = np.diff(recent)
        noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
        ref = np.median(recent[-7:-1])
        z = abs(recent[-1] - ref) / max(noise, 1e-9)
        stuck = float(np.ptp(recent[-cfg.health.stuck_run :])) <= spec.resolution / 2
        stale = now_s - t[-1] > cfg.health.stale_factor * spec.expected_period_s
        eta = (spec.high_limit - level) / slope if spec.high_limit is not None and slope > 0 else math.nan
        out.append((slope_long, slope, sigma, *mean, *half, noise, z, float(stuck), float(stale), eta))
    return out


def detector_lines(engine: TwinIntelligence, n: int, reps: int) -> None:
    """The model-free detector alone: a reading for every field per batch, ten per field per batch, and a
    lone field fed one reading per call (the unbatched worst case)."""
    det = engine.detector
    rows = np.arange(n)
    rng = np.random.default_rng(2)
    k = [int(det.count[:n].max()) + 10]

    def one() -> None:
        det.update(rows, np.full(n, k[0] * PERIOD_S), 20 + rng.normal(0, 0.05, n))
        k[0] += 1

    def ten() -> None:
        r = np.repeat(rows, 10)
        t = (k[0] + np.tile(np.arange(10), n)) * PERIOD_S
        det.update(r, t, 20 + rng.normal(0, 0.05, 10 * n))
        k[0] += 10

    one_ms = timed(one, reps)
    ten_ms = timed(ten, max(3, reps // 2))
    lone = type(det)(det.config, fields=1)
    zero = np.zeros(1, np.intp)
    t0 = time.perf_counter()
    for i in range(500):
        lone.update(zero, np.array([i * PERIOD_S]), np.array([rng.normal()]))
    lone_us = (time.perf_counter() - t0) / 500 * 1e6
    print(
        f"model-free detector, batched      : {one_ms * 1e3 / n:8.2f} us per reading (one per field per"
        f" batch; goal <= 20), {ten_ms * 1e3 / (10 * n):.2f} us with ten per field"
    )
    print(f"model-free detector, lone field   : {lone_us:8.0f} us per reading (numpy call overhead)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    print(
        f"numpy {np.__version__}; {args.fields} fields x {args.window}-sample windows; median of {args.reps}"
    )
    start = time.perf_counter()
    engine, now = generic_engine(args.fields, args.window)
    print(
        f"setup (fill the windows): {time.perf_counter() - start:.1f} s; "
        f"window memory {engine.windows.nbytes / 1e6:.0f} MB"
    )

    vector_ms = timed(lambda: engine.evaluate(now).forecast, args.reps)
    health_ms = timed(lambda: engine.evaluate(now), args.reps)  # forecasts are computed only when read
    n = len(engine.table)
    rows = np.arange(n)
    rng = np.random.default_rng(1)
    k = [args.window]

    def ingest_one() -> None:
        engine.ingest(rows, np.full(n, k[0] * PERIOD_S), 20 + rng.normal(0, 0.05, n), np.full(n, k[0]))
        k[0] += 1

    ingest_ms = timed(ingest_one, args.reps)
    recompute_ms = timed(engine.windows.recompute, max(3, args.reps // 2))
    loop_start = time.perf_counter()
    python_loop_pass(engine, now)
    loop_ms = (time.perf_counter() - loop_start) * 1e3

    print(f"vectorised health + forecast pass : {vector_ms:8.1f} ms   (goal <= 50 ms)")
    print(f"health-only pass (no forecast)    : {health_ms:8.1f} ms   (goal <= 50 ms)")
    print(f"per-sensor Python loop, same stats: {loop_ms:8.1f} ms")
    print(f"speed-up                          : {loop_ms / vector_ms:8.1f} x")
    print(f"ingest one reading per field      : {ingest_ms:8.1f} ms per batch of {n}")
    print(f"recompute sums from raw windows   : {recompute_ms:8.1f} ms (cold start / rebase only)")
    detector_lines(engine, n, args.reps)

    rooms = args.fields // len(FIELDS)
    plant = Plant(rooms=rooms, seed=0)
    thermal = TwinIntelligence(IntelligenceConfig(capacity=args.window))
    thermal.add_model(room_model_spec())
    for twin in plant.twins:
        thermal.add_twin(twin, "room")
    trow = thermal.rows([(t, f) for t in plant.twins for f in FIELDS]).reshape(rooms, len(FIELDS))
    for _ in range(60):
        frame = plant.step_frame()
        ok = np.isfinite(frame.values)
        thermal.ingest(trow[ok], frame.sensor_t_s[ok], frame.values[ok], frame.seq[ok])
        thermal.evaluate(frame.t_s)

    def thermal_step() -> None:
        frame = plant.step_frame()
        ok = np.isfinite(frame.values)
        thermal.ingest(trow[ok], frame.sensor_t_s[ok], frame.values[ok], frame.seq[ok])
        thermal.evaluate(frame.t_s)

    thermal_ms = timed(thermal_step, args.reps)
    print(
        f"with thermal tracking ({rooms} rooms, {rooms * len(FIELDS)} fields): {thermal_ms:.1f} ms per step "
        "(plant step + ingest + pass, Kalman + RLS + divergence)"
    )


if __name__ == "__main__":
    main()
