"""Immutable block files: the readings (level 0) or buckets (level >= 1) of many series, sorted by series.

Block file::

    header   32 B   "DTHB" | version u16 | level u8 | flags u8 | block id u64 | created_ms i64 | newest_ms i64
    frames   *      each: the chunks of consecutive series back to back (one zlib level 1 stream if flags & 1)
    index    40 B each: series u32 | offset u64 | length u32 | rows u32 | min_ts, max_ts i64 | crc32 u32
    trailer  24 B   index offset u64 | series u32 | index crc32 u32 | "DTHE" | reserved u32

A series' chunk is its columns back to back (ts as deltas, its first from 0, if compressed). Level 0
columns: ts i64, value f64. Level >= 1: start i64, min f64, max f64, sum f64, count i64. An index entry
names its frame (offset, length and crc32 of the frame's bytes in the file): the series sharing a frame
share those, and a series' place in its frame follows from the rows of the series before it there.

Version 2 compresses about ``FRAME_BYTES`` of chunks in one zlib call: version 1 made one call per series,
and a replica folding a peer's stream of 100k fields a flush spent a third of its CPU in them (zlib's
set-up per call is ten times the cost of compressing a 20-reading chunk). Version 1 blocks (one series a
frame) read the same way. Uncompressed blocks keep one series a frame.

A block is written to a temporary name, fsynced and renamed, so it is whole or absent; each frame carries
its own CRC, checked when read, so a query of one series reads (and verifies) only that series' frame, and
damage loses the series of one frame.
"""

from __future__ import annotations

import itertools
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

MAGIC, END_MAGIC, VERSION = b"DTHB", b"DTHE", 2
READABLE_VERSIONS = (1, 2)
FRAME_BYTES = 16 * 1024  # chunk bytes compressed together: a query of one series decompresses a frame
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
    """One series' chunk as a version 1 block held it (kept for the tests of the chunk layout)."""
    if not compress:
        return b"".join(c.tobytes() for c in columns)
    ts = columns[0]
    deltas = np.diff(ts, prepend=np.int64(0)).astype("<i8")  # regular sampling -> near-constant deltas
    return zlib.compress(b"".join([deltas.tobytes(), *(c.tobytes() for c in columns[1:])]), 1)


def _chunk_words(
    columns: list[NDArray[np.generic]], heads: NDArray[np.intp], lengths: NDArray[np.intp], compress: bool
) -> NDArray[np.uint64]:
    """Every series' chunk back to back as 8-byte words, built in a few vector operations: series s's
    column c, row r lands at ``ncols * heads[s] + c * lengths[s] + r``."""
    ts = columns[0].astype("<i8")
    if compress:
        deltas = np.diff(ts, prepend=np.int64(0))
        deltas[heads] = ts[heads]
        ts = deltas
    ncols, rows = len(columns), len(ts)
    head_of = np.repeat(heads, lengths)
    length_of = np.repeat(lengths, lengths)
    base = ncols * head_of + (np.arange(rows) - head_of)
    words = np.empty(ncols * rows, "<u8")
    for c, col in enumerate([ts, *columns[1:]]):
        words[base + c * length_of] = np.ascontiguousarray(col).view("<u8")
    return words


def _frame_heads(heads: NDArray[np.intp], ncols: int, compress: bool) -> NDArray[np.intp]:
    """The first series (index into ``heads``) of each frame: each series alone when not compressed, else
    the series whose chunks start in the same ``FRAME_BYTES`` window."""
    if not compress or len(heads) == 0:
        return np.arange(len(heads))
    window = (8 * ncols * heads.astype(np.int64)) // FRAME_BYTES
    return np.flatnonzero(np.diff(window, prepend=np.int64(-1)))


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
    ncols = len(columns)
    words = _chunk_words(columns, heads, lengths, compress)
    first = _frame_heads(heads, ncols, compress)
    bounds = (ncols * np.append(heads[first], len(key_ts))).tolist()  # word bounds of the frames
    frames = [  # each frame compressed as it is cut (no second copy of the whole block's bytes)
        zlib.compress(words[lo:hi].tobytes(), 1) if compress else words[lo:hi].tobytes()
        for lo, hi in itertools.pairwise(bounds)
    ]
    sizes = np.fromiter((len(f) for f in frames), np.int64, len(frames))
    per_frame = np.diff(np.append(first, len(heads)))  # series in each frame
    index = np.zeros(len(heads), _INDEX_FIELDS)
    index["series"] = data.series[heads]
    index["offset"] = np.repeat(_HEADER.size + np.cumsum(sizes) - sizes, per_frame)
    index["length"] = np.repeat(sizes, per_frame)
    index["rows"] = lengths
    index["min_ts"] = key_ts[heads]
    index["max_ts"] = key_ts[heads + lengths - 1]
    index["crc"] = np.repeat(np.fromiter((zlib.crc32(f) for f in frames), np.uint32, len(frames)), per_frame)
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
            for frame in frames:
                f.write(frame)
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
        if magic != MAGIC or end_magic != END_MAGIC or version not in READABLE_VERSIONS:
            raise CorruptBlockError(f"{path}: not a version {READABLE_VERSIONS} history block")
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
    if bool((np.diff(index["offset"].astype(np.int64)) < 0).any()):
        raise CorruptBlockError(f"{path}: index frames out of order")
    return BlockInfo(block_id, level, path, created_ms, newest_ms, bool(flags & FLAG_ZLIB), size, index)


