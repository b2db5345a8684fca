"""What the SDK returns: frozen dataclasses built from the API's messages (never protobuf objects)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

from drsdtp.wire.v1 import api_pb2

__all__ = [
    "DESIRED_SUFFIX",
    "Audit",
    "AuditRecord",
    "Change",
    "DeadLetter",
    "DesiredValue",
    "Field",
    "FieldChange",
    "FieldHealth",
    "HealthReport",
    "History",
    "Insight",
    "PeerStatus",
    "RollbackResult",
    "SnapshotInfo",
    "Status",
    "Twin",
    "TwinHealth",
    "TwinList",
    "TwinSummary",
    "Value",
    "WriteResult",
    "field_to_python",
]

#: A value as Python holds it: a register's float, int, bool, str or bytes; a set's sorted elements; a
#: counter's int; a desired field's values (one per concurrent intent).
Value: TypeAlias = float | int | bool | str | bytes | tuple[str, ...] | tuple[Any, ...] | None

#: A desired intent for field F is kept in the field ``F.desired``.
DESIRED_SUFFIX = ".desired"

Kind = Literal["f64", "i64", "flag", "text", "blob", "counter", "set", "desired", "none"]


def field_to_python(f: api_pb2.FieldValue) -> object:
    """The Python value of an API field (a set: its sorted elements; a desired field: the tuple of its
    values)."""
    kind = f.WhichOneof("value")
    if kind is None:
        return None
    if kind == "set":
        return sorted(f.set.elements)
    if kind == "desired":
        return tuple(field_to_python(v) for v in f.desired.values)
    return getattr(f, kind)


def _value(f: api_pb2.FieldValue) -> Value:
    kind = f.WhichOneof("value")
    if kind is None:
        return None
    if kind == "set":
        return tuple(sorted(f.set.elements))
    if kind == "desired":
        return tuple(_value(v) for v in f.desired.values)
    value: Value = getattr(f, kind)
    return value


@dataclass(frozen=True, slots=True)
class DesiredValue:
    """One intent of a desired field: its value and who wrote it when."""

    value: Value
    stamp: int  # the write's HLC stamp (physical milliseconds in its upper 48 bits)
    writer: int  # the writing replica's id
    writer_node: str  # the writer's node id, when the node knows it

    @property
    def time_ms(self) -> int:
        return self.stamp >> 16


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a twin. ``value`` is the plain value; for a desired field (``kind == "desired"``)
    ``desired`` lists every intent (more than one: a conflict the application must resolve)."""

    name: str
    kind: Kind
    value: Value
    stamp: int = 0  # registers: the HLC stamp of the write (0: not a register)
    writer: int = 0
    writer_node: str = ""
    desired: tuple[DesiredValue, ...] = ()

    @property
    def time_ms(self) -> int:
        """The write's time in Unix milliseconds (0 when the field has no stamp)."""
        return self.stamp >> 16

    @property
    def conflict(self) -> bool:
        """A desired field holding concurrent intents (none was silently dropped)."""
        return len(self.desired) > 1

    @classmethod
    def from_pb(cls, f: api_pb2.FieldValue) -> Field:
        kind: Kind = f.WhichOneof("value") or "none"
        if kind == "desired":
            desired = tuple(
                DesiredValue(_value(v), v.stamp, v.writer, v.writer_node) for v in f.desired.values
            )
            return cls(
                f.name, kind, tuple(d.value for d in desired), f.stamp, f.writer, f.writer_node, desired
            )
        if kind == "set":
            value: Value = tuple(sorted(f.set.elements))
        else:
            value = None if kind == "none" else getattr(f, kind)
        return cls(f.name, kind, value, f.stamp, f.writer, f.writer_node)


# In _Fields' cache of plain values: a field the message does not hold; a name not looked up yet.
_NO_FIELD: Value = cast(Value, object())
_UNREAD: Value = cast(Value, object())


