"""Bounds: retention per level, size independent of uptime, per-field raw caps, the max_bytes cap."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from drsdtp.history import HistoryOptions, HistoryStore, Tier

from .support import HOUR, MINUTE, T0, batch, block_files, small_options

STEP = 20 * MINUTE  # the simulated node compacts every 20 minutes
SERIES = 6
SPACING = 5_000  # one reading per field every 5 s


def _run(store: HistoryStore, rng: np.random.Generator, start: int, steps: int) -> list[int]:
    """Feed ``steps`` periods of readings, compacting after each; returns disk bytes after each step."""
    sizes = []
    per_step = SERIES * STEP // SPACING
    for k in range(steps):
        now = start + (k + 1) * STEP
        twins, fields, values, _ = batch(rng, 0, per_step, series=SERIES)
        ts = now - STEP + (np.arange(per_step, dtype=np.int64) // SERIES) * SPACING
        store.append_batch(twins, fields, values, ts)
        store.flush()
        store.compact(now)
        sizes.append(store.disk_bytes())
    return sizes


def _bound(options: HistoryOptions) -> int:
    """Uncompressed bytes the store may hold at most in steady state, from retention alone.

    Each level keeps its retention plus the slack whole-block expiry allows (a raw block spans up to two
    compaction periods; a merged tier block up to 1/8 of its tier's retention), plus per-block headers.
    """
    raw = (options.raw_retention_ms + 3 * STEP) // SPACING * 16
    tiers = 0
    previous = options.raw_retention_ms
    for tier in options.tiers:
        held = tier.retention_ms - previous + tier.retention_ms // 8 + 3 * STEP
        tiers += (held // tier.interval_ms + 2) * 40
        previous = tier.retention_ms
    blocks = 64  # generous: raw blocks per hour of retention plus merge levels per tier
    return SERIES * (raw + tiers) + blocks * (56 + SERIES * 36)


def test_size_is_bounded_by_retention_not_uptime(tmp_path: Path) -> None:
    # Raw 1 h, 1 min buckets to 4 h, 15 min buckets to 12 h; run 36 h (steady state from ~14 h on).
    options = HistoryOptions(
        raw_retention_ms=HOUR,
        tiers=(Tier(MINUTE, 4 * HOUR), Tier(15 * MINUTE, 12 * HOUR)),
        segment_ms=STEP,
        compress=False,
    )
    rng = np.random.default_rng(21)
    store = HistoryStore(tmp_path, options, now_ms=T0)
    per_hour = HOUR // STEP
    sizes = _run(store, rng, T0, 36 * per_hour)
    now = T0 + 36 * HOUR
    earlier, later = max(sizes[18 * per_hour : 27 * per_hour]), max(sizes[27 * per_hour :])
    assert later <= earlier * 1.05, (earlier, later)  # steady state: more uptime adds nothing
    assert max(sizes) <= _bound(options), (max(sizes), _bound(options))
    assert len(block_files(tmp_path)) <= 40

    raw = store.query("pump-0", "f0", resolution="raw")
    assert int(raw.ts.min()) >= now - HOUR - 3 * STEP
    minute = store.query("pump-0", "f0", resolution="1m")
    assert int(minute.ts.min()) >= now - 4 * HOUR - 4 * HOUR // 8 - 3 * STEP
    quarter = store.query("pump-0", "f0", resolution="15m")
    assert int(quarter.ts.min()) >= now - 12 * HOUR - 12 * HOUR // 8 - 3 * STEP
    assert int(quarter.ts.min()) <= now - 12 * HOUR + 15 * MINUTE  # and it does keep 12 hours
    # Nothing was counted twice or lost on the way down: each 15 min bucket holds all its readings.
    assert set(quarter.count.tolist()) == {15 * MINUTE // SPACING}
    store.close()


def test_chatty_field_is_trimmed_to_its_raw_cap_and_keeps_its_buckets(tmp_path: Path) -> None:
    options = dataclasses.replace(small_options(), raw_max_points=1000)
    with HistoryStore(tmp_path, options, now_ms=T0) as store:
        for k in range(6):
            start = T0 + k * 600_000
            ts = start + np.arange(600, dtype=np.int64) * 1000
            store.append_batch(["t"] * 600, ["chatty"] * 600, np.full(600, float(k)), ts)
            store.append_batch(["t"], ["quiet"], np.array([float(k)]), np.array([start]))
            store.rotate()
            store.compact(start + 600_000)
        raw = store.query("t", "chatty", resolution="raw")
        assert 900 <= len(raw) <= 1000
        assert int(raw.ts.max()) == T0 + 5 * 600_000 + 599_000  # the newest readings stay raw
        assert len(store.query("t", "quiet", resolution="raw")) == 6  # other fields untouched
        assert store.stats.corrupt_chunks == 0
        total = store.query("t", "chatty", resolution="1m")
        assert int(total.count.sum()) == 3600  # the trimmed readings live on in 1 min buckets
        assert set(total.max.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}


def test_max_bytes_caps_the_total_by_moving_data_down(tmp_path: Path) -> None:
    options = dataclasses.replace(small_options(), max_bytes=40_000, compress=False)
    rng = np.random.default_rng(22)
    with HistoryStore(tmp_path, options, now_ms=T0) as store:
        sizes = _run(store, rng, T0, 24)  # four hours: more raw than the cap allows
        assert max(sizes) <= 40_000
        newest = store.query("pump-0", "f0", resolution="1m")
        assert int(newest.ts.max()) >= T0 + 4 * HOUR - 2 * STEP  # recent data survives, coarser


def test_trim_never_drops_rows_of_a_neighbouring_series() -> None:
    from drsdtp.history.compaction import keep_mask
    from drsdtp.history.series import Rows

    rows = Rows(np.array([1, 1, 3, 3, 3], np.uint32), np.arange(5, dtype=np.int64), np.zeros(5))
    # Series 2 was planned for trimming but its chunk was lost: series 3 must keep all its rows.
    assert keep_mask(rows, {2: 2, 3: 1}).tolist() == [True, True, False, True, True]
    assert keep_mask(rows, {1: 5}).tolist() == [False, False, True, True, True]
