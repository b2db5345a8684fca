"""A block's chunks are built for all series at once and compressed a frame of many series at a time; a
query reads one frame, compaction every frame, and version 1 blocks (one series a frame) read the same."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from drsdtp.history import blocks
from drsdtp.history.series import Buckets, Rows, group_bounds


def _per_series(columns: list[np.ndarray], series: np.ndarray, compress: bool) -> list[bytes]:
    """Each series' chunk as version 1 wrote it, one zlib call per series."""
    heads, lengths = group_bounds(series)
    return [
        blocks._encode_columns([c[h : h + n] for c in columns], compress)
        for h, n in zip(heads.tolist(), lengths.tolist(), strict=True)
    ]


def _data(rows: int = 400, series: int = 50) -> tuple[Rows, Buckets]:
    rng = np.random.default_rng(3)
    keys = np.sort(rng.integers(0, series, rows)).astype(np.uint32)
    ts = np.sort(rng.integers(1_700_000_000_000, 1_700_000_100_000, rows)).astype(np.int64)
    order = np.lexsort((ts, keys))
    keys, ts = keys[order], ts[order]
    return (
        Rows(keys, ts, rng.random(rows)),
        Buckets(keys, ts, rng.random(rows), rng.random(rows), rng.random(rows), rng.integers(1, 9, rows)),
    )


def _columns(data: Rows | Buckets) -> list[np.ndarray]:
    if isinstance(data, Rows):
        return [data.ts, data.value]
    return [data.start, data.min, data.max, data.sum, data.count]


def _same(a: Rows | Buckets, b: Rows | Buckets) -> bool:
    return np.array_equal(a.series, b.series) and all(
        np.array_equal(x, y) for x, y in zip(_columns(a), _columns(b), strict=True)
    )


@pytest.mark.parametrize("frame_bytes", [1, 2048, blocks.FRAME_BYTES])
@pytest.mark.parametrize("compress", [True, False])
def test_blocks_read_back_whole_and_per_series(
    tmp_path: Path, compress: bool, frame_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocks, "FRAME_BYTES", frame_bytes)
    pair: tuple[Rows | Buckets, ...] = _data()
    for level, data in enumerate(pair):
        info = blocks.write_block(
            tmp_path, level + 1, level, data, created_ms=1, newest_ms=2, compress=compress
        )
        frames = len(set(info.index["offset"].tolist()))
        if compress and frame_bytes > 1:
            assert frames < len(info.index)  # series share frames
        else:
            assert frames == len(info.index)
        block = blocks.open_block(info.path)
        back, bad = blocks.read_block(block)
        assert bad == 0 and _same(back, data)
        heads, lengths = group_bounds(data.series)
        for h, n in zip(heads.tolist(), lengths.tolist(), strict=True):
            chunk = blocks.read_chunk(block, int(data.series[h]))
            assert chunk is not None
            expected = data.select(np.arange(h, h + n))
            assert _same(chunk, expected)


def test_a_frame_decompresses_to_the_chunks_of_its_series_back_to_back(tmp_path: Path) -> None:
    rows, _ = _data()
    info = blocks.write_block(tmp_path, 1, 0, rows, created_ms=1, newest_ms=2, compress=True)
    raw = info.path.read_bytes()
    (offset,) = set(info.index["offset"].tolist())  # 400 readings: one frame
    (length,) = set(info.index["length"].tolist())
    frame = raw[offset : offset + length]
    assert [int(c) for c in info.index["crc"]] == [zlib.crc32(frame)] * len(info.index)
    per_series = _per_series(_columns(rows), rows.series, True)
    assert zlib.decompress(frame) == b"".join(zlib.decompress(c) for c in per_series)


@pytest.mark.parametrize("compress", [True, False])
def test_a_version_1_block_reads_the_same(
    tmp_path: Path, compress: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 held one series a chunk: a block of one-series frames is that layout byte for byte."""
    monkeypatch.setattr(blocks, "FRAME_BYTES", 1)
    rows, _ = _data()
    info = blocks.write_block(tmp_path, 1, 0, rows, created_ms=1, newest_ms=2, compress=compress)
    raw = bytearray(info.path.read_bytes())
    expected = _per_series(_columns(rows), rows.series, compress)
    assert raw[blocks._HEADER.size : blocks._HEADER.size + sum(map(len, expected))] == b"".join(expected)
    raw[4:6] = (1).to_bytes(2, "little")  # the version field
    info.path.write_bytes(bytes(raw))
    monkeypatch.setattr(blocks, "FRAME_BYTES", blocks.FRAME_BYTES)
    back, bad = blocks.read_block(blocks.open_block(info.path))
    assert bad == 0 and _same(back, rows)


def test_a_damaged_frame_loses_its_series_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "FRAME_BYTES", 2048)
    rows, _ = _data()
    info = blocks.write_block(tmp_path, 1, 0, rows, created_ms=1, newest_ms=2, compress=True)
    offsets = info.index["offset"]
    victim = int(offsets[len(offsets) // 2])
    lost = info.index["series"][offsets == victim].tolist()
    raw = bytearray(info.path.read_bytes())
    raw[victim + 3] ^= 0xFF
    info.path.write_bytes(bytes(raw))
    block = blocks.open_block(info.path)
    back, bad = blocks.read_block(block)
    assert bad == 1
    kept = ~np.isin(rows.series, lost)
    assert _same(back, rows.select(kept))
    with pytest.raises(blocks.CorruptBlockError):
        blocks.read_chunk(block, lost[0])
    assert blocks.read_chunk(block, int(info.index["series"][0])) is not None
