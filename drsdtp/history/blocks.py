"""Immutable block files: the readings (level 0) or buckets (level >= 1) of many series, sorted by series.

Block file::

    header   32 B   "DTHB" | version u16 | level u8 | flags u8 | block id u64 | created_ms i64 | newest_ms i64
    chunks   *      one per series: its columns back to back (zlib level 1 if flags & 1, ts as deltas)
    index    36 B each: series u32 | offset u64 | length u32 | rows u32 | min_ts, max_ts i64 | crc32 u32
    trailer  24 B   index offset u64 | series u32 | index crc32 u32 | "DTHE" | reserved u32

Level 0 columns: ts i64, value f64. Level >= 1: start i64, min f64, max f64, sum f64, count i64.
A block is written to a temporary name, fsynced and renamed, so it is whole or absent; each chunk carries
its own CRC, checked when read, so a query of one series reads (and verifies) only that series.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drsdtp.errors import DecodeError
from drsdtp.history.files import read_exact, storage_error
from drsdtp.history.series import Buckets, Rows, group_bounds

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "BlockInfo",
    "CorruptBlockError",
    "block_path",
    "open_block",
    "read_block",
    "read_chunk",
    "write_block",
]

_log = logging.getLogger(__name__)

MAGIC, END_MAGIC, VERSION = b"DTHB", b"DTHE", 1
FLAG_ZLIB = 1
_HEADER = struct.Struct("<4sHBBQqq")
_TRAILER = struct.Struct("<QII4sI")
_INDEX_FIELDS = (
    [("series", "<u4"), ("offset", "<u8"), ("length", "<u4"), ("rows", "<u4"),
     ("min_ts", "<i8"), ("max_ts", "<i8"), ("crc", "<u4")]
)  # fmt: skip
_INDEX_ITEMSIZE = 40  # bytes of one _INDEX_FIELDS row (packed)
_RAW_COLUMNS = 2
_BUCKET_COLUMNS = 5


class CorruptBlockError(DecodeError):
    """A block (or one series chunk of it) fails its checksum or framing."""


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """What is known of a block without reading its chunks: header, trailer and index."""

    block_id: int
    level: int
    path: Path
    created_ms: int
    newest_ms: int  # retention age: min(newest reading, when it arrived), carried through compaction
    compressed: bool
    size: int
    index: NDArray[np.void]  # _INDEX_FIELDS, sorted by series

    @property
    def rows(self) -> int:
        return int(self.index["rows"].sum(dtype=np.int64))

    @property
    def min_ts(self) -> int:
        return int(self.index["min_ts"].min()) if len(self.index) else 0

    @property
    def max_ts(self) -> int:
        return int(self.index["max_ts"].max()) if len(self.index) else 0

    def entry(self, series: int) -> np.void | None:
        """The index entry of ``series`` (None if the block does not hold it)."""
        keys = self.index["series"]
        at = int(np.searchsorted(keys, series))
        if at < len(keys) and int(keys[at]) == series:
            entry: np.void = self.index[at]
            return entry
        return None


def block_path(directory: Path, block_id: int) -> Path:
    return directory / f"blk-{block_id:012d}.dat"


def _encode_columns(columns: list[NDArray[np.generic]], compress: bool) -> bytes:
    if not compress:
        return b"".join(c.tobytes() for c in columns)
    ts = columns[0]
    deltas = np.diff(ts, prepend=np.int64(0)).astype("<i8")  # regular sampling -> near-constant deltas
    return zlib.compress(b"".join([deltas.tobytes(), *(c.tobytes() for c in columns[1:])]), 1)


def _encode_series(
    columns: list[NDArray[np.generic]], heads: NDArray[np.intp], lengths: NDArray[np.intp], compress: bool
) -> list[bytes]:
    """Each series' chunk, as :func:`_encode_columns` encodes its slice of ``columns``, with the per-series
    Python work cut to one slice, one ``tobytes`` and one compress: the time deltas of every series at once
    (each series' first from 0) and the columns as rows of one table, so a series' columns are one
    row-major slice. A replica folding a peer's stream of 100k fields spent most of its CPU here."""
    if not compress:
        return [
            _encode_columns([c[h : h + n] for c in columns], False)
            for h, n in zip(heads.tolist(), lengths.tolist(), strict=True)
        ]
    ts = columns[0].astype("<i8")
    deltas = np.diff(ts, prepend=np.int64(0))
    deltas[heads] = ts[heads]
    table = np.stack([deltas.view("<u8"), *(np.ascontiguousarray(c).view("<u8") for c in columns[1:])])
    return [
        zlib.compress(table[:, h : h + n].tobytes(), 1)
        for h, n in zip(heads.tolist(), lengths.tolist(), strict=True)
    ]


def _decode_columns(data: bytes, rows: int, ncols: int, compressed: bool) -> list[NDArray[np.generic]]:
    if compressed:
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise CorruptBlockError(f"chunk does not decompress: {exc}") from exc
    if len(data) != 8 * rows * ncols:
        raise CorruptBlockError(f"chunk holds {len(data)} bytes, expected {8 * rows * ncols}")
    cols: list[NDArray[np.generic]] = []
    for i in range(ncols):
        kind = "<i8" if i == 0 or (ncols == _BUCKET_COLUMNS and i == ncols - 1) else "<f8"
        cols.append(np.frombuffer(data, kind, rows, 8 * rows * i))
    if compressed:
        cols[0] = np.cumsum(cols[0], dtype=np.int64)
    return cols


def write_block(
    directory: Path,
    block_id: int,
    level: int,
    data: Rows | Buckets,
    *,
    created_ms: int,
    newest_ms: int,
    compress: bool,
) -> BlockInfo:
    """Write ``data`` (sorted by series then time, as ``sorted_unique``/``merged`` leave it) as a block."""
    if isinstance(data, Rows):
        key_ts = data.ts
        columns: list[NDArray[np.generic]] = [data.ts.astype("<i8"), data.value.astype("<f8")]
    else:
        key_ts = data.start
        columns = [data.start.astype("<i8"), data.min.astype("<f8"), data.max.astype("<f8"),
                   data.sum.astype("<f8"), data.count.astype("<i8")]  # fmt: skip
    heads, lengths = group_bounds(data.series)
    chunks = _encode_series(columns, heads, lengths, compress)
    sizes = np.fromiter((len(c) for c in chunks), np.int64, len(chunks))
    index = np.zeros(len(heads), _INDEX_FIELDS)
    index["series"] = data.series[heads]
    index["offset"] = _HEADER.size + np.cumsum(sizes) - sizes
    index["length"] = sizes
    index["rows"] = lengths
    index["min_ts"] = key_ts[heads]
    index["max_ts"] = key_ts[heads + lengths - 1]
    index["crc"] = np.fromiter((zlib.crc32(c) for c in chunks), np.uint32, len(chunks))
    offset = _HEADER.size + int(sizes.sum())
    index_bytes = index.tobytes()
    header = _HEADER.pack(
        MAGIC, VERSION, level, FLAG_ZLIB if compress else 0, block_id, created_ms, newest_ms
    )
    trailer = _TRAILER.pack(offset, len(index), zlib.crc32(index_bytes), END_MAGIC, 0)
    path = block_path(directory, block_id)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for chunk in chunks:
                f.write(chunk)
            f.write(index_bytes)
            f.write(trailer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the caller fsyncs the directory before the manifest names the block
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(f"cannot write history block {path}", exc) from exc
    size = len(header) + (offset - _HEADER.size) + len(index_bytes) + len(trailer)
    return BlockInfo(block_id, level, path, created_ms, newest_ms, compress, size, index)


def open_block(path: Path) -> BlockInfo:
    """Header, trailer and index of a block; CorruptBlockError if any of them is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(f"cannot open history block {path}", exc) from exc
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER.size + _TRAILER.size:
            raise CorruptBlockError(f"{path}: {size} bytes is too short for a block")
        magic, version, level, flags, block_id, created_ms, newest_ms = _HEADER.unpack(
            read_exact(fd, _HEADER.size, 0)
        )
        index_offset, count, index_crc, end_magic, _ = _TRAILER.unpack(
            read_exact(fd, _TRAILER.size, size - _TRAILER.size)
        )
        if magic != MAGIC or end_magic != END_MAGIC or version != VERSION:
            raise CorruptBlockError(f"{path}: not a version {VERSION} history block")
        index_size = count * _INDEX_ITEMSIZE
        if index_offset + index_size + _TRAILER.size != size:
            raise CorruptBlockError(f"{path}: index does not fit the file")
        index_bytes = read_exact(fd, index_size, index_offset)
        if zlib.crc32(index_bytes) != index_crc:
            raise CorruptBlockError(f"{path}: index checksum mismatch")
    finally:
        os.close(fd)
    index = np.frombuffer(index_bytes, _INDEX_FIELDS).copy()
    if bool((index["offset"] + index["length"] > index_offset).any()):
        raise CorruptBlockError(f"{path}: index points past the chunks")
    return BlockInfo(block_id, level, path, created_ms, newest_ms, bool(flags & FLAG_ZLIB), size, index)


def _columns(block: BlockInfo, entry: np.void, data: bytes) -> list[NDArray[np.generic]]:
    if zlib.crc32(data) != int(entry["crc"]):
        raise CorruptBlockError(f"{block.path}: chunk of series {int(entry['series'])} fails its checksum")
    ncols = _RAW_COLUMNS if block.level == 0 else _BUCKET_COLUMNS
    return _decode_columns(data, int(entry["rows"]), ncols, block.compressed)


def _assemble(level: int, series: NDArray[np.uint32], cols: list[NDArray[np.generic]]) -> Rows | Buckets:
    ts = cols[0].astype(np.int64)
    if level == 0:
        return Rows(series, ts, cols[1].astype(np.float64))
    f64 = [c.astype(np.float64) for c in cols[1:4]]
    return Buckets(series, ts, f64[0], f64[1], f64[2], cols[4].astype(np.int64))


def read_chunk(block: BlockInfo, series: int) -> Rows | Buckets | None:
    """The data of one series in ``block`` (None if absent); CorruptBlockError if its chunk is damaged."""
    entry = block.entry(series)
    if entry is None:
        return None
    try:
        fd = os.open(block.path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(f"cannot open history block {block.path}", exc) from exc
    try:
        data = read_exact(fd, int(entry["length"]), int(entry["offset"]))
    finally:
        os.close(fd)
    cols = _columns(block, entry, data)
    return _assemble(block.level, np.full(int(entry["rows"]), series, np.uint32), cols)


def read_block(block: BlockInfo) -> tuple[Rows | Buckets, int]:
    """All data of a block (for compaction) and the number of damaged chunks skipped (logged)."""
    try:
        data = block.path.read_bytes()
    except OSError as exc:
        raise storage_error(f"cannot read history block {block.path}", exc) from exc
    parts: list[list[NDArray[np.generic]]] = []
    series_parts: list[NDArray[np.uint32]] = []
    bad = 0
    for entry in block.index:
        start = int(entry["offset"])
        try:
            cols = _columns(block, entry, data[start : start + int(entry["length"])])
        except CorruptBlockError as exc:
            _log.error("history block: %s; its readings are lost", exc)
            bad += 1
            continue
        parts.append(cols)
        series_parts.append(np.full(int(entry["rows"]), int(entry["series"]), np.uint32))
    if not parts:
        empty = Rows.empty() if block.level == 0 else Buckets.empty()
        return empty, bad
    cols = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    return _assemble(block.level, np.concatenate(series_parts), cols), bad
