"""Compaction decisions, as pure functions of block metadata (the store carries them out)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from drsdtp.history.blocks import BlockInfo
from drsdtp.history.series import Rows

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from drsdtp.lazy import numpy as np

__all__ = ["MERGE_FANOUT", "eviction_victim", "keep_mask", "merge_candidates", "trim_plan"]

# Size-tiered merging: four blocks of a size class become one of the next class, so each bucket is
# rewritten about log4(target / first size) times: bounded write amplification on flash.
MERGE_FANOUT = 4
_SIZE_CLASS_BASE = 4096


def trim_plan(raw_oldest_first: list[BlockInfo], max_points: int) -> dict[int, dict[int, int]]:
    """{block id: {series: readings to drop from its oldest}} for fields over ``max_points`` raw readings.

    Over the cap, a field is cut to 90 % of it, so the rewrite is paid once per 10 % of the cap, not per
    compaction. Only blocks are trimmed (the live segment is at most one segment of readings).
    """
    if not raw_oldest_first:
        return {}
    series = np.concatenate([b.index["series"] for b in raw_oldest_first]).astype(np.int64)
    rows = np.concatenate([b.index["rows"] for b in raw_oldest_first]).astype(np.int64)
    totals = np.bincount(series, weights=rows).astype(np.int64)
    over = totals > max_points
    if not over.any():
        return {}
    excess = np.where(over, totals - (max_points - max_points // 10), 0)
    plan: dict[int, dict[int, int]] = {}
    for block in raw_oldest_first:
        index = block.index[over[block.index["series"].astype(np.int64)]]
        for s, n in zip(index["series"].tolist(), index["rows"].tolist(), strict=True):
            take = min(int(excess[s]), n)
            if take > 0:
                plan.setdefault(block.block_id, {})[s] = take
                excess[s] -= take
    return plan


def keep_mask(rows: Rows, drops: dict[int, int]) -> NDArray[np.bool_]:
    """Rows to keep when dropping the first ``drops[series]`` rows of each series (rows sorted by series
    then time, as blocks store them)."""
    keep = np.ones(len(rows), np.bool_)
    for s, n in drops.items():
        first = int(np.searchsorted(rows.series, s, "left"))
        last = int(np.searchsorted(rows.series, s, "right"))
        keep[first : min(first + n, last)] = False  # a chunk lost to corruption has no rows to drop
    return keep


def _size_class(size: int) -> int:
    return (max(size, 1) // _SIZE_CLASS_BASE).bit_length() // 2  # log4 of the size in 4 KiB units


def merge_candidates(blocks: list[BlockInfo], target_bytes: int, max_span_ms: int) -> list[BlockInfo]:
    """``MERGE_FANOUT`` blocks of one size class, adjacent in time, to merge into one; [] if none qualify.

    A merged block stays under ``target_bytes`` and spans at most ``max_span_ms``, since a block expires
    whole: its span is how much longer than asked its oldest bucket may be kept.
    """
    by_class: dict[int, list[BlockInfo]] = {}
    for block in blocks:
        if block.size < target_bytes:
            by_class.setdefault(_size_class(block.size), []).append(block)
    for size_class in sorted(by_class):
        group = sorted(by_class[size_class], key=lambda b: (b.min_ts, b.block_id))
        for i in range(len(group) - MERGE_FANOUT + 1):
            window = group[i : i + MERGE_FANOUT]
            span = max(b.max_ts for b in window) - min(b.min_ts for b in window)
            if sum(b.size for b in window) <= target_bytes and span <= max_span_ms:
                return window
    return []


def eviction_victim(blocks: Iterable[BlockInfo]) -> BlockInfo | None:
    """The block to move down a tier (or drop, from the last tier) to save space: the finest level first
    (it costs the most bytes per hour kept), oldest first within it."""
    candidates = list(blocks)
    if not candidates:
        return None
    return min(candidates, key=lambda b: (b.level, b.newest_ms, b.block_id))
