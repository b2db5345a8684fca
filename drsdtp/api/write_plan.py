"""Application writes as domain operations: checked whole against the store and the twins' models, then
applied to the store, so a bad value anywhere in a request changes nothing.

Conventions (kept in the twin's own replicated fields, so peers see them as every other write):

* a twin's model is ``_model``, its scope ``_scope``, its metadata the text fields ``meta.<key>``;
* a deleted twin holds ``_deleted = True`` (a replicated tombstone: it neither lists nor reads, writes to
  it are NOT_FOUND until it is created again; the engine keeps its fields, it has no removal yet);
* the intent for field ``f`` lives in ``f.desired``, a multi-value register: writes that did not see each
  other are all kept (a conflict) until a later write or clear that saw them replaces them.

The twin's *version* is the digest of its causal context (:func:`twin_version`): every write of any kind
adds an event to it, and replicas holding the same events agree on it. ``if_version`` compares it for
equality on the node taking the write, before anything is applied.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from drsdtp._core import Store
from drsdtp.api.errors import naming
from drsdtp.api.node import Value
from drsdtp.core import DESIRED_SUFFIX
from drsdtp.errors import (
    InvalidValueError,
    PreconditionError,
    TypeConflictError,
    UnknownTwinError,
)
from drsdtp.gossip.scopes import SCOPE_FIELD
from drsdtp.history.audit import Change, Readings
from drsdtp.history.values import FieldValue
from drsdtp.intelligence.spec import FieldSpec
from drsdtp.models import MODEL_FIELD, AssetModel

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "DELETED_FIELD",
    "DESIRED_SUFFIX",
    "META_PREFIX",
    "Applied",
    "Create",
    "Numbers",
    "Op",
    "TwinOps",
    "apply",
    "check",
    "name_ok",
    "twin_version",
    "visible",
]

DELETED_FIELD = "_deleted"
META_PREFIX = "meta."
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# Kinds of model field an application may state an intent for (a measurement has no desired value).
DESIRABLE_KINDS = ("setpoint", "actuator", "state")

OpKind = Literal["report", "desire", "clear_desired", "add", "remove", "increment"]
Shape = Literal["register", "set", "counter", "desired"]
WriteAction = Literal["write", "create", "delete"]


@dataclass(frozen=True, slots=True)
class Op:
    field: str
    kind: OpKind
    value: Value | None = None  # report, desire: the value; add, remove: the element; increment: the amount
    path: str = ""  # where in the request, for errors: "twins[0].ops[2]"


@dataclass(frozen=True, slots=True)
class Create:
    model: str = ""
    scope: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Numbers:
    """A twin's ops when every one reports an f64 (the bulk case): op ``j`` writes ``values[j]`` to
    ``names[j]``. Checked per twin and per distinct name, applied with every other such twin of the
    request in one native batch write, audited as :class:`Readings`: no Python object per op."""

    names: list[str]
    values: list[float]


@dataclass(frozen=True, slots=True)
class TwinOps:
    twin: str
    ops: Sequence[Op] = ()
    if_version: int | None = None
    create: Create | None = None
    delete: bool = False
    path: str = ""
    numbers: Numbers | None = None  # instead of ops (then ops is empty)

    def all_ops(self) -> Sequence[Op]:
        """The ops as :class:`Op` s (``numbers`` spelt out, for the general path)."""
        if self.numbers is None:
            return self.ops
        n = self.numbers
        return [
            Op(name, "report", value, f"{self.path}.ops[{j}]")
            for j, (name, value) in enumerate(zip(n.names, n.values, strict=True))
        ]


@dataclass(slots=True)
class Applied:
    """What a write did: its deltas (one per twin, in request order), each twin's version after, and the
    field changes for the audit trail."""

    deltas: list[tuple[bytes, str]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    changes: dict[str, Mapping[str, Change]] = field(default_factory=dict)
    actions: dict[str, WriteAction] = field(default_factory=dict)
    extra_twins: list[str] = field(default_factory=list)  # twins a delta touched besides the one it names
    # A bulk write over several twins: its whole audit record's twins part, written natively (see
    # drsdtp.api.write_bulk); then ``changes`` stays empty, and ``intents`` holds the desired values the
    # record names (each twin's changed ``<field>.desired`` fields), for actuation.
    record: str | None = None
    intents: dict[str, dict[str, Change]] = field(default_factory=dict)


def twin_version(store: Store, twin: str) -> int:
    """The twin's version (0 for a twin the store does not hold)."""
    return store.context_digest(twin) or 0


