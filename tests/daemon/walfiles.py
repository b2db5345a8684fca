"""Reads the write-ahead log's files the way recovery does (format 2), for tests that damage them on purpose.

Format (``crdt_core/src/wal/frame.rs``): a 24-byte file header, then records
``[0xD7 0x57][kind u8][flags u8][len u32][seq u64][index u32][payload crc32][header crc32][payload]``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

FILE_HEADER = 24
RECORD_HEADER = 28
DELTA, AUX, CHUNK, SNAPSHOT_END, CLOSE = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Record:
    offset: int  # of the header in the file
    kind: int
    seq: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER + len(self.payload)


def records(path: Path) -> list[Record]:
    """Every record of an undamaged format-2 segment or snapshot file, in order."""
    data = path.read_bytes()
    out, at = [], FILE_HEADER
    while at < len(data):
        magic, kind, _, length, seq, _, _, _ = struct.unpack_from("<2sBBIQIII", data, at)
        assert magic == b"\xd7\x57", f"{path.name}: no record at byte {at}"
        out.append(Record(at, kind, seq, data[at + RECORD_HEADER : at + RECORD_HEADER + length]))
        at += RECORD_HEADER + length
    return out


def flip(path: Path, offset: int, length: int = 4) -> bytes:
    """XORs ``length`` bytes at ``offset`` (a bit-rot stand-in); returns the damaged bytes as now on disk."""
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + length):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    return bytes(data[offset : offset + length])
