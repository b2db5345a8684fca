"""Bulk writes decoded natively: a ``WriteRequest`` whose twins report f64 values, increment counters, add
and remove set elements, state f64 desired values and clear desired fields (and/or its ``columns``), read by
``drsdtp._core.decode_write`` (Rust, prost types generated from ``proto/``) into columns, checked once per
twin and once per distinct field name (and per model and field for the valid ranges) plus a few vector
operations, and applied with one native call (the GIL released): the f64 reports as one batch, the
other ops (a set's adds and removes together, a counter's increments summed) as one batch of events,
all or nothing, with one delta (``Store.write_mixed``). The other ops are grouped by twin and field, so
a request costs a few Python steps per such field, never a protobuf object per op.

This path never refuses anything: whenever a check does not pass, or anything looks unusual (a field
held as something other than an f64 register, a twin that does not exist ...), :func:`plan` returns
None and the request takes the general path (:mod:`drsdtp.api.write_plan`), which decodes it with the
Python protobuf runtime and refuses it with the precise error it always gave (``twins[i].ops[j]...``).
So the errors cannot drift between the two paths: only the general path words them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as member
from json.encoder import encode_basestring as _str  # what json.dumps(s, ensure_ascii=False) uses
from typing import TYPE_CHECKING, Literal

from drsdtp._core import (
    HELD_OTHER,
    OP_ADD,
    OP_CLEAR,
    OP_DESIRE,
    OP_INCREMENT,
    OP_REMOVE,
    Store,
    WriteColumns,
    bulk_twins_json,
    decode_write,
)
from drsdtp.api import write_small
from drsdtp.api.write_plan import (
    DESIRABLE_KINDS,
    DESIRED_SUFFIX,
    I64_MAX,
    I64_MIN,
    Applied,
    _spec,
    _summed,
    name_ok,
    twin_version,
    visible,
)
from drsdtp.history.audit import Change, Readings
from drsdtp.history.values import FieldValue
from drsdtp.models import MODEL_FIELD, AssetModel
from drsdtp.wire.v1 import api_pb2

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from drsdtp._core import FieldWriteOps
else:
    from drsdtp.lazy import numpy as np

__all__ = ["BulkWrite", "FieldOps", "Plan", "apply", "parse_write", "plan"]


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
    """The Write method's request deserializer: a small write (:mod:`drsdtp.api.write_small`) as the
    protobuf message, the bulk shape natively, anything else (or a body that does not parse: protobuf
    raises its own error) as the protobuf message."""
    if len(body) <= write_small.MAX_BODY_BYTES:
        request = api_pb2.WriteRequest.FromString(body)
        if write_small.is_small(request):
            return request
    cols = decode_write(body)
    if isinstance(cols, str):
        return api_pb2.WriteRequest.FromString(body)
    return BulkWrite(cols, body)


Shape = Literal["set", "counter", "desired"]
_SHAPES: dict[int, Shape] = {
    OP_INCREMENT: "counter",
    OP_ADD: "set",
    OP_REMOVE: "set",
    OP_DESIRE: "desired",
    OP_CLEAR: "desired",
}


@dataclass(slots=True)
class FieldOps:
    """The ops of a request other than f64 reports on one field of one twin, in request order (by shape:
    a set's ``(add, element)`` s, a counter's amounts or the desired values); ``stored``: the field's name
    in the store (``<field>.desired`` for an intent); ``old``: what it held before (None: nothing)."""

    twin: str
    listing: int  # the twin's first listing in the request (its index in Plan.twins)
    stored: str
    shape: Shape
    old: FieldValue | None
    elements: list[tuple[bool, str]] = member(default_factory=list)
    amounts: list[int] = member(default_factory=list)
    values: list[float | None] = member(default_factory=list)  # None: a clear


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked bulk write: row r writes ``values[r]`` to ``fields[field[r]]`` of ``twins[twin[r]]``
    (names may repeat: the ops' then the columns'), stamped ``source_ms[r]``; ``olds[r]``: the f64 it
    replaces (NaN: none); ``others``: the ops other than f64 reports, by twin and field; rows from
    ``readings_from`` on are the request's columns (None: it has none), audited as readings (named, their
    values in the history)."""

    twins: list[str]
    fields: list[str]
    twin: NDArray[np.uint32]
    field: NDArray[np.uint32]
    values: NDArray[np.float64]
    source_ms: NDArray[np.int64]
    olds: NDArray[np.float64]
    others: list[FieldOps] = member(default_factory=list)
    readings_from: int | None = None


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
        if not name_ok(name, max_name_bytes) or not visible(store, name):
            return None
    for name in dict.fromkeys(all_fields):
        if not name_ok(name, max_name_bytes) or name.endswith(DESIRED_SUFFIX):
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
    others: list[FieldOps] = []
    if c.op_kind.shape[0]:
        got = _others(store, models, c, all_twins, all_fields, twin, field, max_name_bytes)
        if got is None:
            return None
        others = got
    return Plan(all_twins, all_fields, twin, field, values, source, olds, others, n_ops if n_cols else None)