def visible(store: Store, twin: str) -> bool:
    """Held and not deleted."""
    return twin in store and store.get(twin, DELETED_FIELD) is not True


def _shape(store: Store, twin: str, name: str, value: FieldValue) -> Shape:
    if isinstance(value, frozenset):
        return "set"
    if isinstance(value, tuple):
        return "desired"
    return "register" if store.entry(twin, name) is not None else "counter"


def _family(value: Value) -> str:
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else "bytes"


def _check_value(value: Value, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise naming(InvalidValueError(f"{path}: {value} is not a finite number"), path)


def _check_name(name: str, what: str, path: str, max_bytes: int) -> None:
    if not name:
        raise naming(InvalidValueError(f"{path}: the {what} is empty"), path)
    if len(name.encode()) > max_bytes:
        raise naming(
            InvalidValueError(f"{path}: the {what} is longer than limits.max_name_bytes ({max_bytes})"), path
        )


def name_ok(name: str, max_bytes: int) -> bool:
    """Whether the bulk and small paths take a twin or field name as it is: not empty, not reserved (``_``),
    within ``limits.max_name_bytes``. They decline any other, and the general path words what is wrong."""
    return bool(name) and not name.startswith("_") and len(name.encode()) <= max_bytes


class _Checker:
    """Validates one request against the store as it is, tracking the shapes the request itself gives
    fields (two ops in one batch must agree too)."""

    def __init__(self, store: Store, models: Callable[[str], AssetModel | None], max_name_bytes: int) -> None:
        self.store = store
        self.models = models
        self.max_name_bytes = max_name_bytes
        self.planned: dict[tuple[str, str], tuple[Shape, str | None]] = {}
        self._fields: dict[str, dict[str, FieldValue]] = {}  # read once per twin
        self.numeric: set[int] = set()  # ids of the TwinOps whose numbers take the batch path
        self.repeated: set[str] = set()  # twins listed more than once in the request (the general path)
        self._names_ok: set[str] = set()  # field names of numbers already checked in this request
        self._ranges: dict[tuple[str, str], tuple[float, float] | None] = {}  # (model, field) -> valid range

    def fields_of(self, twin: str) -> dict[str, FieldValue]:
        got = self._fields.get(twin)
        if got is None:
            got = self._fields[twin] = self.store.fields(twin) if twin in self.store else {}
        return got

    def twin(self, tw: TwinOps) -> None:
        store, path = self.store, tw.path
        _check_name(tw.twin, "twin id", f"{path}.twin_id", self.max_name_bytes)
        if tw.twin.startswith("_"):
            raise naming(
                InvalidValueError(f"{path}.twin_id: twin {tw.twin!r} is internal to the node ('_' prefix)"),
                f"{path}.twin_id",
            )
        exists = visible(store, tw.twin)
        version = twin_version(store, tw.twin)
        if tw.if_version is not None and tw.if_version != version:
            raise naming(
                PreconditionError(
                    f"{path}.if_version: twin {tw.twin!r} is at version {version}, not {tw.if_version}"
                ),
                f"{path}.if_version",
                version=str(version),
            )
        if tw.create is not None and tw.delete:
            raise naming(InvalidValueError(f"{path}: create and delete in one write"), f"{path}.delete")
        if tw.create is not None:
            if exists:
                raise naming(
                    PreconditionError(f"{path}.create: twin {tw.twin!r} exists (version {version})"),
                    f"{path}.create",
                    version=str(version),
                )
            self._create(tw.create, f"{path}.create")
        elif not exists:
            raise naming(
                UnknownTwinError(f"{path}.twin_id: no twin {tw.twin!r} on this node"), f"{path}.twin_id"
            )
        if tw.delete and (tw.ops or tw.numbers is not None):
            raise naming(InvalidValueError(f"{path}: a delete carries no field writes"), f"{path}.ops")
        model = self._model_of(tw)
        if tw.numbers is not None and tw.twin not in self.repeated and self._numbers(tw, model):
            self.numeric.add(id(tw))
            return
        for op in tw.all_ops():
            self.op(tw.twin, op, model)

    def _numbers(self, tw: TwinOps, model: AssetModel | None) -> bool:
        """Checks ``tw.numbers`` as the general path would, per distinct name and per twin; False (nothing
        raised) when a field they write holds something other than an f64 (the general path decides)."""
        assert tw.numbers is not None
        names, values, path = tw.numbers.names, tw.numbers.values, tw.path
        new = set(names).difference(self._names_ok)
        if new:
            for j, name in enumerate(names):
                if name in new:
                    self.field_name(name, f"{path}.ops[{j}]")
            self._names_ok |= new
        if not all(map(math.isfinite, values)):
            j = next(j for j, v in enumerate(values) if not math.isfinite(v))
            _check_value(values[j], f"{path}.ops[{j}].report")
        if model is not None:
            self._in_ranges(tw, model)
        held = self.fields_of(tw.twin)
        return not any(type(held.get(name, 0.0)) is not float for name in names)

    def _in_ranges(self, tw: TwinOps, model: AssetModel) -> None:
        assert tw.numbers is not None
        for j, (name, value) in enumerate(zip(tw.numbers.names, tw.numbers.values, strict=True)):
            key = (model.name, name)
            if key not in self._ranges:
                spec = _spec(model, name)
                self._ranges[key] = None if spec is None else (spec.valid_min, spec.valid_max)
            bounds = self._ranges[key]
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                spec = _spec(model, name)
                assert spec is not None
                op = Op(name, "report", value, f"{tw.path}.ops[{j}]")
                _check_model(spec, model, op, f"{op.path}.report")

    def _create(self, create: Create, path: str) -> None:
        if create.model and self.models(create.model) is None:
            raise naming(InvalidValueError(f"{path}.model: unknown model {create.model!r}"), f"{path}.model")
        for key, value in create.metadata.items():
            _check_name(META_PREFIX + key, "metadata key", f"{path}.metadata[{key!r}]", self.max_name_bytes)
            if not key:
                raise naming(InvalidValueError(f"{path}.metadata: an empty key"), f"{path}.metadata")
            del value

    def model_of_twin(self, twin: str) -> AssetModel | None:
        name = self.store.get(twin, MODEL_FIELD)
        return self.models(name) if isinstance(name, str) and name else None

    def _model_of(self, tw: TwinOps) -> AssetModel | None:
        name = tw.create.model if tw.create is not None else self.store.get(tw.twin, MODEL_FIELD)
        return self.models(name) if isinstance(name, str) and name else None

    def field_name(self, name: str, path: str) -> None:
        """Raises unless ``name`` may be written by an application (``path``: the op's)."""
        _check_name(name, "field name", f"{path}.field", self.max_name_bytes)
        if name.startswith("_") or name.endswith(DESIRED_SUFFIX):
            raise naming(
                InvalidValueError(
                    f"{path}.field: {name!r} is reserved ('_' prefix, '{DESIRED_SUFFIX}' suffix: "
                    "write desired values with a desire op on the field itself)"
                ),
                f"{path}.field",
            )

    def op(self, twin: str, op: Op, model: AssetModel | None) -> None:
        path = op.path
        self.field_name(op.field, path)
        spec = _spec(model, op.field)
        if op.kind in ("report", "desire"):
            assert op.value is not None
            _check_value(op.value, f"{path}.{op.kind}")
            if spec is not None:
                assert model is not None
                _check_model(spec, model, op, f"{path}.{op.kind}")
        elif spec is not None and op.kind != "clear_desired":
            raise naming(
                TypeConflictError(
                    f"{path}: field {op.field!r} of model {model.name if model else ''!r} is a numeric "
                    f"{spec.kind} value, not a set or a counter"
                ),
                f"{path}.field",
            )
        if op.kind == "report":
            assert op.value is not None
            self.shape(twin, op.field, "register", _family(op.value), path)
        elif op.kind in ("desire", "clear_desired"):
            family = _family(op.value) if op.value is not None else None
            self.shape(twin, op.field + DESIRED_SUFFIX, "desired", family, path)
        elif op.kind in ("add", "remove"):
            assert isinstance(op.value, str)
            _check_name(op.value, "element", f"{path}.{op.kind}", self.max_name_bytes)
            self.shape(twin, op.field, "set", None, path)
        else:
            assert isinstance(op.value, int)
            self.shape(twin, op.field, "counter", None, path)
            now = self.fields_of(twin).get(op.field)
            now = now if isinstance(now, int) and not isinstance(now, bool) else 0
            if not I64_MIN <= now + op.value <= I64_MAX:
                raise naming(
                    InvalidValueError(f"{path}.increment: counter {op.field!r} ({now}) would overflow"),
                    f"{path}.increment",
                )

    def shape(self, twin: str, name: str, shape: Shape, family: str | None, path: str) -> None:
        store, key = self.store, (twin, name)
        if key in self.planned:
            held, held_family = self.planned[key]
        elif (value := self.fields_of(twin).get(name)) is not None:
            held = _shape(store, twin, name, value)
            held_family = (
                _family(value) if held == "register" and not isinstance(value, frozenset | tuple) else None
            )
            if held == "desired" and isinstance(value, tuple) and value:
                held_family = _family(value[0])
        else:
            self.planned[key] = (shape, family)
            return
        if held != shape:
            raise naming(
                TypeConflictError(f"{path}.field: field {name!r} of {twin!r} is a {held}, not a {shape}"),
                f"{path}.field",
            )
        if family is not None and held_family is not None and family != held_family:
            raise naming(
                TypeConflictError(
                    f"{path}: field {name!r} of {twin!r} holds a {held_family} value, not a {family}"
                ),
                f"{path}.field",
            )
        self.planned[key] = (shape, family or held_family)


def _spec(model: AssetModel | None, name: str) -> FieldSpec | None:
    if model is None:
        return None
    return next((f for f in model.spec.fields if f.name == name), None)


def _check_model(spec: FieldSpec, model: AssetModel, op: Op, path: str) -> None:
    value = op.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise naming(
            TypeConflictError(
                f"{path}: field {spec.name!r} of model {model.name!r} is a number ({spec.kind}), "
                f"got {_family(value) if value is not None else 'nothing'}"
            ),
            path,
        )
    if not spec.valid_min <= value <= spec.valid_max:
        raise naming(
            InvalidValueError(
                f"{path}: {value} is outside the valid range of {spec.name!r} in model {model.name!r} "
                f"[{spec.valid_min:g}, {spec.valid_max:g}]"
            ),
            path,
        )
    if op.kind == "desire" and spec.kind not in DESIRABLE_KINDS:
        raise naming(
            InvalidValueError(
                f"{path}: field {spec.name!r} of model {model.name!r} is a measurement ({spec.kind}): "
                f"it has no desired value (desirable kinds: {', '.join(DESIRABLE_KINDS)})"
            ),
            path,
        )


def check(
    store: Store,
    writes: Sequence[TwinOps],
    models: Callable[[str], AssetModel | None],
    max_name_bytes: int,
) -> _Checker:
    """Raises the first problem of the request (an error naming the field); changes nothing. Returns the
    checker, which knows the shapes the request gives fields (for the columns checked after)."""
    checker = _Checker(store, models, max_name_bytes)
    checker.repeated = {twin for twin, n in Counter(tw.twin for tw in writes).items() if n > 1}
    for tw in writes:
        checker.twin(tw)
    return checker


def apply(
    store: Store,
    writes: Sequence[TwinOps],
    defaults: Callable[[str, str], Mapping[str, Value]],
    out: Applied,
    checker: _Checker,
) -> None:
    """Applies a :func:`check`-ed request to the store, into ``out``. ``defaults(twin, model)`` gives a
    created twin's model, model version and scope (the request's model and scope win over the node's
    rules). Should the store refuse something all the same, ``out.deltas`` still holds what was applied:
    the caller must commit it.

    The numbers of every twin the check let through (``checker.numeric``) go in one native batch write,
    after the twins' creates; each such twin is audited with the values it changed and what they were."""
    numeric = [tw for tw in writes if id(tw) in checker.numeric]
    created = {tw.twin: store.fields(tw.twin) if tw.twin in store else {} for tw in numeric if tw.create}
    for tw in writes:
        if id(tw) in checker.numeric:
            if tw.create is not None:
                _create(store, tw, defaults, out)
            continue
        _apply_twin(store, tw, defaults, out)
    if numeric:
        _apply_numbers(store, numeric, checker, created, out)


def _create(
    store: Store, tw: TwinOps, defaults: Callable[[str, str], Mapping[str, Value]], out: Applied
) -> None:
    assert tw.create is not None
    twin = tw.twin
    meta: dict[str, Value] = dict(defaults(twin, tw.create.model))
    if tw.create.scope:
        meta[SCOPE_FIELD] = tw.create.scope
    meta.update({META_PREFIX + k: v for k, v in tw.create.metadata.items()})
    if store.get(twin, DELETED_FIELD) is not None:
        meta[DELETED_FIELD] = False
    if not meta:
        meta[DELETED_FIELD] = False  # a twin needs one field to exist
    out.deltas.append((store.set_many(twin, meta), twin))
    out.actions[twin] = "create"


def _apply_numbers(
    store: Store,
    numeric: Sequence[TwinOps],
    checker: _Checker,
    created: Mapping[str, Mapping[str, FieldValue]],
    out: Applied,
) -> None:
    twins: list[str] = []
    names: list[str] = []
    values: list[float] = []
    for tw in numeric:
        assert tw.numbers is not None
        twins += [tw.twin] * len(tw.numbers.names)
        names += tw.numbers.names
        values += tw.numbers.values
    delta = store.write_named(twins, names, np.array(values, np.float64))  # the GIL released inside
    out.deltas.append((delta, numeric[0].twin))
    for tw in numeric:
        twin = tw.twin
        assert tw.numbers is not None
        out.extra_twins.append(twin)
        out.actions.setdefault(twin, "write")
        out.versions[twin] = twin_version(store, twin)
        before = created.get(twin)
        if before is not None:  # created by this request: every field it has is a change
            out.changes[twin] = _diff(before, store.fields(twin))
            continue
        held = checker.fields_of(twin)
        last = dict(zip(tw.numbers.names, tw.numbers.values, strict=True))  # a field written twice: its last
        changed = [(n, v, held.get(n)) for n, v in last.items() if held.get(n) != v]
        out.changes[twin] = Readings(
            [c[0] for c in changed],
            [c[1] for c in changed],
            olds=[c[2] for c in changed],  # type: ignore[misc]  # held as float (or absent): checked
        )


def _diff(before: Mapping[str, FieldValue], after: Mapping[str, FieldValue]) -> dict[str, Change]:
    return {
        name: Change(new=value, old=before.get(name), old_known=True)
        for name, value in after.items()
        if name not in before or before[name] != value or type(before[name]) is not type(value)
    }


def _apply_twin(
    store: Store, tw: TwinOps, defaults: Callable[[str, str], Mapping[str, Value]], out: Applied
) -> None:
    twin = tw.twin
    before = store.fields(twin) if twin in store else {}
    parts = out.deltas
    if tw.create is not None:
        _create(store, tw, defaults, out)
    if tw.delete:
        parts.append((store.set(twin, DELETED_FIELD, True), twin))
        out.actions[twin] = "delete"
    out.actions.setdefault(twin, "write")
    # Reported values go in one delta per twin (check() refused any other op on those fields).
    ops = tw.all_ops()
    reports = {op.field: op.value for op in ops if op.kind == "report" and op.value is not None}
    if reports:
        parts.append((store.set_many(twin, reports), twin))
    # A set's adds and removes go in one call with one delta (a set's delta holds the whole set, so a
    # delta per op made a request's join quadratic); a counter's increments of one sign as their sum.
    # Fields are independent, so only each field's own ops keep their order.
    sets: dict[str, list[tuple[bool, str]]] = {}
    amounts: dict[str, list[int]] = {}
    for op in ops:
        if op.kind in ("add", "remove"):
            assert isinstance(op.value, str)
            sets.setdefault(op.field, []).append((op.kind == "add", op.value))
        elif op.kind == "increment":
            assert isinstance(op.value, int)
            amounts.setdefault(op.field, []).append(op.value)
        elif op.kind != "report":
            parts.append((_apply_op(store, twin, op), twin))
    for name, elements in sets.items():
        parts.append((store.set_ops(twin, name, elements), twin))
    for name, by in amounts.items():
        for amount in _summed(by):
            parts.append((store.increment(twin, name, amount), twin))
    out.changes[twin] = _diff(before, store.fields(twin))
    out.versions[twin] = twin_version(store, twin)


def _summed(amounts: list[int]) -> list[int]:
    """Increments of one counter as one when they share a sign (each step then moves the counter the same
    way, so the sum overflows exactly where one of the steps would), else as given."""
    if len(amounts) > 1 and (all(a >= 0 for a in amounts) or all(a <= 0 for a in amounts)):
        total = sum(amounts)
        if -(1 << 63) <= total < (1 << 63):
            return [total]
    return amounts


def _apply_op(store: Store, twin: str, op: Op) -> bytes:
    if op.kind == "report":
        assert op.value is not None
        return store.set(twin, op.field, op.value)
    if op.kind == "desire":
        assert op.value is not None
        return store.desire(twin, op.field + DESIRED_SUFFIX, op.value)
    if op.kind == "clear_desired":
        return store.clear_desired(twin, op.field + DESIRED_SUFFIX)
    if op.kind == "add":
        assert isinstance(op.value, str)
        return store.add(twin, op.field, op.value)
    if op.kind == "remove":
        assert isinstance(op.value, str)
        return store.remove(twin, op.field, op.value)
    assert isinstance(op.value, int)
    return store.increment(twin, op.field, op.value)
