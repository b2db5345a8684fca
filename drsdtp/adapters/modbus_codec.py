"""Modbus register maps: value types, byte/word order, and merging registers into contiguous block reads.

Byte order names the four bytes of a 32-bit value, ``A`` the most significant, in the order they appear on
the wire (register by register, high byte first)::

    ABCD  big-endian (the Modbus convention)      reg0 = AB, reg1 = CD
    CDAB  word-swapped (many PLCs, "little-endian word order")  reg0 = CD, reg1 = AB
    BADC  byte-swapped within each register      reg0 = BA, reg1 = DC
    DCBA  little-endian                          reg0 = DC, reg1 = BA

The same two swaps (word order, byte order) generalise to 64-bit values; 16-bit values only byte-swap.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ORDERS",
    "TABLES",
    "TYPES",
    "Block",
    "BlockDecoder",
    "RegisterSpec",
    "decode",
    "encode",
    "plan_blocks",
]

# name -> (registers, struct format of the big-endian bytes)
TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
    "int64": (4, ">q"),
    "uint64": (4, ">Q"),
    "float64": (4, ">d"),
    "bool": (1, ""),  # one coil / discrete input
}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
TABLES = ("holding", "input", "coil", "discrete")
BIT_TABLES = ("coil", "discrete")
MAX_BLOCK = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}  # protocol limits per request


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    twin: str
    field: str
    unit: int
    table: str
    address: int
    type: str
    order: str
    scale: float
    offset: float
    poll_interval_s: float

    @property
    def count(self) -> int:
        return TYPES[self.type][0]

    @property
    def end(self) -> int:
        return self.address + self.count


def decode(words: Sequence[int], type_: str, order: str) -> float:
    """Registers (0..65535 each) -> the raw number, honouring byte/word order."""
    _, fmt = TYPES[type_]
    if order in ("CDAB", "DCBA") and len(words) > 1:
        words = list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if order in ("BADC", "DCBA"):
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    return float(struct.unpack(fmt, raw)[0])


def encode(value: float | int, type_: str, order: str) -> list[int]:
    """The inverse of :func:`decode` (tests and simulated devices)."""
    _, fmt = TYPES[type_]
    raw = struct.pack(fmt, value)
    if order in ("BADC", "DCBA"):
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA") and len(words) > 1:
        words.reverse()
    return words


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) from ``start`` of ``table`` on ``unit``."""

    unit: int
    table: str
    start: int
    count: int
    specs: tuple[RegisterSpec, ...]
    poll_interval_s: float


def plan_blocks(specs: Sequence[RegisterSpec], max_block: int, max_gap: int) -> list[Block]:
    """Merge registers of the same unit, table and poll interval into as few reads as possible.

    Two registers share a read when the span stays within ``max_block`` (and the protocol limit) and the
    unused gap between them is at most ``max_gap`` registers: reading a few unused registers is cheaper than
    another round trip (a 100-register read costs about the same as a 1-register read).
    """
    groups: dict[tuple[int, str, float], list[RegisterSpec]] = {}
    for s in specs:
        groups.setdefault((s.unit, s.table, s.poll_interval_s), []).append(s)
    blocks: list[Block] = []
    for (unit, table, interval), members in sorted(groups.items()):
        limit = min(max_block, MAX_BLOCK[table])
        members.sort(key=lambda s: (s.address, s.count))
        current: list[RegisterSpec] = []
        start = end = 0
        for s in members:
            if current and (s.address - end > max_gap or max(end, s.end) - start > limit):
                blocks.append(Block(unit, table, start, end - start, tuple(current), interval))
                current = []
            if not current:
                start, end = s.address, s.end
            current.append(s)
            end = max(end, s.end)
        if current:
            blocks.append(Block(unit, table, start, end - start, tuple(current), interval))
    return blocks


_NUMPY_TYPES = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "float32": ">f4",
    "int64": ">i8",
    "uint64": ">u8",
    "float64": ">f8",
}


def _wire_positions(nbytes: int, order: str) -> list[int]:
    """For value bytes A, B, C, ... (big-endian), their positions among the registers' wire bytes."""
    wire = list(range(nbytes))  # label = index of the value byte; transform like encode() does
    if order in ("BADC", "DCBA"):
        wire = [b for i in range(0, nbytes, 2) for b in (wire[i + 1], wire[i])]
    words = [wire[i : i + 2] for i in range(0, nbytes, 2)]
    if order in ("CDAB", "DCBA") and len(words) > 1:
        words.reverse()
    flat = [b for w in words for b in w]
    pos = [0] * nbytes
    for at, label in enumerate(flat):
        pos[label] = at
    return pos


class BlockDecoder:
    """Decodes every register of a block read at once: one numpy gather per data type, no per-value Python.

    Output order is by data type, then address; ``twins``/``fields`` line up with :meth:`values`.
    """

    def __init__(self, block: Block) -> None:
        self.block = block
        self.bits = block.table in BIT_TABLES
        groups: dict[str, list[RegisterSpec]] = {}
        for spec in block.specs:
            groups.setdefault(spec.type, []).append(spec)
        self._plans: list[
            tuple[np.dtype[Any], npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64]]
        ]
        self._plans = []
        self.twins: list[str] = []
        self.fields: list[str] = []
        for type_, specs in groups.items():
            self.twins += [s.twin for s in specs]
            self.fields += [s.field for s in specs]
            if self.bits:
                index = np.array([s.address - block.start for s in specs], dtype=np.intp)
                self._plans.append((np.dtype(np.bool_), index, _col(specs, "scale"), _col(specs, "offset")))
                continue
            nbytes = TYPES[type_][0] * 2
            rows = [
                [2 * (s.address - block.start) + p for p in _wire_positions(nbytes, s.order)] for s in specs
            ]
            index = np.array(rows, dtype=np.intp)
            self._plans.append(
                (np.dtype(_NUMPY_TYPES[type_]), index, _col(specs, "scale"), _col(specs, "offset"))
            )

    def values(self, words_or_bits: Sequence[int] | Sequence[bool]) -> list[float]:
        if self.bits:
            arr = np.asarray(words_or_bits, dtype=np.float64)
            bits: list[float] = np.concatenate(
                [arr[index] * scale + offset for _, index, scale, offset in self._plans]
            ).tolist()
            return bits
        wire = np.asarray(words_or_bits, dtype=">u2").view(np.uint8)
        parts = [
            np.ascontiguousarray(wire[index]).view(dtype).ravel().astype(np.float64) * scale + offset
            for dtype, index, scale, offset in self._plans
        ]
        result: list[float] = np.concatenate(parts).tolist()
        return result


def _col(specs: list[RegisterSpec], name: str) -> npt.NDArray[np.float64]:
    return np.array([getattr(s, name) for s in specs], dtype=np.float64)
