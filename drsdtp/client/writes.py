"""Writes as plain values: a :class:`TwinWrite` per twin, made of :class:`Op` s, turned into the API's
``WriteRequest`` in one place (:func:`request`)."""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from drsdtp.protobytes import FIXED64, LENGTH, VARINT, length_prefixed, tag, varint
from drsdtp.wire.v1 import api_pb2

__all__ = [
    "Ack",
    "Columns",
    "Create",
    "Op",
    "Scalar",
    "TwinWrite",
    "add",
    "clear_desired",
    "desire",
    "increment",
    "new_idempotency_key",
    "remove",
    "report",
    "request",
    "request_bytes",
    "request_parts",
    "scalar_pb",
]

#: A register's value: a float, an int, a bool, text or bytes.
Scalar: TypeAlias = float | int | bool | str | bytes
Ack: TypeAlias = Literal["durable", "replicated"]
OpKind: TypeAlias = Literal["report", "desire", "clear_desired", "add", "remove", "increment"]


@dataclass(frozen=True, slots=True)
class Op:
    """One change to one field (build it with :func:`report`, :func:`desire` ...)."""

    kind: OpKind
    field: str
    value: Scalar | None = None


def report(field: str, value: Scalar) -> Op:
    """A reported value (a manual reading, a value from MES/ERP)."""
    return Op("report", field, value)


def desire(field: str, value: Scalar) -> Op:
    """A desired value for reported field ``field`` (kept in ``<field>.desired``)."""
    return Op("desire", field, value)


def clear_desired(field: str) -> Op:
    """Withdraw every desired value of ``field`` the node has seen (resolves a conflict by removing it)."""
    return Op("clear_desired", field)


def add(field: str, element: str) -> Op:
    """Add an element to a set field."""
    return Op("add", field, element)


def remove(field: str, element: str) -> Op:
    """Remove an element from a set field."""
    return Op("remove", field, element)


def increment(field: str, by: int = 1) -> Op:
    """Add ``by`` (negative: subtract) to a counter field."""
    return Op("increment", field, by)


@dataclass(frozen=True, slots=True)
class Create:
    """Create the twin: of an asset ``model`` the node knows (empty: none), in ``scope`` (empty: the node's
    first), with ``metadata`` (stored as text fields ``meta.<key>``)."""

    model: str = ""
    scope: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwinWrite:
    """Everything one request does to one twin: ``ops`` in order, after ``create`` (or instead: ``delete``),
    only if the twin is at ``if_version`` (else :class:`~drsdtp.client.errors.ConflictError`)."""

    twin_id: str
    ops: tuple[Op, ...] = ()
    create: Create | None = None
    delete: bool = False
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Columns:
    """Many numeric readings in columns, the fast path for bulk writes: row i writes ``values[i]`` to field
    ``fields[field[i]]`` of twin ``twin_ids[twin[i]]`` (at ``source_ms[i]``; empty: the node's clock)."""

    twin_ids: Sequence[str]
    fields: Sequence[str]
    twin: Sequence[int]
    field: Sequence[int]
    values: Sequence[float]
    source_ms: Sequence[int] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, float]]) -> Columns:
        """Columns from (twin, field, value) rows."""
        twins: dict[str, int] = {}
        fields: dict[str, int] = {}
        ti: list[int] = []
        fi: list[int] = []
        values: list[float] = []
        for twin, name, value in rows:
            ti.append(twins.setdefault(twin, len(twins)))
            fi.append(fields.setdefault(name, len(fields)))
            values.append(value)
        return cls(list(twins), list(fields), ti, fi, values)

    def __len__(self) -> int:
        return len(self.values)


def new_idempotency_key() -> str:
    """A fresh random key: send it with a write, and a retry of that write is applied once."""
    return uuid.uuid4().hex


