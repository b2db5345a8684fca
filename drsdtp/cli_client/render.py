"""Human-readable output shared by the client commands: times, values, and intelligence documents."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from drsdtp.client.types import Field, Value
from drsdtp.console import Console, format_cell, render_table

__all__ = ["age", "iso", "render_document", "render_forecast", "show_field", "show_value"]

_SERIES_SHOWN = 6  # a list of numbers longer than this is summarised


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def age(ms: int) -> str:
    if not ms:
        return ""
    seconds = time.time() - ms / 1000
    return f"{seconds:.1f} s ago" if seconds < 120 else iso(ms)


def show_value(value: Value) -> str:
    """A field's value for a table cell: text as is, bytes as hex, sets and desired values listed."""
    if isinstance(value, bytes):
        return "0x" + value.hex() if len(value) <= 32 else f"0x{value[:32].hex()}... ({len(value)} B)"
    if isinstance(value, tuple):
        return "{" + ", ".join(show_value(v) for v in value) + "}"
    return format_cell(value)


def show_field(f: Field) -> str:
    """A desired field in conflict says so: both intents stay until a later write resolves them."""
    if f.kind == "desired":
        values = [show_value(d.value) for d in f.desired]
        if len(values) > 1:
            return "CONFLICT: " + " | ".join(values)
        return values[0] if values else "(cleared)"
    return show_value(f.value)


def _numbers(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items)


def _series(items: Sequence[float]) -> str:
    if len(items) <= _SERIES_SHOWN:
        return ", ".join(format_cell(v) for v in items)
    return (
        f"{len(items)} values: {format_cell(items[0])} ... {format_cell(items[-1])} "
        f"(min {format_cell(min(items))}, max {format_cell(max(items))})"
    )


def _table(items: Sequence[Any]) -> tuple[list[str], list[list[object]]] | None:
    """A list of flat documents as a table (their keys as columns), when they are flat."""
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    keys: list[str] = []
    for item in items:
        keys += [k for k in item if k not in keys]
    rows: list[list[object]] = []
    for item in items:
        row: list[object] = []
        for k in keys:
            v = item.get(k)
            if isinstance(v, Mapping) or (isinstance(v, list) and any(isinstance(x, Mapping) for x in v)):
                return None
            row.append(_series(v) if isinstance(v, list) and _numbers(v) else v)
            if isinstance(row[-1], list):
                row[-1] = ", ".join(map(str, row[-1]))
        rows.append(row)
    return keys, rows


def render_document(doc: Any, console: Console, indent: str = "") -> None:
    """An intelligence document as indented ``key: value`` lines: long number series summarised, lists of
    flat records as tables (``--json`` prints the document itself)."""
    if not isinstance(doc, Mapping):
        console.line(f"{indent}{format_cell(doc)}")
        return
    for key, value in doc.items():
        if isinstance(value, Mapping):
            console.line(f"{indent}{key}:")
            render_document(value, console, indent + "  ")
        elif isinstance(value, list) and _numbers(value):
            console.line(f"{indent}{key}: {_series(value)}")
        elif isinstance(value, list) and (table := _table(value)) is not None:
            console.line(f"{indent}{key}:")
            headers, rows = table
            for line in render_table(headers, rows).splitlines():
                console.line(f"{indent}  {line}")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            console.line(f"{indent}{key}:")
            for item in value:
                console.line(f"{indent}  -")
                render_document(item, console, indent + "    ")
        elif isinstance(value, list):
            console.line(f"{indent}{key}: {', '.join(format_cell(v) for v in value) or '(none)'}")
        else:
            console.line(f"{indent}{key}: {format_cell(value)}")


def _interval(h: Mapping[str, Any]) -> str:
    value, lower, upper = h.get("value"), h.get("lower"), h.get("upper")
    if value is None:
        return "-"
    if lower is None or upper is None:
        return f"{value:.4g}"
    return f"{value:.4g} [{lower:.4g}, {upper:.4g}]"


def render_forecast(doc: Mapping[str, Any], console: Console) -> None:
    """A forecast as a table of fields by horizon (value [lower, upper]), then what it warns of."""
    forecasts = [f for f in doc.get("forecasts", []) if isinstance(f, Mapping)]
    horizons = sorted({h.get("horizon_min") for f in forecasts for h in f.get("horizons") or []} - {None})
    rows = []
    for f in forecasts:
        by = {h.get("horizon_min"): h for h in f.get("horizons") or []}
        cells = [_interval(by[m]) if m in by else "-" for m in horizons]
        refused = f.get("refused")
        rows.append([f.get("field"), f.get("method"), f.get("value_now"), *cells, refused or ""])
    headers = ["field", "method", "now", *(f"+{m:g} min" for m in horizons), "refused"]
    console.table(headers, rows, title=f"{doc.get('twin')}: forecast")
    for f in forecasts:
        for c in f.get("crossings") or []:
            if isinstance(c, Mapping) and c.get("eta_min") is not None:
                console.line(f"{f.get('field')}: {c.get('message')}")
        for r in f.get("risks") or []:
            if isinstance(r, Mapping):
                console.line(f"{f.get('field')}: risk {r.get('name')} ({r.get('score')}): {r.get('detail')}")
        if f.get("maintenance"):
            console.line(f"{f.get('field')}: maintenance: {f.get('maintenance')}")
