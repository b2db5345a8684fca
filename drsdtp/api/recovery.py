"""The API's view of write-ahead log recovery: :class:`RecoveryLedger` entries as ``RecoveryReply``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from drsdtp.recovery import QuarantineEntry, RecoveryLedger
from drsdtp.wire.v1 import api_pb2

__all__ = ["event_message", "recovery_reply"]


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def event_message(entry: QuarantineEntry) -> api_pb2.RecoveryEvent:
    r = entry.report
    event = api_pb2.RecoveryEvent(
        id=entry.id,
        when_ms=_int(r, "when_ms"),
        quarantine_dir=str(entry.path),
        loss_suspected=entry.loss_suspected,
        records_recovered=_int(r, "records_recovered"),
        records_skipped=_int(r, "records_skipped"),
        records_after_damage=_int(r, "records_after_damage"),
        bytes_quarantined=_int(r, "bytes_quarantined"),
        accepted=entry.accepted is not None,
        problem=_str(r, "unreadable"),
    )
    for d in r.get("damage", ()):
        if isinstance(d, dict):
            event.damage.append(
                api_pb2.RecoveryDamage(
                    file=_str(d, "file"),
                    offset=_int(d, "offset"),
                    length=_int(d, "length"),
                    what=_str(d, "what"),
                    records_missing=_int(d, "records_missing"),
                    loss=bool(d.get("loss")),
                    copy=_str(d, "copy"),
                )
            )
    for s in r.get("snapshots_rejected", ()):
        if isinstance(s, dict):
            event.snapshots_rejected.append(
                api_pb2.RejectedSnapshot(
                    file=_str(s, "file"),
                    bytes=_int(s, "bytes"),
                    what=_str(s, "what"),
                    chunks_damaged=_int(s, "chunks_damaged"),
                    copy=_str(s, "copy"),
                )
            )
    if entry.accepted is not None:
        event.accepted_by = _str(entry.accepted, "actor")
        event.accepted_ms = _int(entry.accepted, "ts_ms")
        event.accept_reason = _str(entry.accepted, "reason")
    return event


def recovery_reply(ledger: RecoveryLedger, accepted: Iterable[QuarantineEntry] = ()) -> api_pb2.RecoveryReply:
    reason = ledger.not_ready_reason()
    report = ledger.report
    return api_pb2.RecoveryReply(
        ready=reason is None,
        not_ready_reason=reason or "",
        records=report.get("records", 0),
        truncated_bytes=report.get("truncated_bytes", 0),
        recovery_s=ledger.recovery_s,
        snapshot_seq=report.get("snapshot_seq", 0),
        events=[event_message(e) for e in ledger.entries],
        accepted=[e.id for e in accepted],
    )