def _others(
    store: Store,
    models: Callable[[str], AssetModel | None],
    c: WriteColumns,
    all_twins: Sequence[str],
    fields: Sequence[str],
    twin: NDArray[np.uint32],
    field: NDArray[np.uint32],
    max_name_bytes: int,
) -> list[FieldOps] | None:
    """The ops other than f64 reports, grouped by twin and field, if each passes what the general path
    checks (:mod:`drsdtp.api.write_plan`), else None: a name that may be written, an element that may be
    held, a field of the op's shape (or new) that no f64 report of the request writes, a counter that
    cannot overflow, no set or counter on a model's numeric field and a desired value within its range
    on a field of a desirable kind."""
    names = c.op_names
    for name in names:
        if not name_ok(name, max_name_bytes) or name.endswith(DESIRED_SUFFIX):
            return None
    twins = c.twins
    first = {name: k for k, name in reversed(list(enumerate(twins)))}
    groups: dict[tuple[str, str], FieldOps] = {}
    kinds, elements = c.op_kind.tolist(), c.op_element
    amounts, values = c.op_amount.tolist(), c.op_value.tolist()
    for r, (t, f) in enumerate(zip(c.op_twin.tolist(), c.op_field.tolist(), strict=True)):
        kind, name = kinds[r], twins[t]
        shape = _SHAPES[kind]
        stored = names[f] + DESIRED_SUFFIX if shape == "desired" else names[f]
        group = groups.get((name, stored))
        if group is None:
            group = groups[name, stored] = FieldOps(name, first[name], stored, shape, None)
        elif group.shape != shape:
            return None  # a set and a counter in one request: the general path words it
        if shape == "set":
            element = elements[r]
            if not element or len(element.encode()) > max_name_bytes:
                return None
            group.elements.append((kind == OP_ADD, element))
        elif shape == "counter":
            group.amounts.append(amounts[r])
        elif kind == OP_CLEAR:
            group.values.append(None)
        else:
            value = values[r]
            if not math.isfinite(value):
                return None
            group.values.append(value)
    reported = set(fields)
    model_of: dict[str, AssetModel | None] = {}
    for group in groups.values():
        held = group.old = store.get(group.twin, group.stored)
        if not _held_as(store, group, held):
            return None
        if group.stored in reported and _reports(group, all_twins, fields, twin, field):
            return None  # an f64 report and another op on one field
        if group.shape == "counter" and not _no_overflow(held, group.amounts):
            return None
        if group.twin not in model_of:
            model_name = store.get(group.twin, MODEL_FIELD)
            model_of[group.twin] = models(model_name) if isinstance(model_name, str) and model_name else None
        model = model_of[group.twin]
        if model is not None and not _model_allows(model, group):
            return None
    return list(groups.values())


def _held_as(store: Store, group: FieldOps, held: FieldValue | None) -> bool:
    """Whether the field holds nothing or what the group's ops need (a number for a desired value)."""
    if held is None:
        return True
    if group.shape == "set":
        return isinstance(held, frozenset)
    if group.shape == "desired":
        return isinstance(held, tuple) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in held
        )
    # A counter reads as an int, as an int register does: a register has an entry.
    return type(held) is int and store.entry(group.twin, group.stored) is None


def _reports(
    group: FieldOps,
    twins: Sequence[str],
    fields: Sequence[str],
    twin: NDArray[np.uint32],
    field: NDArray[np.uint32],
) -> bool:
    """Whether an f64 report of the request writes the group's field of its twin (rare: looked up only
    when the field's name is among the reports')."""
    at = np.array([k for k, name in enumerate(fields) if name == group.stored], np.uint32)
    rows = np.isin(field, at)
    return any(twins[t] == group.twin for t in np.unique(twin[rows]).tolist())


def _no_overflow(held: FieldValue | None, amounts: list[int]) -> bool:
    """Whether every order of the increments keeps the counter within i64 (their sums of each sign do)."""
    now = held if isinstance(held, int) else 0
    up = sum(a for a in amounts if a > 0)
    down = sum(a for a in amounts if a < 0)
    return now + down >= I64_MIN and now + up <= I64_MAX


