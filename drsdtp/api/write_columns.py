"""Bulk numeric writes in columns (``WriteRequest.columns``): checked as vectors, applied in one native
batch call (``Store.write_batch``, as ingest does), audited as :class:`Readings`, so a write of thousands of
readings costs a few Python steps per twin and per distinct field name (and per model), not per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from drsdtp._core import Store
from drsdtp.api.errors import naming
from drsdtp.api.write_plan import DESIRED_SUFFIX, Applied, _Checker, _spec, twin_version, visible
from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.history.audit import Readings
from drsdtp.models import AssetModel

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from drsdtp.lazy import numpy as np

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
    _check_shapes(checker, cols)
    _check_ranges(checker, cols)


def _pairs(twin: NDArray[np.uint32], field: NDArray[np.uint32]) -> NDArray[np.uint64]:
    return (twin.astype(np.uint64) << np.uint64(32)) | field.astype(np.uint64)


def _positions(names: list[str]) -> dict[str, list[int]]:
    """Each name's indices in ``names`` (a name may be listed twice)."""
    out: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        out.setdefault(name, []).append(k)
    return out


def _check_shapes(checker: _Checker, cols: Columns) -> None:
    """Rows writing a field their twin holds as something other than an f64 register (a counter, a set,
    text ...), or that an op of the same request gave a shape, get the full shape check; found from each
    twin's few such fields, not row by row (the common case: new fields and f64 registers)."""
    field_at = _positions(cols.fields)
    twin_at = _positions(cols.twins)
    special: list[int] = []
    for t, twin in enumerate(cols.twins):
        for name, value in checker.fields_of(twin).items():
            if type(value) is not float and name in field_at:
                special += [t << 32 | k for k in field_at[name]]
    for twin, name in checker.planned:
        if twin in twin_at and name in field_at:
            special += [t << 32 | k for t in twin_at[twin] for k in field_at[name]]
    if not special:
        return
    pairs = _pairs(cols.twin, cols.field)
    rows = np.flatnonzero(np.isin(pairs, np.array(special, np.uint64)))
    unique, first = np.unique(pairs[rows], return_index=True)
    for pair, row in zip(unique.tolist(), rows[first].tolist(), strict=True):
        twin, field = cols.twins[pair >> 32], cols.fields[pair & 0xFFFFFFFF]
        checker.shape(twin, field, "register", "number", f"{PATH}[{row}]")


def _check_ranges(checker: _Checker, cols: Columns) -> None:
    """Every row within its field's valid range in its twin's model: looked up once per model and field."""
    ids: dict[str, int] = {}
    models: list[AssetModel] = []
    of_twin = np.full(len(cols.twins), -1, np.int64)
    for t, twin in enumerate(cols.twins):
        model = checker.model_of_twin(twin)
        if model is not None:
            if model.name not in ids:
                ids[model.name] = len(models)
                models.append(model)
            of_twin[t] = ids[model.name]
    row_model = of_twin[cols.twin]
    rows = np.flatnonzero(row_model >= 0)
    if not rows.shape[0]:
        return
    combos = _pairs(row_model[rows].astype(np.uint32), cols.field[rows])
    unique, inverse = np.unique(combos, return_inverse=True)
    low = np.full(unique.shape[0], -np.inf)
    high = np.full(unique.shape[0], np.inf)
    for j, combo in enumerate(unique.tolist()):
        spec = _spec(models[combo >> 32], cols.fields[combo & 0xFFFFFFFF])
        if spec is not None:
            low[j], high[j] = spec.valid_min, spec.valid_max
    values = cols.values[rows]
    outside = (values < low[inverse]) | (values > high[inverse])
    if outside.any():
        k = _first(outside)
        i, j = int(rows[k]), int(inverse[k])
        twin, field = cols.twins[cols.twin[i]], cols.fields[cols.field[i]]
        raise naming(
            InvalidValueError(
                f"{PATH}.values[{i}]: {cols.values[i]} is outside the valid range of {field!r} of {twin!r} "
                f"[{low[j]:g}, {high[j]:g}]"
            ),
            f"{PATH}.values[{i}]",
        )


def _canonical(names: list[str], index: NDArray[np.uint32]) -> NDArray[np.uint32]:
    """``index`` into ``names`` with every name at its first index (a name listed twice is one field)."""
    if len(set(names)) == len(names):
        return index
    at = _positions(names)
    first = np.array([at[n][0] for n in names], np.uint32)
    return first[index]


def _ranks(names: list[str], by_name: list[str]) -> list[int]:
    at = {name: k for k, name in enumerate(by_name)}
    return [at[name] for name in names]


def apply_columns(store: Store, cols: Columns, out: Applied) -> None:
    """One native batch write; the audit sees each field's last value in the request, per twin, as
    :class:`Readings` (no Python object per row)."""
    n = len(cols)
    if not n:
        return
    twin_ids = store.intern_twins(cols.twins)[cols.twin]
    field_ids = store.intern_fields(cols.fields)[cols.field]
    delta = store.write_batch(twin_ids, field_ids, cols.values, cols.source_ms)
    out.deltas.append((delta, cols.twins[int(cols.twin[0])]))
    # Fields numbered in name order, so that each twin's readings come out sorted, as the audit keeps them.
    by_name = sorted(set(cols.fields))
    rank = np.array(_ranks(cols.fields, by_name), np.uint32)  # a name listed twice is one field
    twin, field = _canonical(cols.twins, cols.twin), rank[cols.field]
    # The last row of each (twin, field): the first of the reversed rows, in (twin, field name) order.
    unique, first_reversed = np.unique(_pairs(twin, field)[::-1], return_index=True)
    last = (n - 1) - first_reversed
    of_twin = (unique >> np.uint64(32)).astype(np.int64)
    starts = np.flatnonzero(np.diff(of_twin, prepend=-1))
    ends = [*starts[1:].tolist(), len(unique)]
    field_names = [by_name[f] for f in (unique & np.uint64(0xFFFFFFFF)).tolist()]
    values = cols.values[last].tolist()
    for start, end in zip(starts.tolist(), ends, strict=True):
        name = cols.twins[int(of_twin[start])]
        out.extra_twins.append(name)
        readings = Readings(field_names[start:end], values[start:end], ordered=True)
        held = out.changes.get(name)
        out.changes[name] = readings if held is None else {**held, **readings}
        out.actions.setdefault(name, "write")
        out.versions[name] = twin_version(store, name)
