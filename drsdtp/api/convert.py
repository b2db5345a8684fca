"""Domain values to protobuf messages of ``proto/drsdtp/wire/v1/api.proto`` (what the API sends), in one
place so every method and both faces (gRPC, HTTP/JSON) say a value the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from drsdtp._core import Store
from drsdtp.api.node import LetterListing, NodeStatus, PeerState, ReplayOutcome
from drsdtp.history.audit import AuditRecord
from drsdtp.history.series import SeriesData
from drsdtp.history.snapshots import SnapshotInfo
from drsdtp.history.values import FieldValue
from drsdtp.ingest.deadletters import Letter
from drsdtp.wire.v1 import api_pb2

__all__ = [
    "audit_message",
    "change_message",
    "field_message",
    "history_message",
    "letter_message",
    "listing_message",
    "outcome_message",
    "snapshot_message",
    "status_message",
    "twin_message",
    "value_message",
]


def value_message(name: str, value: FieldValue) -> api_pb2.FieldValue:
    """A value without a register stamp (snapshot and audit contents: a counter there is an ``i64``)."""
    msg = api_pb2.FieldValue(name=name)
    if isinstance(value, frozenset):
        msg.set.elements.extend(sorted(value))
    elif isinstance(value, tuple):
        msg.desired.SetInParent()  # no value (after a clear) is still a desired field
        msg.desired.values.extend(value_message(name, v) for v in value)
    elif isinstance(value, bool):
        msg.flag = value
    elif isinstance(value, int):
        msg.i64 = value
    elif isinstance(value, float):
        msg.f64 = value
    elif isinstance(value, str):
        msg.text = value
    else:
        msg.blob = value
    return msg


WriterName = Callable[[int], str]


def _no_name(writer: int) -> str:
    return ""


def field_message(
    store: Store, twin: str, name: str, value: object, writer_name: WriterName = _no_name
) -> api_pb2.FieldValue:
    """One field as the API sends it (registers and each desired value carry their stamp and writer, and
    the writer's node id when known)."""
    entry = store.entry(twin, name)
    if entry is not None:
        msg = value_message(name, entry[0])
        msg.stamp, msg.writer, msg.writer_node = entry[1], entry[2], writer_name(entry[2])
        return msg
    msg = api_pb2.FieldValue(name=name)
    intents = store.desired(twin, name) if isinstance(value, tuple) else None
    if intents is not None:
        msg.desired.SetInParent()
        for value_now, stamp, writer, _ in intents:
            one = msg.desired.values.add()
            one.CopyFrom(value_message(name, value_now))
            one.stamp, one.writer, one.writer_node = stamp, writer, writer_name(writer)
        return msg
    if isinstance(value, frozenset):
        msg.set.elements.extend(sorted(value))
    elif isinstance(value, int):
        msg.counter = value
    return msg


def twin_message(
    store: Store, twin: str, only: Sequence[str] = (), writer_name: WriterName = _no_name
) -> api_pb2.Twin:
    fields = store.fields(twin)
    names = [n for n in only if n in fields] if only else sorted(fields)
    return api_pb2.Twin(
        twin_id=twin,
        fields=[field_message(store, twin, n, fields[n], writer_name) for n in names],
        version=store.context_digest(twin) or 0,
    )


def change_message(name: str, before: FieldValue | None, after: FieldValue) -> api_pb2.FieldChange:
    msg = api_pb2.FieldChange(name=name, after=value_message(name, after))
    if before is not None:
        msg.before.CopyFrom(value_message(name, before))
    return msg


def snapshot_message(info: SnapshotInfo) -> api_pb2.SnapshotInfo:
    return api_pb2.SnapshotInfo(
        id=info.id,
        twin_id=info.twin,
        created_ms=info.created_ms,
        reason=info.reason,
        actor=info.actor,
        sha256=info.checksum,
        size=info.size,
    )


def audit_message(rec: AuditRecord) -> api_pb2.AuditRecord:
    return api_pb2.AuditRecord(
        seq=rec.seq,
        ts_ms=rec.ts_ms,
        actor=rec.actor,
        action=rec.action,
        twin_id=rec.twin,
        changes=sorted(
            [
                *(change_message(n, c.old if c.old_known else None, c.new) for n, c in rec.changes.items()),
                # A reading: named, neither before nor after (its value is in the field's history).
                *(api_pb2.FieldChange(name=n) for n in rec.readings),
            ],
            key=lambda c: c.name,
        ),
        reason=rec.reason,
        via=rec.via,
        ref=rec.ref or "",
        hash=rec.hash,
    )


def peer_message(peer: PeerState) -> api_pb2.PeerStatus:
    out = api_pb2.PeerStatus(
        name=peer.name, address=peer.address, up=peer.up, lag_s=peer.lag_s, digest_equal=peer.digest_equal
    )
    for name in ("clock_offset_s", "round_trip_s", "digest_equal_age_s", "digest_checked_age_s"):
        value = getattr(peer, name)
        if value is not None:
            setattr(out, name, value)
    return out


def status_message(status: NodeStatus) -> api_pb2.StatusReply:
    reply = api_pb2.StatusReply(
        node_id=status.node_id,
        replica_id=status.replica_id,
        version=status.version,
        twins=status.twins,
        fields=status.fields,
        hlc=status.hlc,
        wal_records=status.wal_records,
        uptime_s=status.uptime_s,
        scopes=list(status.scopes),
        state_digest=status.state_digest,
        peers=[peer_message(p) for p in status.peers],
    )
    if status.clock_offset_s is not None:
        reply.clock_offset_s = status.clock_offset_s
    for key, value in status.ingest.items():
        setattr(reply, key, value)
    reply.recovery_unaccepted = status.recovery_unaccepted
    reply.not_ready_reason = status.not_ready_reason
    reply.adapters.extend(api_pb2.AdapterIngest(name=name, **counts) for name, counts in status.adapters)
    return reply


def history_message(data: SeriesData) -> api_pb2.HistoryReply:
    reply = api_pb2.HistoryReply(resolution=data.resolution)
    reply.ts_ms.extend(data.ts.tolist())
    reply.values.extend(data.value.tolist())
    if data.resolution != "raw":
        reply.min.extend(data.min.tolist())
        reply.max.extend(data.max.tolist())
        reply.count.extend(data.count.tolist())
    return reply


def letter_message(letter: Letter) -> api_pb2.DeadLetter:
    return api_pb2.DeadLetter(
        id=letter.id,
        adapter=letter.adapter,
        source=letter.source,
        received_ms=letter.received_ms,
        reason=letter.reason,
        detail=letter.detail,
        size=letter.size,
        truncated=letter.truncated,
        preview=letter.preview,
    )


def listing_message(listing: LetterListing) -> api_pb2.ListDeadLettersReply:
    return api_pb2.ListDeadLettersReply(
        letters=[letter_message(lt) for lt in listing.letters],
        total=listing.total,
        held=listing.held,
        held_bytes=listing.held_bytes,
    )


def outcome_message(outcome: ReplayOutcome) -> api_pb2.ReplayOutcome:
    return api_pb2.ReplayOutcome(
        id=outcome.id, applied=outcome.applied, readings=outcome.readings, error=outcome.error
    )
