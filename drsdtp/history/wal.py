"""Write-ahead segments of raw readings: append-only, one checksummed record per batch.

Segment file::

    header  16 B   magic "DTHW" | version u16 | reserved u16 | sequence u64
    record  *      length u32 | crc32 u32 (over the length bytes and the payload) | payload
    payload        rows u32 | groups u32 | journal u64 | ts i64[rows] | value f64[rows] | series u32[groups]
                   | n u32[groups]

Rows are grouped by series (``n`` rows each, in ``series`` order). ``journal`` is the batch's number in the
node's journal (see ``drsdtp.history.journal``; 0: none), so recovery knows which journalled batches history
already holds. Version 1 segments (no journal field) are still read, as journal 0.

Replay stops at the first record that is short (a torn write) or fails its checksum (corruption): the file
is truncated there, since framing after a bad record cannot be trusted, and everything before it is kept.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drsdtp.history.files import storage_error
from drsdtp.history.series import Rows

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["SegmentReplay", "SegmentWriter", "encode_record", "replay_segment", "segment_path"]

_log = logging.getLogger(__name__)

MAGIC = b"DTHW"
VERSION = 2
_HEADER = struct.Struct("<4sHHQ")
_RECORD = struct.Struct("<II")
_COUNTS_V1 = struct.Struct("<II")
_COUNTS = struct.Struct("<IIQ")
# A record larger than this is framing garbage, not data (a batch is at most a few MiB).
_MAX_PAYLOAD = 1 << 30


def segment_path(directory: Path, sequence: int) -> Path:
    return directory / f"wal-{sequence:012d}.log"


def encode_record(rows: Rows, group_series: np.ndarray, group_counts: np.ndarray, journal: int = 0) -> bytes:
    """One framed record; ``rows`` must already be grouped as ``group_series``/``group_counts`` describe."""
    payload = b"".join(
        (
            _COUNTS.pack(len(rows), len(group_series), journal),
            rows.ts.astype("<i8", copy=False).tobytes(),
            rows.value.astype("<f8", copy=False).tobytes(),
            group_series.astype("<u4", copy=False).tobytes(),
            group_counts.astype("<u4", copy=False).tobytes(),
        )
    )
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload


def _decode_payload(payload: bytes, version: int) -> tuple[Rows, int] | None:
    """(rows, journal number) of one record's payload; None if its sizes do not add up."""
    counts = _COUNTS if version >= 2 else _COUNTS_V1
    if len(payload) < counts.size:
        return None
    n, g, *rest = counts.unpack_from(payload)
    journal = rest[0] if rest else 0
    if len(payload) != counts.size + 16 * n + 8 * g:
        return None
    at = counts.size
    ts = np.frombuffer(payload, "<i8", n, at).astype(np.int64)
    value = np.frombuffer(payload, "<f8", n, at + 8 * n).astype(np.float64)
    series = np.frombuffer(payload, "<u4", g, at + 16 * n)
    n_per = np.frombuffer(payload, "<u4", g, at + 16 * n + 4 * g)
    if int(n_per.sum(dtype=np.int64)) != n:
        return None
    return Rows(np.repeat(series, n_per).astype(np.uint32), ts, value), journal


@dataclass(slots=True)
class SegmentReplay:
    sequence: int
    rows: Rows
    records: int
    cut_bytes: int  # bytes removed from the tail (0: the segment was whole)
    journal: int  # the highest journal number among its records (0: none)


def replay_segment(path: Path) -> SegmentReplay | None:
    """Read a segment back, cutting a torn or corrupt tail off the file. None: nothing usable (removed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise storage_error(f"cannot read history segment {path}", exc) from exc
    if len(data) < _HEADER.size:
        _log.warning("history segment %s has no complete header (%d bytes): removed", path, len(data))
        path.unlink(missing_ok=True)
        return None
    magic, version, _, sequence = _HEADER.unpack_from(data)
    if magic != MAGIC or not 1 <= version <= VERSION:
        _log.error("history segment %s has an unknown header (%r v%d): removed", path, magic, version)
        path.unlink(missing_ok=True)
        return None
    parts: list[Rows] = []
    journal = 0
    offset = _HEADER.size
    while offset < len(data):
        record = _record_at(data, offset, version)
        if record is None:
            break
        rows, record_journal, offset = record
        parts.append(rows)
        journal = max(journal, record_journal)
    cut = len(data) - offset
    if cut:
        _log.warning(
            "history segment %s: torn or corrupt record at byte %d; cut %d bytes, kept %d records",
            path, offset, cut, len(parts),
        )  # fmt: skip
        try:
            os.truncate(path, offset)
        except OSError as exc:
            raise storage_error(f"cannot cut the torn tail of {path}", exc) from exc
    return SegmentReplay(sequence, Rows.concat(parts), len(parts), cut, journal)


def _record_at(data: bytes, offset: int, version: int) -> tuple[Rows, int, int] | None:
    """(rows, journal number, offset of the next record) of the record at ``offset``; None if torn/bad."""
    if offset + _RECORD.size > len(data):
        return None
    length, crc = _RECORD.unpack_from(data, offset)
    start = offset + _RECORD.size
    end = start + length
    if length > _MAX_PAYLOAD or end > len(data):
        return None
    payload = data[start:end]
    if zlib.crc32(payload, zlib.crc32(data[offset : offset + 4])) != crc:
        return None
    decoded = _decode_payload(payload, version)
    return None if decoded is None else (*decoded, end)


class SegmentWriter:
    """The active segment: unbuffered appends (visible to readers at once), fsync only in :meth:`sync`."""

    def __init__(self, path: Path, sequence: int) -> None:
        self.path = path
        self.sequence = sequence
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise storage_error(f"cannot create history segment {path}", exc) from exc
        self.size = 0
        self.rows = 0
        self._dirty = True  # the header and the directory entry
        self._write(_HEADER.pack(MAGIC, VERSION, 0, sequence))

    def append(self, record: bytes, rows: int) -> None:
        self._write(record)
        self.rows += rows
        self._dirty = True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # A partial record (disk full) would hide every later record from replay: take it back.
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                _log.error("history segment %s: cannot remove a partial record", self.path)
            raise storage_error(f"cannot append to history segment {self.path}", exc) from exc
        self.size += len(data)

    def sync(self) -> bool:
        """fsync if anything was written since the last sync; True if it did."""
        if not self._dirty:
            return False
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise storage_error(f"cannot fsync history segment {self.path}", exc) from exc
        self._dirty = False
        return True

    def close(self) -> None:
        os.close(self._fd)