def _model_allows(model: AssetModel, group: FieldOps) -> bool:
    """No set or counter on a field the model declares (a number); a desired value on a field of a
    desirable kind, within its valid range."""
    name = group.stored[: -len(DESIRED_SUFFIX)] if group.shape == "desired" else group.stored
    spec = _spec(model, name)
    if spec is None:
        return True
    if group.shape != "desired" or spec.kind not in DESIRABLE_KINDS:
        return False
    return all(spec.valid_min <= v <= spec.valid_max for v in group.values if v is not None)


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


def apply(store: Store, p: Plan, out: Applied) -> Exception | None:
    """The f64 reports and the other ops in one native call (``Store.write_mixed``, the GIL released):
    the reports as one batch, then each twin and field's ops as the general path applies them (a set's
    in order, a counter's summed where they share a sign, desired values one by one), all or nothing,
    with one delta. ``out`` gets the delta, each twin's version and its changes for the audit trail:
    each f64 field's last value in the request where it differs from what the field held, with that
    old value, and each other field's value after where it changed (as the general path words them);
    the fields the columns wrote, named as readings (one native record whenever the request has columns
    or several twins). Should the store refuse the request all the same (the plan checked it), nothing
    is applied and the error is returned."""
    try:
        twin_ids = store.intern_twins(p.twins)[p.twin]
        field_ids = store.intern_fields(p.fields)[p.field]
        if p.others:
            delta = store.write_mixed(twin_ids, field_ids, p.values, p.source_ms, _field_writes(p.others))
        else:
            delta = store.write_batch(twin_ids, field_ids, p.values, p.source_ms)
    except Exception as exc:  # nothing applied: the caller raises it
        return exc
    out.deltas.append((delta, p.twins[0]))
    changed = _changed(store, p.others)
    distinct = dict.fromkeys(p.twins)
    if len(distinct) > 1 or p.readings_from is not None:  # one record naming every twin, one native call
        extra = [(g.listing, g.stored, _change_json(g.old, new)) for g, new in changed]
        out.record = bulk_twins_json(
            p.twins, p.fields, p.twin, p.field, p.values, p.olds, extra or None, p.readings_from
        )
        for g, new in changed:
            if g.shape == "desired":
                out.intents.setdefault(g.twin, {})[g.stored] = Change(new, g.old, True)
    else:
        _audit(p, out)
        if changed:
            name = p.twins[0]
            out.changes[name] = {
                **out.changes.get(name, {}),
                **{g.stored: Change(new, g.old, True) for g, new in changed},
            }
    for name in distinct:
        out.extra_twins.append(name)
        out.actions.setdefault(name, "write")
        out.versions[name] = twin_version(store, name)
    return None


def _field_writes(groups: Sequence[FieldOps]) -> list[FieldWriteOps]:
    """The groups as ``Store.write_mixed`` takes them: a set's ops in order, a counter's increments
    summed where they share a sign (as the general path applies them), desired values one by one."""
    out: list[FieldWriteOps] = []
    for g in groups:
        if g.shape == "set":
            out.append((g.twin, g.stored, "set", g.elements))
        elif g.shape == "counter":
            out.append((g.twin, g.stored, "counter", _summed(g.amounts)))
        else:
            out.append((g.twin, g.stored, "desired", list(g.values)))
    return out


def _changed(store: Store, groups: Sequence[FieldOps]) -> list[tuple[FieldOps, FieldValue]]:
    """The groups whose field changed, with its value after (as the general path's diff finds them)."""
    out = []
    for g in groups:
        new = store.get(g.twin, g.stored)
        if new is not None and (g.old is None or g.old != new or type(g.old) is not type(new)):
            out.append((g, new))
    return out


def _change_json(old: FieldValue | None, new: FieldValue) -> str:
    """A change as the record's canonical JSON holds it (see drsdtp.history.audit): spelt out for what
    these ops leave (a counter, a set of text, finite numbers desired), else by json."""
    new_json, old_json = _value_json(new), "" if old is None else _value_json(old)
    if new_json is None or old_json is None:
        body = Change(new, old, True).to_json()
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f'{{"new":{new_json},"old":{old_json}}}' if old_json else f'{{"new":{new_json}}}'


def _value_json(value: FieldValue) -> str | None:
    """``value`` as json writes it (``to_json``, keys sorted), or None: not a shape spelt out here."""
    if type(value) is int:
        return str(value)
    if isinstance(value, frozenset):
        return '{"$set":[' + ",".join(map(_str, sorted(value))) + "]}"
    if isinstance(value, tuple) and all(
        type(v) is int or (type(v) is float and math.isfinite(v)) for v in value
    ):
        return '{"$desired":[' + ",".join(map(repr, value)) + "]}"
    return None


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
