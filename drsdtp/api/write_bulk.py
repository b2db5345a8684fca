"""Bulk numeric writes decoded natively: a ``WriteRequest`` whose twins only report f64 values (and/or its
``columns``), read by ``drsdtp._core.decode_write`` (Rust, prost types generated from ``proto/``) into
columns, checked once per twin and once per distinct field name (and per model and field for the valid
ranges) plus a few vector operations, and applied with one native batch write (the GIL released).

This path never refuses anything: whenever a check does not pass, or anything looks unusual (a field
held as something other than an f64 register, a twin that does not exist ...), :func:`plan` returns
None and the request takes the general path (:mod:`drsdtp.api.write_plan`), which decodes it with the
Python protobuf runtime and refuses it with the precise error it always gave (``twins[i].ops[j]...``).
So the errors cannot drift between the two paths: only the general path words them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drsdtp._core import HELD_OTHER, Store, WriteColumns, bulk_twins_json, decode_write
from drsdtp.api.write_plan import DESIRED_SUFFIX, Applied, _spec, twin_version, visible
from drsdtp.history.audit import Readings
from drsdtp.models import MODEL_FIELD, AssetModel
from drsdtp.wire.v1 import api_pb2

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from drsdtp.lazy import numpy as np

__all__ = ["BulkWrite", "Plan", "apply", "parse_write", "plan"]


@dataclass(frozen=True, slots=True)
class BulkWrite:
    """A Write request in the bulk shape: its columns, and its body for the general path."""

    cols: WriteColumns
    body: bytes

    def message(self) -> api_pb2.WriteRequest:
        return api_pb2.WriteRequest.FromString(self.body)

    # What the write service reads of any request besides its writes.
    @property
    def ack(self) -> int:
        return self.cols.ack

    @property
    def replicas(self) -> int:
        return self.cols.replicas

    @property
    def replicate_timeout_ms(self) -> int:
        return self.cols.replicate_timeout_ms

    @property
    def actor(self) -> str:
        return self.cols.actor

    @property
    def reason(self) -> str:
        return self.cols.reason

    def bulk_twins(self) -> tuple[str, ...]:
        """Every twin the request writes (for authorization), in order, once each."""
        return tuple(dict.fromkeys([*self.cols.twins, *self.cols.col_twin_ids]))


def parse_write(body: bytes) -> api_pb2.WriteRequest | BulkWrite:
    """The Write method's request deserializer: the bulk shape natively, anything else (or a body that
    does not parse: protobuf raises its own error) as the protobuf message."""
    cols = decode_write(body)
    if isinstance(cols, str):
        return api_pb2.WriteRequest.FromString(body)
    return BulkWrite(cols, body)


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked bulk write: row r writes ``values[r]`` to ``fields[field[r]]`` of ``twins[twin[r]]``
    (names may repeat: the ops' then the columns'), stamped ``source_ms[r]``; ``olds[r]``: the f64 it
    replaces (NaN: none)."""

    twins: list[str]
    fields: list[str]
    twin: NDArray[np.uint32]
    field: NDArray[np.uint32]
    values: NDArray[np.float64]
    source_ms: NDArray[np.int64]
    olds: NDArray[np.float64]


def _name_ok(name: str, max_bytes: int) -> bool:
    return bool(name) and not name.startswith("_") and len(name.encode()) <= max_bytes


def plan(
    store: Store, bulk: BulkWrite, models: Callable[[str], AssetModel | None], max_name_bytes: int
) -> Plan | None:
    """The request as one batch if every check passes, else None (the general path decides)."""
    c = bulk.cols
    twins, names = c.twins, c.names
    n_ops = int(c.values.shape[0])
    n_cols = int(c.col_values.shape[0])
    if c.col_twin.shape[0] != n_cols or c.col_field.shape[0] != n_cols:
        return None
    if c.col_source_ms.shape[0] not in (0, n_cols):
        return None
    if n_cols and (
        int(c.col_twin.max()) >= len(c.col_twin_ids) or int(c.col_field.max()) >= len(c.col_fields)
    ):
        return None
    all_twins = [*twins, *c.col_twin_ids]
    all_fields = [*names, *c.col_fields]
    for name in dict.fromkeys(all_twins):
        if not _name_ok(name, max_name_bytes) or not visible(store, name):
            return None
    for name in dict.fromkeys(all_fields):
        if not _name_ok(name, max_name_bytes) or name.endswith(DESIRED_SUFFIX):
            return None
    for i, version in c.if_versions:
        if twin_version(store, twins[i]) != version:
            return None
    if not (np.isfinite(c.values).all() and np.isfinite(c.col_values).all()):
        return None
    counts = np.diff(c.starts)
    twin = np.concatenate(
        [np.repeat(np.arange(len(twins), dtype=np.uint32), counts), c.col_twin + np.uint32(len(twins))]
    ).astype(np.uint32, copy=False)
    field = np.concatenate([c.field, c.col_field + np.uint32(len(names))]).astype(np.uint32, copy=False)
    values = np.concatenate([c.values, c.col_values])
    source = np.zeros(n_ops + n_cols, np.int64)
    if c.col_source_ms.shape[0]:
        source[n_ops:] = c.col_source_ms
    olds, kinds = store.held_f64(all_twins, all_fields, twin, field)
    if (kinds == HELD_OTHER).any():
        return None
    if not _in_ranges(store, models, all_twins, all_fields, twin, field, values):
        return None
    return Plan(all_twins, all_fields, twin, field, values, source, olds)