class _Fields(Mapping[str, Field]):
    """A twin's fields read from its message, each decoded when first read: a watch delivering thousands of
    changes a second decodes only the fields the application looks at (``twin.get("x")`` decodes "x").
    A plain value read is kept: the watches sharing a stream are handed the same changes, and each reads
    them (measured, 100 watches: decoding "x" again for each was two thirds of the SDK's CPU a change).
    Holds the message (as long as the application holds the twin)."""

    __slots__ = ("_decoded", "_index", "_pb", "_values")

    def __init__(self, pb: Sequence[api_pb2.FieldValue]) -> None:
        self._pb = pb
        self._index: dict[str, int] | None = None
        self._decoded: dict[str, Field] | None = None  # made when a first Field is asked for
        self._values: dict[str, Value] | None = None  # made when a first plain value is asked for

    def _names(self) -> dict[str, int]:
        if self._index is None:
            self._index = {f.name: i for i, f in enumerate(self._pb)}
        return self._index

    def __getitem__(self, name: str) -> Field:
        if self._decoded is None:
            self._decoded = {}
        got = self._decoded.get(name)
        if got is None:
            got = self._decoded[name] = Field.from_pb(self._pb[self._names()[name]])
        return got

    def value(self, name: str, default: Value) -> Value:
        """The plain value of ``name`` (``default``: no such field), without a :class:`Field`."""
        values = self._values
        if values is None:
            values = self._values = {}
        got = values.get(name, _UNREAD)
        if got is _UNREAD:
            got = values[name] = self._read(name)
        return default if got is _NO_FIELD else got

    def _read(self, name: str) -> Value:
        if self._decoded is not None and (got := self._decoded.get(name)) is not None:
            return got.value
        if self._index is None and len(self._pb) <= 8:  # a few fields (a watch's): a scan beats an index
            for f in self._pb:
                if f.name == name:
                    return _value(f)
            return _NO_FIELD
        i = self._names().get(name)
        return _NO_FIELD if i is None else _value(self._pb[i])

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(frozen=True, slots=True)
class Twin:
    """A twin's fields and its version (pass it as ``if_version`` for a conditional write)."""

    twin_id: str
    version: int
    fields: Mapping[str, Field] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Value:
        return self.fields[name].value

    def get(self, name: str, default: Value = None) -> Value:
        fields = self.fields
        if type(fields) is _Fields:  # from a message: the value alone decoded, once
            values = fields._values
            if values is not None:  # read before (by another watch of a shared stream): no call
                got = values.get(name, _UNREAD)
                if got is not _UNREAD:
                    return default if got is _NO_FIELD else got
            return fields.value(name, default)
        f = fields.get(name)
        return default if f is None else f.value

    @property
    def values(self) -> dict[str, Value]:
        """Every field's plain value by name."""
        return {name: f.value for name, f in self.fields.items()}

    def desired(self, name: str) -> tuple[Value, ...]:
        """The desired values of reported field ``name`` (empty: no intent; more than one: a conflict)."""
        f = self.fields.get(name + DESIRED_SUFFIX)
        return tuple(d.value for d in f.desired) if f is not None else ()

    @property
    def conflicts(self) -> dict[str, tuple[Value, ...]]:
        """Reported field -> its concurrent desired values, for every desired field in conflict."""
        return {
            name.removesuffix(DESIRED_SUFFIX): tuple(d.value for d in f.desired)
            for name, f in self.fields.items()
            if f.conflict
        }

    @classmethod
    def from_pb(cls, t: api_pb2.Twin) -> Twin:
        return _twin(cls, t)


@dataclass(frozen=True, slots=True)
class TwinSummary:
    twin_id: str
    model: str
    scope: str
    fields: int
    updated_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class TwinList:
    twins: tuple[TwinSummary, ...]
    total: int  # matching twins before the limit


@dataclass(frozen=True, slots=True)
class PeerStatus:
    name: str
    address: str
    up: bool
    lag_s: float
    # Measured by replication probes: the peer's clock minus the node's (None until measured) and the round
    # trip; whether the peer's state digest equalled the node's when last compared, and how many seconds ago
    # digests were last equal and last compared (None: never).
    clock_offset_s: float | None = None
    round_trip_s: float | None = None
    digest_equal: bool = False
    digest_equal_age_s: float | None = None
    digest_checked_age_s: float | None = None

    @classmethod
    def from_pb(cls, p: api_pb2.PeerStatus) -> PeerStatus:
        def opt(name: str) -> float | None:
            return float(getattr(p, name)) if p.HasField(name) else None  # type: ignore[arg-type]

        return cls(
            p.name,
            p.address,
            p.up,
            p.lag_s,
            clock_offset_s=opt("clock_offset_s"),
            round_trip_s=opt("round_trip_s"),
            digest_equal=p.digest_equal,
            digest_equal_age_s=opt("digest_equal_age_s"),
            digest_checked_age_s=opt("digest_checked_age_s"),
        )


