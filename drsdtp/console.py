"""Terminal output for the CLI: aligned plain-text tables, key/value summaries, JSON, and progress lines.

Data goes to stdout; messages, errors and progress go to stderr, so ``drsdtp export > file`` stays clean.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, TextIO

__all__ = ["Console", "Progress", "format_cell", "render_table"]

_GAP: Final = "  "


def format_cell(value: object) -> str:
    """None as '-', booleans as yes/no, floats to 6 significant digits (large ones without exponent)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= 1e6:
            return f"{value:.0f}"
        return f"{value:.6g}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numeric columns right-aligned; headers upper-cased."""
    raw_rows = [list(row) for row in rows]
    for row in raw_rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns: {row!r}")
    cells = [[format_cell(v) for v in row] for row in raw_rows]
    numeric = [
        bool(raw_rows) and all(_is_number(row[i]) or row[i] is None for row in raw_rows)
        for i in range(len(headers))
    ]
    titles = [h.upper() for h in headers]
    widths = [max([len(titles[i]), *(len(row[i]) for row in cells)]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return _GAP.join(padded).rstrip()

    return "\n".join([line(titles), *(line(row) for row in cells)])


class Progress:
    """A self-updating ``label: done/total (pct)`` line on a terminal; only the final line on a pipe."""

    _MIN_REDRAW_S: Final = 0.1

    def __init__(self, stream: TextIO, label: str, total: int | None) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.done = 0
        self._live = stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self._live and now - self._drawn >= self._MIN_REDRAW_S:
            self._drawn = now
            self.stream.write(f"\r{self._text()}")
            self.stream.flush()

    def _text(self) -> str:
        if self.total:
            return f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return f"{self.label}: {self.done}"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        elapsed = time.monotonic() - self._started
        outcome = "done" if exc_type is None else "interrupted"
        prefix = "\r" if self._live else ""
        self.stream.write(f"{prefix}{self._text()}, {outcome} in {elapsed:.1f} s\n")
        self.stream.flush()


class Console:
    """What commands print through. In JSON mode, commands should call :meth:`json` instead of tables."""

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, *, json_mode: bool = False
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.json_mode = json_mode

    def table(
        self, headers: Sequence[str], rows: Iterable[Sequence[object]], *, title: str | None = None
    ) -> None:
        if title:
            self.out.write(f"{title}\n")
        self.out.write(render_table(headers, rows) + "\n")

    def fields(
        self, pairs: Iterable[tuple[str, object]], *, headers: tuple[str, str] = ("setting", "value")
    ) -> None:
        self.table(headers, pairs)

    def json(self, value: Any) -> None:
        self.out.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def message(self, text: str) -> None:
        self.err.write(text + "\n")

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}\n")

    def progress(self, label: str, total: int | None = None) -> Progress:
        return Progress(self.err, label, total)
