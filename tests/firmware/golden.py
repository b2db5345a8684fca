"""The firmware's golden lines (firmware/protocol/golden.txt), which its host tests check the C side with."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

GOLDEN = Path(__file__).resolve().parents[2] / "firmware" / "protocol" / "golden.txt"


class Golden(NamedTuple):
    kind: str  # B: a board line, C: a command line, X: a corrupted board line
    name: str  # B: its name; C: the board's outcome; X: the reason the node drops it
    line: bytes


def golden(kind: str) -> list[Golden]:
    out = []
    for text in GOLDEN.read_text().splitlines():
        if not text or text.startswith("#"):
            continue
        k, name, line = text.split("\t", 2)
        if k == kind:
            out.append(Golden(k, name, line.encode()))
    return out