@dataclass(frozen=True, slots=True)
class Status:
    node_id: str
    replica_id: int
    version: str
    twins: int
    fields: int
    uptime_s: float
    scopes: tuple[str, ...]
    clock_offset_s: float | None
    peers: tuple[PeerStatus, ...]
    received: int
    invalid: int
    dropped: int
    late: int
    wal_records: int
    state_digest: int
    recovery_unaccepted: int
    not_ready_reason: str

    @property
    def ready(self) -> bool:
        return not self.not_ready_reason

    @classmethod
    def from_pb(cls, s: api_pb2.StatusReply) -> Status:
        return cls(
            node_id=s.node_id,
            replica_id=s.replica_id,
            version=s.version,
            twins=s.twins,
            fields=s.fields,
            uptime_s=s.uptime_s,
            scopes=tuple(s.scopes),
            clock_offset_s=s.clock_offset_s if s.HasField("clock_offset_s") else None,
            peers=tuple(PeerStatus.from_pb(p) for p in s.peers),
            received=s.received,
            invalid=s.invalid,
            dropped=s.dropped,
            late=s.late,
            wal_records=s.wal_records,
            state_digest=s.state_digest,
            recovery_unaccepted=s.recovery_unaccepted,
            not_ready_reason=s.not_ready_reason,
        )


@dataclass(frozen=True, slots=True)
class History:
    """A field's points: raw, or per bucket (``min``/``max``/``count`` then set) when downsampled."""

    resolution: str
    ts_ms: tuple[int, ...]
    values: tuple[float, ...]
    min: tuple[float, ...] = ()
    max: tuple[float, ...] = ()
    count: tuple[int, ...] = ()

    @classmethod
    def from_pb(cls, h: api_pb2.HistoryReply) -> History:
        return cls(h.resolution, tuple(h.ts_ms), tuple(h.values), tuple(h.min), tuple(h.max), tuple(h.count))


@dataclass(frozen=True, slots=True)
class Insight:
    """An intelligence document (health, forecast, what-if ...) as the node computed it."""

    kind: str
    document: Mapping[str, Any]

    @classmethod
    def from_json(cls, kind: str, text: str) -> Insight:
        return cls(kind, json.loads(text))


@dataclass(frozen=True, slots=True)
class FieldHealth:
    """A field that is not HEALTHY, and the node's verdict on why: ``cause`` "sensor" (this sensor is
    wrong), "process" (the quantity really changed), "model" (the kernel is wrong) or "" (undecided);
    ``evidence`` names what decided it and ``cause_detail`` says what it showed."""

    field: str
    status: str
    quality: float
    reasons: tuple[str, ...] = ()
    cause: str = ""
    evidence: tuple[str, ...] = ()
    cause_detail: str = ""

    @classmethod
    def from_pb(cls, f: api_pb2.FieldHealthSummary) -> FieldHealth:
        return cls(f.field, f.status, f.quality, tuple(f.reasons), f.cause, tuple(f.evidence), f.cause_detail)