def _frame_words(block: BlockInfo, entry: np.void, data: bytes, rows: int) -> NDArray[np.uint64]:
    """The frame's chunks as words, checked against the entry's crc and the ``rows`` the index gives it."""
    if zlib.crc32(data) != int(entry["crc"]):
        raise CorruptBlockError(f"{block.path}: frame at {int(entry['offset'])} fails its checksum")
    if block.compressed:
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise CorruptBlockError(f"{block.path}: frame does not decompress: {exc}") from exc
    ncols = _RAW_COLUMNS if block.level == 0 else _BUCKET_COLUMNS
    if len(data) != 8 * rows * ncols:
        raise CorruptBlockError(
            f"{block.path}: frame at {int(entry['offset'])} holds {len(data)} bytes, expected "
            f"{8 * rows * ncols}"
        )
    return np.frombuffer(data, "<u8")


def _split(
    block: BlockInfo, words: NDArray[np.uint64], lengths: NDArray[np.int64]
) -> list[NDArray[np.generic]]:
    """The columns of consecutive chunks (``lengths`` rows each) held back to back in ``words``: the
    inverse of :func:`_chunk_words`, one gather per column."""
    ncols = _RAW_COLUMNS if block.level == 0 else _BUCKET_COLUMNS
    rows = int(lengths.sum())
    heads = np.cumsum(lengths) - lengths
    head_of = np.repeat(heads, lengths)
    length_of = np.repeat(lengths, lengths)
    base = ncols * head_of + (np.arange(rows) - head_of)
    cols: list[NDArray[np.generic]] = []
    for c in range(ncols):
        kind = "<i8" if c == 0 or (ncols == _BUCKET_COLUMNS and c == ncols - 1) else "<f8"
        cols.append(words[base + c * length_of].view(kind))
    if block.compressed and rows:  # each chunk's time deltas from 0: a running sum restarted per chunk
        total = np.cumsum(cols[0], dtype=np.int64)  # wraps modulo 2**64 on many chunks; the differences hold
        before = np.concatenate([np.zeros(1, np.int64), total])[heads]
        cols[0] = total - np.repeat(before, lengths)
    return cols


def _assemble(level: int, series: NDArray[np.uint32], cols: list[NDArray[np.generic]]) -> Rows | Buckets:
    ts = cols[0].astype(np.int64)
    if level == 0:
        return Rows(series, ts, cols[1].astype(np.float64))
    f64 = [c.astype(np.float64) for c in cols[1:4]]
    return Buckets(series, ts, f64[0], f64[1], f64[2], cols[4].astype(np.int64))


def read_chunk(block: BlockInfo, series: int) -> Rows | Buckets | None:
    """The data of one series in ``block`` (None if absent); CorruptBlockError if its frame is damaged."""
    entry = block.entry(series)
    if entry is None:
        return None
    offsets = block.index["offset"]
    at = int(np.searchsorted(block.index["series"], series))
    lo = int(np.searchsorted(offsets, entry["offset"], "left"))
    hi = int(np.searchsorted(offsets, entry["offset"], "right"))
    rows = block.index["rows"][lo:hi].astype(np.int64)
    try:
        fd = os.open(block.path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(f"cannot open history block {block.path}", exc) from exc
    try:
        data = read_exact(fd, int(entry["length"]), int(entry["offset"]))
    finally:
        os.close(fd)
    words = _frame_words(block, entry, data, int(rows.sum()))
    ncols = _RAW_COLUMNS if block.level == 0 else _BUCKET_COLUMNS
    start = ncols * int(rows[: at - lo].sum())
    n = int(entry["rows"])
    cols = _split(block, words[start : start + ncols * n], np.array([n], np.int64))
    return _assemble(block.level, np.full(n, series, np.uint32), cols)


def read_block(block: BlockInfo) -> tuple[Rows | Buckets, int]:
    """All data of a block (for compaction) and the number of damaged frames skipped (logged)."""
    try:
        data = block.path.read_bytes()
    except OSError as exc:
        raise storage_error(f"cannot read history block {block.path}", exc) from exc
    index = block.index
    rows = index["rows"].astype(np.int64)
    first = np.flatnonzero(np.diff(index["offset"].astype(np.int64), prepend=np.int64(-1)))
    ends = np.append(first[1:], len(index)).tolist()
    frame_rows = np.add.reduceat(rows, first).tolist() if len(first) else []
    parts: list[NDArray[np.uint64]] = []
    good = np.ones(len(index), np.bool_)
    bad = 0
    for lo, hi, n in zip(first.tolist(), ends, frame_rows, strict=True):
        entry = index[lo]
        start = int(entry["offset"])
        try:
            parts.append(_frame_words(block, entry, data[start : start + int(entry["length"])], n))
        except CorruptBlockError as exc:
            _log.error("history block: %s; the readings of its %d series are lost", exc, hi - lo)
            good[lo:hi] = False
            bad += 1
    if not parts:
        empty = Rows.empty() if block.level == 0 else Buckets.empty()
        return empty, bad
    kept = rows[good]
    cols = _split(block, np.concatenate(parts), kept)
    series = np.repeat(index["series"][good].astype(np.uint32), kept)
    return _assemble(block.level, series, cols), bad
