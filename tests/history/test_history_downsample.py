"""Downsampling against a numpy reference, at every level, before and after compaction moved the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from drsdtp.history import HistoryStore, SeriesData
from drsdtp.history.series import Rows, downsample, rollup

from .support import HOUR, MINUTE, T0, small_options


def reference(
    ts: NDArray[np.int64], values: NDArray[np.float64], interval: int
) -> dict[int, tuple[float, ...]]:
    """{bucket start: (min, max, mean, count)}, computed bucket by bucket."""
    starts = ts - ts % interval
    out: dict[int, tuple[float, ...]] = {}
    for start in np.unique(starts).tolist():
        chosen = values[starts == start]
        out[int(start)] = (float(chosen.min()), float(chosen.max()), float(chosen.mean()), float(len(chosen)))
    return out


def as_dict(data: SeriesData) -> dict[int, tuple[float, ...]]:
    return {
        int(t): (lo, hi, mean, float(n))
        for t, lo, hi, mean, n in zip(
            data.ts.tolist(),
            data.min.tolist(),
            data.max.tolist(),
            data.value.tolist(),
            data.count.tolist(),
            strict=True,
        )
    }


def assert_matches(got: dict[int, tuple[float, ...]], want: dict[int, tuple[float, ...]]) -> None:
    assert sorted(got) == sorted(want)
    for start, (lo, hi, mean, n) in want.items():
        g = got[start]
        assert (g[0], g[1], g[3]) == (lo, hi, n), start
        assert abs(g[2] - mean) <= 1e-9 * max(1.0, abs(mean)), start


def test_buckets_match_numpy_reference_through_every_tier(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 20_000  # ~5.5 h of irregular readings for two fields
    gaps = rng.integers(1, 2000, n)
    ts = T0 + np.cumsum(gaps).astype(np.int64)
    values = rng.normal(50.0, 10.0, n)
    fields = np.where(rng.random(n) < 0.5, "a", "b")
    end = int(ts.max()) + 1
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    for chunk in np.array_split(np.arange(n), 20):  # batches of ~1000
        store.append_batch(["m"] * len(chunk), fields[chunk].tolist(), values[chunk], ts[chunk])
    store.flush()
    a = fields == "a"
    want_1m = reference(ts[a], values[a], MINUTE)
    want_15m = reference(ts[a], values[a], 15 * MINUTE)
    # Everything still raw: tier queries bucket on the fly.
    assert_matches(as_dict(store.query("m", "a", resolution="1m")), want_1m)
    assert_matches(as_dict(store.query("m", "a", resolution="15m")), want_15m)

    store.rotate()
    store.compact(end + 2 * HOUR)  # raw (1 h) expires into 1 min buckets
    assert len(store.query("m", "a", resolution="raw")) == 0
    assert_matches(as_dict(store.query("m", "a", resolution="1m")), want_1m)
    assert_matches(as_dict(store.query("m", "a", resolution="15m")), want_15m)
    auto = store.query("m", "a")
    assert auto.resolution == "1m"

    store.compact(end + 7 * HOUR)  # 1 min buckets (6 h) roll up into 15 min buckets
    assert len(store.query("m", "a", resolution="1m")) == 0
    assert_matches(as_dict(store.query("m", "a", resolution="15m")), want_15m)
    assert store.query("m", "a").resolution == "15m"
    store.close()


def test_half_moved_buckets_merge_exactly(tmp_path: Path) -> None:
    """A bucket part raw, part downsampled (the raw block boundary cut through it) reads as one bucket."""
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    ts = T0 + np.arange(0, 120_000, 5_000, dtype=np.int64)  # two minutes, 24 readings
    values = np.arange(24, dtype=np.float64)
    store.append_batch(["t"] * 6, ["v"] * 6, values[:6], ts[:6])  # first half of minute 0
    store.rotate()
    store.compact(T0)
    store.append_batch(["t"] * 18, ["v"] * 18, values[6:], ts[6:])
    store.rotate()
    store.compact(T0 + 61_000)  # raw blocks 1 and 2 now separate; expire only the first
    store.compact(T0 + HOUR + 56_000)
    assert len(store.query("t", "v", resolution="raw")) == 18  # minute 0 is now half raw, half bucket
    levels = store.level_bytes()
    assert levels["raw"] > 0 and levels["1m"] > 0
    got = as_dict(store.query("t", "v", resolution="1m"))
    assert_matches(got, reference(ts, values, MINUTE))
    store.close()


def test_auto_picks_raw_when_it_covers_the_range_and_fits(tmp_path: Path) -> None:
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        ts = T0 + np.arange(600, dtype=np.int64) * 1000
        store.append_batch(["t"] * 600, ["v"] * 600, np.ones(600), ts)
        assert store.query("t", "v").resolution == "raw"
        capped = store.query("t", "v", max_points=100)
        assert capped.resolution == "1m" and capped.count.tolist() == [60] * 10


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(-5_000_000, 5_000_000), st.floats(-1e6, 1e6)), min_size=1
    ),
    st.integers(1, 2**16),
)
def test_downsampling_any_split_then_merging_equals_downsampling_all(
    readings: list[tuple[int, int, float]], split_seed: int
) -> None:
    series = np.array([r[0] for r in readings], np.uint32)
    ts = np.array([r[1] for r in readings], np.int64)
    values = np.array([r[2] for r in readings], np.float64)
    rows = Rows(series, ts, values)
    part = np.random.default_rng(split_seed).random(len(rows)) < 0.5
    whole = rollup(downsample(rows, 1000), 60_000)
    pieces = rollup(downsample(rows.select(part), 1000), 60_000)
    rest = downsample(rows.select(~part), 60_000)
    merged = type(whole).concat([pieces, rest]).merged()
    assert merged.series.tolist() == whole.series.tolist()
    assert merged.start.tolist() == whole.start.tolist()
    assert merged.min.tolist() == whole.min.tolist() and merged.max.tolist() == whole.max.tolist()
    assert merged.count.tolist() == whole.count.tolist()
    assert np.allclose(merged.sum, whole.sum, rtol=1e-9, atol=1e-6)
    assert int(whole.count.sum()) == len(rows)
    assert bool((whole.start % 60_000 == 0).all())  # floors negative stamps too