@dataclass(frozen=True, slots=True)
class TwinHealth:
    """A twin's health as the node judged it; ``fields``: only those not HEALTHY."""

    twin_id: str
    model: str
    status: str
    quality: float
    fields: tuple[FieldHealth, ...] = ()

    @classmethod
    def from_pb(cls, t: api_pb2.TwinHealthSummary) -> TwinHealth:
        return cls(t.twin_id, t.model, t.status, t.quality, tuple(FieldHealth.from_pb(f) for f in t.fields))


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Health of the asked twins at plant time ``t_s`` (the node's latest intelligence pass)."""

    twins: tuple[TwinHealth, ...]
    t_s: float

    @classmethod
    def from_pb(cls, h: api_pb2.HealthReply) -> HealthReport:
        return cls(tuple(TwinHealth.from_pb(t) for t in h.twins), h.t_s)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    adapter: str
    source: str
    received_ms: int
    reason: str
    detail: str
    size: int
    truncated: bool
    preview: bytes


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Each written twin's version after the write; ``replicated``: the peers that acknowledged (with
    ``ack="replicated"``); ``repeated``: the node had already applied this idempotency key (nothing applied
    this time, the original reply returned)."""

    versions: Mapping[str, int]
    replicated: int = 0
    repeated: bool = False

    @classmethod
    def from_pb(cls, r: api_pb2.WriteReply) -> WriteResult:
        return cls({t.twin_id: t.version for t in r.twins}, r.replicated, r.repeated)


@dataclass(frozen=True, slots=True)
class Change:
    """One message of a watch: the twin's state (its watched fields) after a change.

    ``origin``: "snapshot" (the initial state), "local" (API writes), "ingest", "peer", or "restart" (a change
    from before the node restarted). ``cursor``: where it is in the node's change feed (0 for all but the
    last snapshot message); a watch resumes after the last non-zero one by itself."""

    twin: Twin
    origin: str
    cursor: int

    @classmethod
    def from_pb(cls, c: api_pb2.TwinChange) -> Change:
        change = _new(cls)
        _CHANGE_TWIN(change, _twin(Twin, c.twin))
        _CHANGE_ORIGIN(change, c.origin)
        _CHANGE_CURSOR(change, c.cursor)
        return change


# A watch builds a Change, its Twin and its fields for every change it delivers (a million a second for 100
# watchers of 10k changes/s): built by setting their slots directly, as a frozen dataclass's __init__ would
# through object.__setattr__ one field at a time (measured: the three objects in 40% less time).
_new = object.__new__
_FIELDS_PB, _FIELDS_INDEX, _FIELDS_DECODED, _FIELDS_VALUES = (
    vars(_Fields)[n].__set__ for n in ("_pb", "_index", "_decoded", "_values")
)
_TWIN_ID, _TWIN_VERSION, _TWIN_FIELDS = (vars(Twin)[n].__set__ for n in ("twin_id", "version", "fields"))
_CHANGE_TWIN, _CHANGE_ORIGIN, _CHANGE_CURSOR = (vars(Change)[n].__set__ for n in ("twin", "origin", "cursor"))


def _twin(cls: type[Twin], t: api_pb2.Twin) -> Twin:
    fields = _new(_Fields)
    _FIELDS_PB(fields, t.fields)
    _FIELDS_INDEX(fields, None)
    _FIELDS_DECODED(fields, None)
    _FIELDS_VALUES(fields, None)
    twin = _new(cls)
    _TWIN_ID(twin, t.twin_id)
    _TWIN_VERSION(twin, t.version)
    _TWIN_FIELDS(twin, fields)
    return twin


def _maybe(f: api_pb2.FieldValue, present: bool) -> Value:
    return _value(f) if present else None


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A checksummed snapshot of a twin, kept on the node with who took it and why."""

    id: str
    twin_id: str
    created_ms: int
    reason: str
    actor: str
    sha256: str
    size: int

    @classmethod
    def from_pb(cls, i: api_pb2.SnapshotInfo) -> SnapshotInfo:
        return cls(i.id, i.twin_id, i.created_ms, i.reason, i.actor, i.sha256, i.size)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field a rollback (or an audited write) changed; ``before`` None: it did not exist."""

    name: str
    before: Value
    after: Value


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """What a rollback did: the fields it changed, the ones it left (not in the snapshot) or could not
    restore (with why), and the safety snapshot of the state before it (roll back to it to undo)."""

    snapshot: SnapshotInfo
    changed: tuple[FieldChange, ...]
    extra_fields: tuple[str, ...]
    skipped: Mapping[str, str]
    safety_snapshot: SnapshotInfo | None

    @classmethod
    def from_pb(cls, r: api_pb2.RollbackReply) -> RollbackResult:
        return cls(
            SnapshotInfo.from_pb(r.snapshot),
            tuple(
                FieldChange(c.name, _maybe(c.before, c.HasField("before")), _value(c.after))
                for c in r.changed
            ),
            tuple(r.extra_fields),
            dict(r.skipped),
            SnapshotInfo.from_pb(r.safety_snapshot) if r.HasField("safety_snapshot") else None,
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts_ms: int
    actor: str
    action: str  # "snapshot", "rollback", "write", "create", "delete", "refused" ...
    twin_id: str
    changes: tuple[FieldChange, ...]
    reason: str
    via: str
    ref: str
    hash: str


@dataclass(frozen=True, slots=True)
class Audit:
    """The newest matching records of the hash-chained audit trail, and the verification of the chain."""

    records: tuple[AuditRecord, ...]
    total: int
    chain_ok: bool
    problems: tuple[str, ...]

    @classmethod
    def from_pb(cls, r: api_pb2.AuditReply) -> Audit:
        records = tuple(
            AuditRecord(
                a.seq,
                a.ts_ms,
                a.actor,
                a.action,
                a.twin_id,
                tuple(
                    FieldChange(c.name, _maybe(c.before, c.HasField("before")), _value(c.after))
                    for c in a.changes
                ),
                a.reason,
                a.via,
                a.ref,
                a.hash,
            )
            for a in r.records
        )
        return cls(records, r.total, r.chain_ok, tuple(r.chain_problems))
