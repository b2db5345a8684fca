"""Bulk numeric writes in columns (``WriteRequest.columns``): checked as vectors, applied in one native
batch call (``Store.write_batch``, as ingest does), so a write of thousands of readings costs a few
Python steps per distinct twin and field, not per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from drsdtp._core import Store
from drsdtp.api.errors import naming
from drsdtp.api.write_plan import DESIRED_SUFFIX, Applied, _Checker, _spec, twin_version, visible
from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.history.audit import Change

__all__ = ["Columns", "apply_columns", "check_columns"]

PATH = "columns"


@dataclass(frozen=True, slots=True)
class Columns:
    twins: list[str]
    fields: list[str]
    twin: NDArray[np.uint32]
    field: NDArray[np.uint32]
    values: NDArray[np.float64]
    source_ms: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.values.shape[0])


def _first(mask: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def check_columns(checker: _Checker, cols: Columns) -> None:
    """Raises the first problem (naming the column and row); changes nothing."""
    n = len(cols)
    for name, column in (("twin", cols.twin), ("field", cols.field), ("source_ms", cols.source_ms)):
        if column.shape[0] != n:
            raise naming(
                InvalidValueError(f"{PATH}.{name}: {column.shape[0]} rows, values has {n}"), f"{PATH}.{name}"
            )
    for name, column, names in (("twin", cols.twin, cols.twins), ("field", cols.field, cols.fields)):
        over = column >= len(names)
        if over.any():
            i = _first(over)
            raise naming(
                InvalidValueError(f"{PATH}.{name}[{i}]: {column[i]} is not an index into {len(names)} names"),
                f"{PATH}.{name}[{i}]",
            )
    bad = ~np.isfinite(cols.values)
    if bad.any():
        i = _first(bad)
        raise naming(
            InvalidValueError(f"{PATH}.values[{i}]: {cols.values[i]} is not a finite number"),
            f"{PATH}.values[{i}]",
        )
    store = checker.store
    for k, twin in enumerate(cols.twins):
        path = f"{PATH}.twin_ids[{k}]"
        if twin.startswith("_") or not visible(store, twin):
            raise naming(
                UnknownTwinError(f"{path}: no twin {twin!r} on this node (columns need it to exist)"), path
            )
    for k, field in enumerate(cols.fields):
        if not field or field.startswith("_") or field.endswith(DESIRED_SUFFIX):
            raise naming(
                InvalidValueError(f"{PATH}.fields[{k}]: {field!r} is empty or reserved"),
                f"{PATH}.fields[{k}]",
            )
    pairs = (cols.twin.astype(np.uint64) << np.uint64(32)) | cols.field.astype(np.uint64)
    unique, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
    low = np.full(unique.shape[0], -np.inf)
    high = np.full(unique.shape[0], np.inf)
    models = [checker.model_of_twin(t) for t in cols.twins]
    specs = {}
    for j, (pair, row) in enumerate(zip(unique.tolist(), first.tolist(), strict=True)):
        t, f = pair >> 32, pair & 0xFFFFFFFF
        twin, field = cols.twins[t], cols.fields[f]
        held = checker.fields_of(twin).get(field)
        # The common case first: a new field, or an f64 register (a counter is an int, a set a frozenset).
        if (held is not None and type(held) is not float) or (twin, field) in checker.planned:
            checker.shape(twin, field, "register", "number", f"{PATH}[{row}]")
        model = models[t]
        if model is not None:
            key = (model.name, field)
            if key not in specs:
                specs[key] = _spec(model, field)
            spec = specs[key]
            if spec is not None:
                low[j], high[j] = spec.valid_min, spec.valid_max
    outside = (cols.values < low[inverse]) | (cols.values > high[inverse])
    if outside.any():
        i = _first(outside)
        twin, field = cols.twins[cols.twin[i]], cols.fields[cols.field[i]]
        j = int(inverse[i])
        raise naming(
            InvalidValueError(
                f"{PATH}.values[{i}]: {cols.values[i]} is outside the valid range of {field!r} of {twin!r} "
                f"[{low[j]:g}, {high[j]:g}]"
            ),
            f"{PATH}.values[{i}]",
        )


def apply_columns(store: Store, cols: Columns, out: Applied) -> None:
    """One native batch write; the audit sees each field's last value in the request."""
    if not len(cols):
        return
    twin_ids = np.array([store.intern_twin(t) for t in cols.twins], np.uint32)[cols.twin]
    field_ids = np.array([store.intern_field(f) for f in cols.fields], np.uint32)[cols.field]
    delta = store.write_batch(twin_ids, field_ids, cols.values, cols.source_ms)
    out.deltas.append((delta, cols.twins[int(cols.twin[0])]))
    out.extra_twins.extend(cols.twins[i] for i in np.unique(cols.twin).tolist())
    last: dict[int, dict[int, float]] = {}
    for t, f, v in zip(cols.twin.tolist(), cols.field.tolist(), cols.values.tolist(), strict=True):
        last.setdefault(t, {})[f] = v
    for t, values in last.items():
        twin = cols.twins[t]
        changes = {cols.fields[f]: Change(new=v) for f, v in values.items()}
        out.changes.setdefault(twin, {}).update(changes)
        out.actions.setdefault(twin, "write")
        out.versions[twin] = twin_version(store, twin)
