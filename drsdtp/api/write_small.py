"""Small writes: a ``WriteRequest`` of a few f64 reports to one twin (what an application's ``report(twin,
{...})`` sends), checked in plain Python and applied with one native call (``Store.write_f64s``): no numpy.
The bulk path (:mod:`drsdtp.api.write_bulk`) costs a dozen numpy steps whatever the size, 0.2-0.5 ms of a
one-row write's round trip; this path a few microseconds. Past :data:`MAX_ROWS` the bulk path is cheaper
(measured: ``benches/bench_sdk.py --small-cutover``; ``max_rows`` lets the bench move it).

Like the bulk path, this one never refuses anything: whenever a check does not pass, :func:`plan` (or
:func:`apply`, finding a field held as something other than an f64 register, before writing anything)
gives None and the request takes the general path (:mod:`drsdtp.api.write_plan`), which words the error.
It writes what the bulk path writes: the same batch write of one twin (state, delta and version), audited
as the bulk path audits one twin (each field's last value where it changed, with the value it replaced).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from drsdtp._core import Store
from drsdtp.api.write_plan import DESIRED_SUFFIX, Applied, _spec, name_ok, twin_version, visible
from drsdtp.history.audit import Readings
from drsdtp.models import MODEL_FIELD, AssetModel
from drsdtp.wire.v1 import api_pb2

__all__ = ["MAX_BODY_BYTES", "MAX_ROWS", "Small", "apply", "is_small", "plan"]

#: Most f64 reports a request may carry to take this path: chosen by measurement (see the module's doc).
MAX_ROWS = 64
#: Request bodies the deserializer tries as small ones (protobuf parses them first, then the bulk decoder
#: if they are not: a body this size costs a microsecond or two to parse twice). 32 reports fit.
MAX_BODY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Small:
    """A checked small write: ``values[r]`` to field ``names[r]`` of ``twin``, in request order."""

    twin: str
    names: list[str]
    values: list[float]


def is_small(request: api_pb2.WriteRequest, max_rows: int = MAX_ROWS) -> bool:
    """Whether the request has the small shape: one twin listing of at most :data:`MAX_ROWS` f64 reports,
    nothing else (no create, delete, columns or idempotency key)."""
    if len(request.twins) != 1 or request.idempotency_key or request.HasField("columns"):
        return False
    tw = request.twins[0]
    ops = tw.ops
    if not ops or len(ops) > max_rows or tw.delete or tw.HasField("create"):
        return False
    return all(op.WhichOneof("op") == "report" and op.report.WhichOneof("value") == "f64" for op in ops)


def plan(
    store: Store,
    request: api_pb2.WriteRequest,
    models: Callable[[str], AssetModel | None],
    max_name_bytes: int,
    max_rows: int = MAX_ROWS,
) -> Small | None:
    """The request as a small write if it has the shape (:func:`is_small`) and every check the general
    path makes passes, else None: a visible twin at ``if_version`` (when given), field names an application
    may write, finite values within the ranges of the twin's model."""
    if not is_small(request, max_rows):
        return None
    tw = request.twins[0]
    twin = tw.twin_id
    if not name_ok(twin, max_name_bytes) or not visible(store, twin):
        return None
    if tw.HasField("if_version") and twin_version(store, twin) != tw.if_version:
        return None
    names = [op.field for op in tw.ops]
    values = [op.report.f64 for op in tw.ops]
    for name in names:
        if not name_ok(name, max_name_bytes) or name.endswith(DESIRED_SUFFIX):
            return None
    if not all(map(math.isfinite, values)):
        return None
    model_name = store.get(twin, MODEL_FIELD)
    model = models(model_name) if isinstance(model_name, str) and model_name else None
    if model is not None:
        for name, value in zip(names, values, strict=True):
            spec = _spec(model, name)
            if spec is not None and not spec.valid_min <= value <= spec.valid_max:
                return None
    return Small(twin, names, values)


def apply(store: Store, small: Small, out: Applied) -> bool:
    """Writes a :func:`plan` ned small write into ``out`` (its delta, the twin's version, the changes for
    the audit trail), or False, writing nothing, when a field holds something other than an f64 register
    (the general path decides)."""
    written = store.write_f64s(small.twin, small.names, small.values)
    if written is None:
        return False
    delta, olds, version = written
    twin = small.twin
    out.deltas.append((delta, twin))
    out.extra_twins.append(twin)
    out.actions[twin] = "write"
    out.versions[twin] = version
    # Each field's last value in the request, and what the field held before the request (its first row's
    # old value), where they differ (nothing held differs from every value), by name.
    last: dict[str, float] = {}
    before: dict[str, float] = {}
    for name, value, old in zip(small.names, small.values, olds, strict=True):
        last[name] = value
        before.setdefault(name, old)
    changed = sorted(name for name, value in last.items() if value != before[name])
    if changed:
        out.changes[twin] = Readings(
            changed,
            [last[name] for name in changed],
            ordered=True,
            olds=[None if math.isnan(old) else old for old in (before[name] for name in changed)],
        )
    return True
