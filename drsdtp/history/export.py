"""Streamed export of history: CSV, one JSON document, or JSON lines.

Every format carries the same columns: twin, field, resolution, ts_ms, time (ISO 8601 UTC), value (the reading
or the bucket mean), min, max, count. Output is written in chunks of ``CHUNK`` points, so exporting a year
of history never holds more than one field (as numpy arrays) plus one chunk of text in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TextIO

from drsdtp.history.series import SeriesData

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["COLUMNS", "ExportFormat", "write_series"]

ExportFormat = Literal["csv", "json", "jsonl"]
COLUMNS = ("twin", "field", "resolution", "ts_ms", "time", "value", "min", "max", "count")
CHUNK = 10_000


def _iso(ts_ms: np.ndarray) -> list[str]:
    text = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms", timezone="UTC")
    return [str(t) for t in text.tolist()]


def _chunks(data: SeriesData) -> Iterator[list[list[Any]]]:
    """Per chunk: rows of (ts_ms, time, value, min, max, count) as plain Python values."""
    for at in range(0, len(data), CHUNK):
        cut = slice(at, at + CHUNK)
        columns = (
            data.ts[cut].tolist(),
            _iso(data.ts[cut]),
            data.value[cut].tolist(),
            data.min[cut].tolist(),
            data.max[cut].tolist(),
            data.count[cut].tolist(),
        )
        yield [list(row) for row in zip(*columns, strict=True)]


def write_series(out: TextIO, series: Iterable[SeriesData], fmt: ExportFormat) -> int:
    """Write every series to ``out`` in ``fmt``; returns the number of points written."""
    if fmt == "csv":
        return _write_csv(out, series)
    if fmt == "jsonl":
        return _write_jsonl(out, series)
    if fmt == "json":
        return _write_json(out, series)
    raise ValueError(f"unknown export format {fmt!r}: expected csv, json or jsonl")


def _write_csv(out: TextIO, series: Iterable[SeriesData]) -> int:
    import csv  # here: only a CSV export needs it (idle RSS, issue 13)

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    points = 0
    for data in series:
        head = [data.twin, data.field, data.resolution]
        for rows in _chunks(data):
            writer.writerows(head + row for row in rows)
            points += len(rows)
    return points


def _write_jsonl(out: TextIO, series: Iterable[SeriesData]) -> int:
    points = 0
    keys = COLUMNS[3:]
    for data in series:
        head = {"twin": data.twin, "field": data.field, "resolution": data.resolution}
        for rows in _chunks(data):
            out.write("".join(json.dumps(head | dict(zip(keys, row, strict=True))) + "\n" for row in rows))
            points += len(rows)
    return points


def _write_json(out: TextIO, series: Iterable[SeriesData]) -> int:
    """``{"columns": [...], "series": [{"twin", "field", "resolution", "points": [[ts_ms, time, ...]]}]}``."""
    points = 0
    out.write('{"columns":' + json.dumps(COLUMNS[3:], separators=(",", ":")) + ',"series":[')
    for i, data in enumerate(series):
        head = json.dumps({"twin": data.twin, "field": data.field, "resolution": data.resolution})
        out.write(("," if i else "") + head[:-1] + ',"points":[')
        for j, rows in enumerate(_chunks(data)):
            text = json.dumps(rows, separators=(",", ":"))
            out.write(("," if j else "") + text[1:-1])
            points += len(rows)
        out.write("]}")
    out.write("]}\n")
    return points
