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

import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


def _word_order(spec: RegisterSpec, start: int) -> list[int]:
    """The block positions of a value's registers, most significant word first."""
    at = list(range(spec.address - start, spec.end - start))
    return at[::-1] if spec.order in ("CDAB", "DCBA") else at


class _Gather:
    """Values whose registers are not in plain big-endian order: gather their words most significant
    first, pack them with each register's bytes kept (``>H``) or swapped (``<H``), unpack them at once."""

    __slots__ = ("_get", "_pack", "_unpack")

    def __init__(self, words: list[int], swap_bytes: bool, codes: str) -> None:
        get = operator.itemgetter(*words)
        self._get: Callable[[Sequence[int]], Any] = (lambda w: (get(w),)) if len(words) == 1 else get
        self._pack = struct.Struct(f"{'<' if swap_bytes else '>'}{len(words)}H").pack
        self._unpack = struct.Struct(">" + codes).unpack

    def __call__(self, words: Sequence[int]) -> tuple[float | int, ...]:
        values: tuple[float | int, ...] = self._unpack(self._pack(*self._get(words)))
        return values


class BlockDecoder:
    """Decodes every register of a block read at once, with a plan made once per block: the response's
    bytes (or its words, packed into bytes in one call which also checks that each is a register), the
    big-endian values (the Modbus convention) unpacked from them in one more, skipping unused registers;
    other byte orders cost one gather, pack and unpack per order. No numpy: an idle Modbus adapter does
    not load it.

    ``twins``/``fields`` line up with :meth:`values`.
    """

    def __init__(self, block: Block) -> None:
        self.block = block
        self.bits = block.table in BIT_TABLES
        self._bit_index: tuple[int, ...] = ()
        self._direct: struct.Struct | None = None
        self._plans: list[_Gather] = []
        specs: list[RegisterSpec] = []
        if self.bits:
            specs = list(block.specs)
            self._bit_index = tuple(s.address - block.start for s in specs)
        else:
            direct: list[RegisterSpec] = []
            codes, end = ">", block.start
            swapped: dict[bool, list[RegisterSpec]] = {False: [], True: []}
            for s in sorted(block.specs, key=lambda s: (s.address, s.count)):
                plain = s.order == "ABCD" or (s.count == 1 and s.order == "CDAB")
                if plain and s.address >= end:  # in order, not overlapping the previous one
                    codes += "x" * (2 * (s.address - end)) + TYPES[s.type][1][1:]
                    end = s.end
                    direct.append(s)
                else:
                    swapped[s.order in ("BADC", "DCBA")].append(s)
            if direct:
                self._direct = struct.Struct(codes)
                specs += direct
            for swap, group in swapped.items():
                if group:
                    words = [w for s in group for w in _word_order(s, block.start)]
                    self._plans.append(_Gather(words, swap, "".join(TYPES[s.type][1][1:] for s in group)))
                    specs += group
        self.twins = [s.twin for s in specs]
        self.fields = [s.field for s in specs]
        self._pack_words = struct.Struct(f">{block.count}H").pack
        self._unpack_words = struct.Struct(f">{block.count}H").unpack
        # Integers become floats; values with a scale or an offset become raw * scale + offset (float64).
        self._ints = self.bits or any(TYPES[s.type][1][1] not in "fd" for s in specs)
        identity = all(s.scale == 1.0 and s.offset == 0.0 for s in specs)
        self._scales = None if identity else [s.scale for s in specs]
        self._offsets = [s.offset for s in specs]

    def values(self, response: bytes | Sequence[int] | Sequence[bool]) -> list[float]:
        """``response``: the registers' bytes as on the wire (what :mod:`drsdtp.adapters.modbus_pdu` keeps:
        no list of numbers made), or the registers (or bits) as numbers."""
        raw: list[Any]
        if self.bits:
            raw = [response[i] for i in self._bit_index]
        else:
            words: Sequence[int]
            if isinstance(response, bytes):
                if len(response) != 2 * self.block.count:
                    raise ValueError(f"{len(response)} bytes for {self.block.count} registers")
                packed = response
                words = self._unpack_words(packed) if self._plans else ()
            else:
                words = response
                # struct.error for a word that is no register (or a response of the wrong length).
                packed = self._pack_words(*words) if len(words) == self.block.count else _pack_any(words)
            raw = list(self._direct.unpack_from(packed)) if self._direct is not None else []
            for plan in self._plans:
                raw += plan(words)
        if self._scales is not None:  # int * float is a float, rounded as float(int) * float
            return list(map(operator.add, map(operator.mul, raw, self._scales), self._offsets))
        return list(map(float, raw)) if self._ints else raw


def _pack_any(words: Sequence[int]) -> bytes:
    return struct.pack(f">{len(words)}H", *words)