def scalar_pb(value: Scalar, where: str) -> api_pb2.FieldValue:
    """A register value as the API sends it (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        return api_pb2.FieldValue(flag=value)
    if isinstance(value, int):
        return api_pb2.FieldValue(i64=value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
        return api_pb2.FieldValue(f64=value)
    if isinstance(value, str):
        return api_pb2.FieldValue(text=value)
    if isinstance(value, bytes):
        return api_pb2.FieldValue(blob=value)
    raise TypeError(f"{where}: a {type(value).__name__} is not a field value (float, int, bool, str, bytes)")


def _op_pb(op: Op, where: str) -> api_pb2.FieldOp:
    if op.kind == "report":
        assert op.value is not None, f"{where}: report needs a value"
        return api_pb2.FieldOp(field=op.field, report=scalar_pb(op.value, f"{where}.report"))
    if op.kind == "desire":
        assert op.value is not None, f"{where}: desire needs a value"
        return api_pb2.FieldOp(field=op.field, desire=scalar_pb(op.value, f"{where}.desire"))
    if op.kind == "clear_desired":
        return api_pb2.FieldOp(field=op.field, clear_desired=True)
    if op.kind == "add":
        return api_pb2.FieldOp(field=op.field, add=str(op.value))
    if op.kind == "remove":
        return api_pb2.FieldOp(field=op.field, remove=str(op.value))
    if not isinstance(op.value, int) or isinstance(op.value, bool):
        raise TypeError(f"{where}.increment: {op.value!r} is not an integer")
    return api_pb2.FieldOp(field=op.field, increment=op.value)


class _Ops:
    """Each distinct op converted once per request (a batch often writes the same ops to many twins)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, type, object], api_pb2.FieldOp] = {}

    def __call__(self, op: Op, twin: int, index: int) -> api_pb2.FieldOp:
        key = (op.kind, op.field, type(op.value), op.value)  # with the type: 1, 1.0 and True are equal
        got = self._done.get(key)
        if got is None:  # a refusal names the first place the op appears
            got = self._done[key] = _op_pb(op, f"twins[{twin}].ops[{index}]")
        return got


_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")

# The tags of the messages request_bytes writes itself, from the generated descriptors (drsdtp.protobytes).
_TWINS = tag(api_pb2.WriteRequest, "twins", LENGTH)
_TWIN_ID = tag(api_pb2.TwinWrite, "twin_id", LENGTH)
_IF_VERSION = tag(api_pb2.TwinWrite, "if_version", FIXED64)
_CREATE = tag(api_pb2.TwinWrite, "create", LENGTH)
_DELETE = tag(api_pb2.TwinWrite, "delete", VARINT) + b"\x01"  # true
_OPS = tag(api_pb2.TwinWrite, "ops", LENGTH)
_FIELD = tag(api_pb2.FieldOp, "field", LENGTH)
_F64_TAG = tag(api_pb2.FieldValue, "f64", FIXED64)
# FieldOp.report holding a FieldValue that is only its f64 (its tag and 8 bytes); the 8 bytes follow.
_REPORT_F64 = tag(api_pb2.FieldOp, "report", LENGTH) + varint(len(_F64_TAG) + 8) + _F64_TAG


