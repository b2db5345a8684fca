"""A block's series chunks are encoded for all series at once; the bytes are those of encoding each series on
its own (the format is unchanged, blocks written before read the same)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from drsdtp.history import blocks
from drsdtp.history.series import Buckets, Rows, group_bounds


def _per_series(columns: list[np.ndarray], series: np.ndarray, compress: bool) -> list[bytes]:
    heads, lengths = group_bounds(series)
    return [
        blocks._encode_columns([c[h : h + n] for c in columns], compress)
        for h, n in zip(heads.tolist(), lengths.tolist(), strict=True)
    ]


@pytest.mark.parametrize("compress", [True, False])
def test_raw_and_bucket_chunks_equal_the_per_series_encoding(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(3)
    series = np.sort(rng.integers(0, 50, 400)).astype(np.uint32)
    ts = np.sort(rng.integers(1_700_000_000_000, 1_700_000_100_000, 400)).astype(np.int64)
    order = np.lexsort((ts, series))
    series, ts = series[order], ts[order]
    rows = Rows(series, ts, rng.random(400))
    buckets = Buckets(series, ts, rng.random(400), rng.random(400), rng.random(400), rng.integers(1, 9, 400))
    for level, data, columns in (
        (0, rows, [rows.ts, rows.value]),
        (1, buckets, [buckets.start, buckets.min, buckets.max, buckets.sum, buckets.count]),
    ):
        info = blocks.write_block(
            tmp_path, level + 1, level, data, created_ms=1, newest_ms=2, compress=compress
        )
        raw = info.path.read_bytes()
        expected = _per_series([np.asarray(c) for c in columns], series, compress)
        assert raw[blocks._HEADER.size : blocks._HEADER.size + sum(map(len, expected))] == b"".join(expected)
        assert [int(x) for x in info.index["crc"]] == [zlib.crc32(c) for c in expected]
        back, _ = blocks.read_block(blocks.open_block(info.path))
        assert np.array_equal(back.series, series)
        assert np.array_equal(back.ts if isinstance(back, Rows) else back.start, ts)
