"""The on-disk form of dead letters: append-only segment files of checksummed records.

A directory holds ``seg-<n>.dl`` files, ``n`` increasing; new letters are appended to the newest one. A
record is ``b"DL1" | u32 body length | u32 crc32(body)`` followed by the body: ``u32 meta length``, the
letter's metadata as JSON, then its payload. Reading stops at the first record that is torn or fails its
checksum; in the newest segment that tail is cut (a crash mid-append), anywhere else the rest of that segment
is skipped and reported. Removing letters rewrites a segment without them (a new file, fsynced, renamed over
the old one) or deletes it when nothing is left: segments are small (a fraction of the store's bound), and
removal is an operator's action, so this is rare and simple, and no tombstone can outlive its letter.

Everything here blocks: the store calls it from a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Record",
    "SegmentScan",
    "append",
    "encode",
    "read_payload",
    "remove_records",
    "scan",
    "segment_path",
    "segments",
    "truncate",
    "unlink",
]

_MAGIC = b"DL1"
_HEADER = struct.Struct("<3sII")  # magic, body length, crc32 of the body
_META_LEN = struct.Struct("<I")
_NAME = re.compile(r"seg-(\d{8})\.dl")
MAX_RECORD = 1 << 30  # a length beyond this is corruption, not a letter


@dataclass(frozen=True, slots=True)
class Record:
    meta: dict[str, Any]
    payload: bytes
    offset: int  # where the record starts in its segment
    length: int  # header + body


@dataclass(frozen=True, slots=True)
class SegmentScan:
    records: list[Record]
    good_bytes: int  # the valid prefix
    damaged: bool  # something after good_bytes was torn or corrupt


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"seg-{number:08d}.dl"


def segments(directory: Path) -> list[int]:
    """Segment numbers present, oldest first."""
    found = []
    for entry in os.listdir(directory):
        m = _NAME.fullmatch(entry)
        if m is not None:
            found.append(int(m.group(1)))
    return sorted(found)


def encode(meta: dict[str, Any], payload: bytes) -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    body = _META_LEN.pack(len(meta_bytes)) + meta_bytes + payload
    return _HEADER.pack(_MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> tuple[dict[str, Any], bytes] | None:
    if len(body) < _META_LEN.size:
        return None
    (meta_len,) = _META_LEN.unpack_from(body)
    end = _META_LEN.size + meta_len
    if end > len(body):
        return None
    try:
        meta = json.loads(body[_META_LEN.size : end])
    except ValueError:
        return None
    return (meta, body[end:]) if isinstance(meta, dict) else None


def read_payload(path: Path, offset: int, length: int) -> bytes | None:
    """The payload of the record at ``offset`` (None if it is not a valid record)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    if len(data) < _HEADER.size:
        return None
    magic, body_len, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if magic != _MAGIC or body_len != len(body) or zlib.crc32(body) != crc:
        return None
    decoded = _decode_body(body)
    return None if decoded is None else decoded[1]


def scan(path: Path) -> SegmentScan:
    data = path.read_bytes()
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        if pos + _HEADER.size > len(data):
            break
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if magic != _MAGIC or length > MAX_RECORD or end > len(data):
            break
        body = data[start:end]
        decoded = _decode_body(body) if zlib.crc32(body) == crc else None
        if decoded is None:
            break
        records.append(Record(decoded[0], decoded[1], pos, end - pos))
        pos = end
    return SegmentScan(records, pos, pos < len(data))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(path: Path, records: Iterable[bytes]) -> int:
    """Append encoded records and fsync (one fsync for the whole group); returns the file's new size."""
    new = not path.exists()
    with path.open("ab") as fh:
        fh.write(b"".join(records))
        fh.flush()
        os.fsync(fh.fileno())
        size = fh.tell()
    if new:
        _fsync_dir(path.parent)  # the file's name must survive a power cut too
    return size


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(size)
        os.fsync(fh.fileno())


def remove_records(path: Path, drop: set[int]) -> list[tuple[int, int]]:
    """Rewrite ``path`` without the records starting at the offsets in ``drop``; deletes the file when
    nothing remains. Returns ``(old offset, new offset)`` of every record kept."""
    data = path.read_bytes()
    kept = [r for r in scan(path).records if r.offset not in drop]
    if not kept:
        unlink(path)
        return []
    tmp = path.with_suffix(".tmp")
    moved: list[tuple[int, int]] = []
    with tmp.open("wb") as fh:
        for r in kept:
            moved.append((r.offset, fh.tell()))
            fh.write(data[r.offset : r.offset + r.length])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return moved


def unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
