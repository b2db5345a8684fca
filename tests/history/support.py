"""Helpers shared by the history tests: small tiers, generated readings, file surgery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from drsdtp.history import HistoryOptions, Tier

T0 = 1_699_920_000_000  # a whole day in ms since the epoch (aligned to every bucket size used)
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000


def small_options() -> HistoryOptions:
    """Raw 1 h, then 1 min buckets for 6 h, then 15 min buckets for 2 d (vary with dataclasses.replace)."""
    return HistoryOptions(
        raw_retention_ms=HOUR,
        raw_max_points=1_000_000,
        tiers=(Tier(MINUTE, 6 * HOUR), Tier(15 * MINUTE, 2 * DAY)),
        segment_ms=10 * MINUTE,
        segment_bytes=1 << 20,
    )


def batch(
    rng: np.random.Generator, start_ms: int, n: int, series: int = 4, spacing_ms: int = 1000
) -> tuple[list[str], list[str], NDArray[np.float64], NDArray[np.int64]]:
    """``n`` readings spread round-robin over ``series`` fields of two twins, ``spacing_ms`` apart."""
    idx = np.arange(n)
    twins = [f"pump-{i % series % 2}" for i in idx.tolist()]
    fields = [f"f{i % series}" for i in idx.tolist()]
    values = np.round(rng.normal(20.0, 5.0, n), 3)
    ts = start_ms + idx.astype(np.int64) * spacing_ms
    return twins, fields, values, ts


def segment_files(directory: Path) -> list[Path]:
    return sorted((directory / "wal").glob("wal-*.log"))


def block_files(directory: Path) -> list[Path]:
    return sorted((directory / "blocks").glob("blk-*.dat"))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