class _OpBytes:
    """Each distinct op as its bytes in a ``TwinWrite`` (tag, length, ``FieldOp``), made once per request;
    a float report is spelt out directly (the common bulk op), any other through protobuf."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, type, object], bytes] = {}

    def __call__(self, op: Op, twin: int, index: int) -> bytes:
        key = (op.kind, op.field, type(op.value), op.value)
        got = self._done.get(key)
        if got is None:
            value = op.value
            if op.kind == "report" and type(value) is float and math.isfinite(value):
                name = op.field.encode()
                body = (_FIELD + length_prefixed(name) if name else b"") + _REPORT_F64 + _F64.pack(value)
            else:
                body = _op_pb(op, f"twins[{twin}].ops[{index}]").SerializeToString()
            got = self._done[key] = _OPS + length_prefixed(body)
        return got


def _twin_bytes(tw: TwinWrite, at: int, ops: _OpBytes) -> bytes:
    """``_twin_pb(tw, ...)`` serialized, in field order as protobuf writes it."""
    twin_id = tw.twin_id.encode()
    parts = [_TWIN_ID + length_prefixed(twin_id)] if twin_id else []
    if tw.if_version is not None:
        parts.append(_IF_VERSION + _U64.pack(tw.if_version))
    if tw.create is not None:
        c = tw.create
        create = api_pb2.CreateTwin(model=c.model, scope=c.scope, metadata=dict(c.metadata))
        parts.append(_CREATE + length_prefixed(create.SerializeToString(deterministic=True)))
    if tw.delete:
        parts.append(_DELETE)
    parts += [ops(op, at, i) for i, op in enumerate(tw.ops)]
    return b"".join(parts)


def _twin_pb(tw: TwinWrite, at: int, ops: _Ops) -> api_pb2.TwinWrite:
    pb = api_pb2.TwinWrite(
        twin_id=tw.twin_id, delete=tw.delete, ops=[ops(op, at, i) for i, op in enumerate(tw.ops)]
    )
    if tw.if_version is not None:
        pb.if_version = tw.if_version
    if tw.create is not None:
        pb.create.CopyFrom(
            api_pb2.CreateTwin(
                model=tw.create.model, scope=tw.create.scope, metadata=dict(tw.create.metadata)
            )
        )
    return pb


def request(
    twins: Sequence[TwinWrite],
    *,
    columns: Columns | None = None,
    idempotency_key: str | None = None,
    ack: Ack = "durable",
    replicas: int = 0,
    replicate_timeout_s: float = 0.0,
    actor: str = "",
    reason: str = "",
) -> api_pb2.WriteRequest:
    """The ``WriteRequest`` for a batch; a value the API cannot carry (NaN, a list) raises ``ValueError`` /
    ``TypeError`` naming it, before anything is sent."""
    if ack not in ("durable", "replicated"):
        raise ValueError(f"ack: {ack!r} is not 'durable' or 'replicated'")
    ops = _Ops()
    pb = api_pb2.WriteRequest(
        twins=[_twin_pb(tw, i, ops) for i, tw in enumerate(twins)],
        idempotency_key=idempotency_key or "",
        ack=api_pb2.ACK_REPLICATED if ack == "replicated" else api_pb2.ACK_DURABLE,
        replicas=replicas,
        replicate_timeout_ms=round(replicate_timeout_s * 1000),
        actor=actor,
        reason=reason,
    )
    if columns is not None:
        c = pb.columns
        c.twin_ids.extend(columns.twin_ids)
        c.fields.extend(columns.fields)
        c.twin.extend(columns.twin)
        c.field.extend(columns.field)
        c.values.extend(columns.values)
        c.source_ms.extend(columns.source_ms)
    return pb


def request_bytes(
    twins: Sequence[TwinWrite],
    *,
    columns: Columns | None = None,
    idempotency_key: str | None = None,
    ack: Ack = "durable",
    replicas: int = 0,
    replicate_timeout_s: float = 0.0,
    actor: str = "",
    reason: str = "",
) -> bytes:
    """:func:`request` serialized, the twins' ops written as bytes directly (each distinct op once): a
    bulk write of thousands of ops cost the client more than the node took to apply it. The same errors,
    and the bytes the protobuf runtime writes for the same request (deterministic: map keys sorted)."""
    return b"".join(
        request_parts(
            twins,
            columns=columns,
            idempotency_key=idempotency_key,
            ack=ack,
            replicas=replicas,
            replicate_timeout_s=replicate_timeout_s,
            actor=actor,
            reason=reason,
        )
    )


def request_parts(
    twins: Sequence[TwinWrite],
    *,
    columns: Columns | None = None,
    idempotency_key: str | None = None,
    ack: Ack = "durable",
    replicas: int = 0,
    replicate_timeout_s: float = 0.0,
    actor: str = "",
    reason: str = "",
) -> tuple[bytes, bytes]:
    """:func:`request_bytes` in two parts: the twins (field 1), then the rest (fields 2-8). Requests whose
    rest is the same may be sent as one by joining their twins (a repeated field concatenates)."""
    rest = request(
        [],
        columns=columns,
        idempotency_key=idempotency_key,
        ack=ack,
        replicas=replicas,
        replicate_timeout_s=replicate_timeout_s,
        actor=actor,
        reason=reason,
    ).SerializeToString()  # fields 2-8, after the twins (field 1), as protobuf orders them
    ops = _OpBytes()
    try:
        twin_parts = [_TWINS + length_prefixed(_twin_bytes(tw, i, ops)) for i, tw in enumerate(twins)]
    except UnicodeEncodeError:  # a name protobuf cannot carry either: its own error, as request() gives
        whole = request(twins, columns=columns, idempotency_key=idempotency_key, ack=ack, actor=actor,
                        replicas=replicas, replicate_timeout_s=replicate_timeout_s, reason=reason,
                        ).SerializeToString()  # fmt: skip
        return whole[: len(whole) - len(rest)], rest
    return b"".join(twin_parts), rest