def _in_ranges(
    store: Store,
    models: Callable[[str], AssetModel | None],
    twins: Sequence[str],
    fields: Sequence[str],
    twin: NDArray[np.uint32],
    field: NDArray[np.uint32],
    values: NDArray[np.float64],
) -> bool:
    """Every row within its field's valid range in its twin's model (looked up once per model and field)."""
    ids: dict[str, int] = {}
    found: list[AssetModel] = []
    of_twin = np.full(len(twins), -1, np.int64)
    for t, name in enumerate(twins):
        model_name = store.get(name, MODEL_FIELD)
        if isinstance(model_name, str) and model_name:
            if model_name not in ids:
                model = models(model_name)
                ids[model_name] = -1 if model is None else len(found)
                if model is not None:
                    found.append(model)
            of_twin[t] = ids[model_name]
    if not found:
        return True
    row_model = of_twin[twin]
    rows = np.flatnonzero(row_model >= 0)
    combos = row_model[rows] * len(fields) + field[rows]
    unique, inverse = np.unique(combos, return_inverse=True)
    low = np.full(unique.shape[0], -math.inf)
    high = np.full(unique.shape[0], math.inf)
    for j, combo in enumerate(unique.tolist()):
        spec = _spec(found[combo // len(fields)], fields[combo % len(fields)])
        if spec is not None:
            low[j], high[j] = spec.valid_min, spec.valid_max
    picked = values[rows]
    return bool(((picked >= low[inverse]) & (picked <= high[inverse])).all())


def apply(store: Store, p: Plan, out: Applied) -> None:
    """One native batch write (the GIL released inside); ``out`` gets the delta, each twin's version and
    its changes for the audit trail: each field's last value in the request where it differs from what
    the field held, with that old value."""
    twin_ids = store.intern_twins(p.twins)[p.twin]
    field_ids = store.intern_fields(p.fields)[p.field]
    delta = store.write_batch(twin_ids, field_ids, p.values, p.source_ms)
    out.deltas.append((delta, p.twins[int(p.twin[0])]))
    distinct = dict.fromkeys(p.twins)
    if len(distinct) > 1:  # one record naming every twin, written in one native call
        out.record = bulk_twins_json(p.twins, p.fields, p.twin, p.field, p.values, p.olds)
    else:
        _audit(p, out)
    for name in distinct:
        out.extra_twins.append(name)
        out.actions.setdefault(name, "write")
        out.versions[name] = twin_version(store, name)


def _first_index(names: list[str]) -> NDArray[np.uint32]:
    """Each position's name as the position of its first occurrence (a name listed twice is one)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(n, k) for k, n in enumerate(names)], np.uint32)


def _audit(p: Plan, out: Applied) -> None:
    n = int(p.values.shape[0])
    by_name = sorted(set(p.fields))
    rank = {name: k for k, name in enumerate(by_name)}
    field_rank = np.array([rank[f] for f in p.fields], np.uint64)[p.field]
    twin = _first_index(p.twins)[p.twin].astype(np.uint64)
    pairs = (twin << np.uint64(32)) | field_rank
    # The last row of each (twin, field), in (twin, field name) order: the first of the reversed rows.
    unique, first_reversed = np.unique(pairs[::-1], return_index=True)
    last = (n - 1) - first_reversed
    news, olds = p.values[last], p.olds[last]
    changed = news != olds  # NaN (nothing held) differs from every value
    unique, news, olds = unique[changed], news[changed], olds[changed]
    if not unique.shape[0]:
        return  # nothing changed (each twin's record names no field)
    of_twin = (unique >> np.uint64(32)).astype(np.int64)
    starts = np.flatnonzero(np.diff(of_twin, prepend=-1)).tolist()
    ends = [*starts[1:], len(unique)]
    field_names = [by_name[f] for f in (unique & np.uint64(0xFFFFFFFF)).tolist()]
    new_list = news.tolist()
    old_list: list[float | None] = [None if math.isnan(o) else o for o in olds.tolist()]
    for start, end in zip(starts, ends, strict=True):
        name = p.twins[int(of_twin[start])]
        out.changes[name] = Readings(
            field_names[start:end], new_list[start:end], ordered=True, olds=old_list[start:end]
        )
