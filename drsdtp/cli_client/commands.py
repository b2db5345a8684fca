"""The CLI's client commands (reads and admin calls), built on the SDK: :class:`ClientCommands`.

No daemon imports: ``drsdtp get`` loads the SDK, the generated stubs and the CLI's own modules only. A failed
call raises the SDK's error (a ``DrsdtpError``), which the CLI prints as ``error: ...`` with status 1.
"""

from __future__ import annotations

import base64
import csv
import json
import sys
import time
from typing import Any, TextIO

from drsdtp.cli_client.render import age, iso, render_document, render_forecast, show_field
from drsdtp.cli_client.session import open_client
from drsdtp.client import AsyncClient, PeerStatus, Twin
from drsdtp.client.types import field_to_python
from drsdtp.console import Console
from drsdtp.node_commands import (
    EXIT_FAILURE,
    EXIT_OK,
    ApiTarget,
    AuditQuery,
    DeadLetterSelection,
    DeadLettersQuery,
    ExportRequest,
    GetQuery,
    HistoryQuery,
    InsightQuery,
    RecoverRequest,
    RollbackRequest,
    SnapshotRequest,
    TwinsQuery,
)
from drsdtp.wire.v1 import api_pb2

__all__ = ["ClientCommands"]


def _ms(seconds: float | None, default: int) -> int:
    return default if seconds is None else int(seconds * 1000)


class ClientCommands:
    """The client half of :class:`drsdtp.node_commands.Commands`."""

    async def status(self, target: ApiTarget, console: Console) -> int:
        async with open_client(target) as client:
            s = await client.status()
        offset = f"{s.clock_offset_s * 1000:+.1f} ms" if s.clock_offset_s is not None else "unknown"
        info = {
            "node": s.node_id,
            "version": s.version,
            "uptime": f"{s.uptime_s:.0f} s",
            "twins": s.twins,
            "fields": s.fields,
            "scopes": ",".join(s.scopes),
            "clock offset": offset,
            "wal records": s.wal_records,
            "received": s.received,
            "invalid": s.invalid,
            "dropped": s.dropped,
            "late": s.late,
            "state digest": f"{s.state_digest:016x}",
            "ready": "yes" if s.ready else f"no: {s.not_ready_reason}",
        }
        if console.json_mode:
            peers = [
                {
                    "name": p.name,
                    "up": p.up,
                    "lag_s": p.lag_s,
                    "clock_offset_s": p.clock_offset_s,
                    "digest_equal": p.digest_equal,
                    "digest_equal_age_s": p.digest_equal_age_s,
                }
                for p in s.peers
            ]
            console.json({**info, "peers": peers})
            return EXIT_OK
        console.fields(info.items())
        if s.peers:
            console.table(
                ["peer", "address", "up", "lag s", "clock offset ms", "digest"],
                [
                    (
                        p.name,
                        p.address,
                        "yes" if p.up else "no",
                        round(p.lag_s, 3),
                        "?" if p.clock_offset_s is None else round(p.clock_offset_s * 1000, 1),
                        _digest(p),
                    )
                    for p in s.peers
                ],
            )
        return EXIT_OK

    async def twins(self, target: ApiTarget, query: TwinsQuery, console: Console) -> int:
        async with open_client(target) as client:
            listing = await client.list_twins(
                model=query.model or "", scope=query.scope or "", prefix=query.prefix or "", limit=query.limit
            )
        rows = [(t.twin_id, t.model, t.scope, t.fields, age(t.updated_ms)) for t in listing.twins]
        if console.json_mode:
            console.json(
                [dict(zip(("twin", "model", "scope", "fields", "age"), row, strict=True)) for row in rows]
            )
        else:
            console.table(
                ["twin", "model", "scope", "fields", "updated"],
                rows,
                title=f"{len(rows)} of {listing.total} twins",
            )
        return EXIT_OK

    async def get(self, target: ApiTarget, query: GetQuery, console: Console) -> int:
        async with open_client(target) as client:
            t = await client.get(query.twin_id, query.fields)
        if console.json_mode:
            console.json({name: _json_value(f.value) for name, f in t.fields.items()})
            return EXIT_OK
        rows = [(f.name, show_field(f), age(f.time_ms)) for f in t.fields.values()]
        console.table(["field", "value", "updated"], rows, title=f"{t.twin_id} (version {t.version})")
        for name, values in t.conflicts.items():
            console.line(
                f"conflict: {name} has {len(values)} concurrent desired values; "
                f"`drsdtp desire {t.twin_id} {name}=VALUE` resolves it"
            )
        return EXIT_OK

    async def history(self, target: ApiTarget, query: HistoryQuery, console: Console) -> int:
        now = int(time.time() * 1000)
        async with open_client(target) as client:
            h = await client.history(
                query.twin_id,
                query.field,
                since_ms=_ms(query.since, now - 3_600_000),
                until_ms=_ms(query.until, now),
                limit=query.limit,
            )
        rows = list(zip(h.ts_ms, h.values, strict=True))
        if console.json_mode:
            console.json({"resolution": h.resolution, "points": [{"ts_ms": t, "value": v} for t, v in rows]})
        else:
            console.table(
                ["time", "value"],
                [(iso(t), v) for t, v in rows],
                title=f"{query.twin_id}.{query.field} ({h.resolution}, {len(rows)} points)",
            )
        return EXIT_OK

    async def export(self, target: ApiTarget, request: ExportRequest, console: Console) -> int:
        async with open_client(target) as client:
            listing = await client.call("ListTwins", api_pb2.ListTwinsRequest(prefix=request.prefix or ""))
            out: TextIO = sys.stdout if request.output is None else request.output.open("w", newline="")
            try:
                writer = csv.writer(out) if request.format == "csv" else None
                if writer is not None:
                    writer.writerow(["twin", "field", "value", "stamp_ms"])
                with console.progress("exporting", total=len(listing.twins)) as progress:
                    for summary in listing.twins:
                        t = await client.call("GetTwin", api_pb2.GetTwinRequest(twin_id=summary.twin_id))
                        _write_twin(out, writer, t)
                        if request.history:
                            await _export_history(client, out, writer, t)
                        progress.advance()
            finally:
                if out is not sys.stdout:
                    out.close()
        return EXIT_OK

    async def insight(self, target: ApiTarget, query: InsightQuery, console: Console) -> int:
        params: dict[str, Any] = {"horizon_min": query.horizon_min}
        if query.scenario:
            params["scenario"] = query.scenario
        async with open_client(target) as client:
            insight = await client.insight(query.twin_id, query.kind, **params)
        doc = insight.document
        if console.json_mode:
            console.json(doc)
        elif query.kind == "health":
            console.line(f"{doc.get('twin')}: {doc.get('status')} (quality {doc.get('quality')})")
            rows = [
                (f.get("field"), f.get("status"), f.get("quality"), ", ".join(f.get("reasons", [])))
                for f in doc.get("fields", [])
            ]
            console.table(["field", "status", "quality", "reasons"], rows)
        elif query.kind == "forecast":
            render_forecast(doc, console)
        else:
            console.line(f"{query.twin_id}: {query.kind}")
            render_document(doc, console, "  ")
        return EXIT_OK

    async def snapshot(self, target: ApiTarget, request: SnapshotRequest, console: Console) -> int:
        req = api_pb2.TakeSnapshotRequest(twin_id=request.twin_id, reason=request.reason, actor=request.actor)
        async with open_client(target) as client:
            info = await client.call("TakeSnapshot", req)
        if console.json_mode:
            console.json(_snapshot_doc(info))
        else:
            console.line(
                f"snapshot {info.id} of {info.twin_id} taken (sha256 {info.sha256[:16]}..., {info.size} B)"
            )
        return EXIT_OK

    async def snapshots(self, target: ApiTarget, twin_id: str, console: Console) -> int:
        async with open_client(target) as client:
            reply = await client.call("ListSnapshots", api_pb2.ListSnapshotsRequest(twin_id=twin_id))
        if console.json_mode:
            console.json([_snapshot_doc(i) for i in reply.snapshots])
        else:
            rows = [(i.id, iso(i.created_ms), i.actor, i.reason, i.size) for i in reply.snapshots]
            console.table(
                ["snapshot", "taken", "by", "reason", "bytes"],
                rows,
                title=f"{twin_id}: {len(rows)} snapshots",
            )
        return EXIT_OK

    async def rollback(self, target: ApiTarget, request: RollbackRequest, console: Console) -> int:
        req = api_pb2.RollbackRequest(
            twin_id=request.twin_id,
            snapshot_id=request.snapshot_id,
            reason=request.reason,
            actor=request.actor,
        )
        async with open_client(target) as client:
            r = await client.call("Rollback", req)
        changes = [
            (c.name, _value(c.before) if c.HasField("before") else None, _value(c.after)) for c in r.changed
        ]
        safety = r.safety_snapshot.id if r.HasField("safety_snapshot") else None
        if console.json_mode:
            console.json(
                {
                    "twin": request.twin_id,
                    "snapshot": r.snapshot.id,
                    "safety_snapshot": safety,
                    "changed": {name: {"before": old, "after": new} for name, old, new in changes},
                    "extra_fields": list(r.extra_fields),
                    "skipped": dict(r.skipped),
                }
            )
            return EXIT_OK
        console.line(f"{request.twin_id} rolled back to {r.snapshot.id}: {len(changes)} fields changed")
        if changes:
            console.table(["field", "before", "after"], changes)
        for name, why in sorted(r.skipped.items()):
            console.line(f"not restored: {name}: {why}")
        if r.extra_fields:
            console.line(f"left as they are (not in the snapshot): {', '.join(r.extra_fields)}")
        if safety:
            console.line(f"undo with: drsdtp rollback {request.twin_id} {safety} --reason ...")
        return EXIT_OK

    async def audit(self, target: ApiTarget, query: AuditQuery, console: Console) -> int:
        req = api_pb2.AuditRequest(
            twin_id=query.twin_id or "",
            start_ms=_ms(query.since, 0),
            end_ms=_ms(query.until, 0),
            actor=query.actor or "",
            limit=query.limit,
        )
        async with open_client(target) as client:
            r = await client.call("ReadAudit", req)
        if console.json_mode:
            records = [
                {
                    "seq": a.seq,
                    "ts_ms": a.ts_ms,
                    "actor": a.actor,
                    "action": a.action,
                    "twin": a.twin_id,
                    "reason": a.reason,
                    "via": a.via,
                    "ref": a.ref,
                    "changes": {
                        c.name: {
                            "before": _value(c.before) if c.HasField("before") else None,
                            "after": _value(c.after),
                        }
                        for c in a.changes
                    },
                    "hash": a.hash,
                }
                for a in r.records
            ]
            console.json({"chain_ok": r.chain_ok, "problems": list(r.chain_problems), "records": records})
        else:
            rows = [
                (a.seq, iso(a.ts_ms), a.actor, a.action, a.twin_id, a.ref, len(a.changes), a.reason)
                for a in r.records
            ]
            title = f"{len(rows)} of {r.total} records"
            console.table(
                ["seq", "time", "actor", "action", "twin", "snapshot", "fields", "reason"], rows, title=title
            )
            console.line("hash chain: intact" if r.chain_ok else "hash chain: BROKEN")
            for problem in r.chain_problems:
                console.line(f"  {problem}")
        return EXIT_OK if r.chain_ok else EXIT_FAILURE

    async def deadletters(self, target: ApiTarget, query: DeadLettersQuery, console: Console) -> int:
        req = api_pb2.ListDeadLettersRequest(adapter=query.adapter or "", limit=query.limit)
        async with open_client(target) as client:
            r = await client.call("ListDeadLetters", req)
        if console.json_mode:
            console.json([_letter_doc(lt) for lt in r.letters])
            return EXIT_OK
        rows = [
            (
                lt.id,
                iso(lt.received_ms),
                lt.adapter,
                lt.source,
                lt.reason,
                f"{lt.size} B" + (" (truncated)" if lt.truncated else ""),
                _preview(lt.preview),
            )
            for lt in r.letters
        ]
        title = f"{len(rows)} of {r.total} dead letters ({r.held} held, {r.held_bytes} B)"
        console.table(["id", "received", "adapter", "source", "reason", "size", "payload"], rows, title=title)
        for lt in r.letters:
            if lt.detail:
                console.line(f"  {lt.id}: {lt.reason}: {lt.detail}")
        return EXIT_OK

    async def replay_deadletters(
        self, target: ApiTarget, selection: DeadLetterSelection, console: Console
    ) -> int:
        req = api_pb2.ReplayDeadLettersRequest(select=_selection(selection))
        async with open_client(target) as client:
            # The node waits up to a minute for the replayed readings to be applied.
            r = await client.call("ReplayDeadLetters", req, timeout=max(target.timeout_s, 90.0))
        failed = [o for o in r.outcomes if not o.applied]
        if console.json_mode:
            console.json(
                [
                    {"id": o.id, "applied": o.applied, "readings": o.readings, "error": o.error}
                    for o in r.outcomes
                ]
            )
        else:
            rows = [
                (o.id, f"applied ({o.readings} readings)" if o.applied else f"kept: {o.error}")
                for o in r.outcomes
            ]
            console.table(
                ["id", "result"], rows, title=f"{len(r.outcomes) - len(failed)} of {len(r.outcomes)} replayed"
            )
        return EXIT_OK if not failed else EXIT_FAILURE

    async def purge_deadletters(
        self, target: ApiTarget, selection: DeadLetterSelection, console: Console
    ) -> int:
        req = api_pb2.PurgeDeadLettersRequest(select=_selection(selection))
        async with open_client(target) as client:
            r = await client.call("PurgeDeadLetters", req)
        if console.json_mode:
            console.json({"purged": r.purged})
        else:
            console.line(f"{r.purged} dead letters purged")
        return EXIT_OK

    async def recover(self, target: ApiTarget, request: RecoverRequest, console: Console) -> int:
        async with open_client(target) as client:
            if request.accept:
                req = api_pb2.AcceptRecoveryRequest(actor=request.actor, reason=request.reason)
                r = await client.call("AcceptRecovery", req)
            else:
                r = await client.call("GetRecovery", api_pb2.GetRecoveryRequest())
        if console.json_mode:
            console.json(_recovery_doc(r))
            return EXIT_OK
        console.fields(
            [
                ("ready", "yes" if r.ready else f"no: {r.not_ready_reason}"),
                ("this start", f"{r.records} records replayed after snapshot {r.snapshot_seq} "
                 f"in {r.recovery_s:.3f} s, torn tail cut: {r.truncated_bytes} B"),
            ]
        )  # fmt: skip
        for e in r.events:
            state = f"accepted by {e.accepted_by}: {e.accept_reason}" if e.accepted else "NOT ACKNOWLEDGED"
            console.line()
            console.line(
                f"{e.id} ({state}): {'loss suspected' if e.loss_suspected else 'no loss'}, "
                f"{e.records_skipped} records skipped, {e.records_after_damage} recovered after the damage, "
                f"{e.bytes_quarantined} B quarantined in {e.quarantine_dir}"
            )
            if e.problem:
                console.line(f"  report unreadable: {e.problem}")
            for d in e.damage:
                lost = f", {d.records_missing} records lost" if d.records_missing else ""
                console.line(f"  {d.file} at byte {d.offset} ({d.length} B): {d.what}{lost}")
            for snap in e.snapshots_rejected:
                console.line(f"  snapshot {snap.file}: {snap.what} ({snap.chunks_damaged} chunks damaged)")
        if request.accept:
            console.line()
            console.line(f"acknowledged: {', '.join(r.accepted) or 'nothing was pending'}")
        return EXIT_OK


async def _export_history(client: AsyncClient, out: TextIO, writer: Any, t: api_pb2.Twin) -> None:
    """Every raw reading the node still holds of the twin's numeric fields (one history row each)."""
    numeric = [
        f.name for f in t.fields if f.WhichOneof("value") in ("f64", "i64") and not f.name.startswith("_")
    ]
    for field in numeric:
        h = await client.history(
            t.twin_id,
            field,
            since_ms=1,
            until_ms=int(time.time() * 1000) + 1,
            resolution="raw",
            limit=10_000_000,
        )
        points = list(zip(h.ts_ms, h.values, strict=True))
        if writer is None:
            out.write(
                json.dumps({"twin": t.twin_id, "field": field, "history": [list(p) for p in points]}) + "\n"
            )
        else:
            writer.writerows([t.twin_id, field, v, ts] for ts, v in points)


def twin_doc(t: Twin) -> dict[str, Any]:
    """A twin as JSON: its id, version and each field's value (bytes as hex, sets and desired as lists)."""
    return {
        "twin": t.twin_id,
        "version": t.version,
        "fields": {name: _json_value(f.value) for name, f in t.fields.items()},
    }


def _json_value(value: object) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


def _write_twin(out: TextIO, writer: Any, t: api_pb2.Twin) -> None:
    if writer is None:
        doc = {"twin": t.twin_id, "fields": {f.name: _value(f) for f in t.fields}}
        out.write(json.dumps(doc) + "\n")
        return
    for f in t.fields:
        writer.writerow([t.twin_id, f.name, field_to_python(f), f.stamp >> 16 if f.stamp else ""])


def _selection(selection: DeadLetterSelection) -> api_pb2.DeadLetterSelection:
    return api_pb2.DeadLetterSelection(
        ids=list(selection.ids), all=selection.all, adapter=selection.adapter or ""
    )


def _preview(data: bytes, width: int = 40) -> str:
    """A payload's first bytes, printable: text as text, anything else escaped."""
    text = data[:width].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text + ("..." if len(data) > width else "")


def _letter_doc(lt: api_pb2.DeadLetter) -> dict[str, Any]:
    return {
        "id": lt.id,
        "adapter": lt.adapter,
        "source": lt.source,
        "received_ms": lt.received_ms,
        "reason": lt.reason,
        "detail": lt.detail,
        "size": lt.size,
        "truncated": lt.truncated,
        "preview": lt.preview.decode("utf-8", "backslashreplace"),
    }


def _recovery_doc(r: api_pb2.RecoveryReply) -> dict[str, Any]:
    return {
        "ready": r.ready,
        "not_ready_reason": r.not_ready_reason,
        "this_start": {
            "records": r.records,
            "truncated_bytes": r.truncated_bytes,
            "recovery_s": r.recovery_s,
            "snapshot_seq": r.snapshot_seq,
        },
        "events": [
            {
                "id": e.id,
                "when_ms": e.when_ms,
                "quarantine_dir": e.quarantine_dir,
                "loss_suspected": e.loss_suspected,
                "records_recovered": e.records_recovered,
                "records_skipped": e.records_skipped,
                "records_after_damage": e.records_after_damage,
                "bytes_quarantined": e.bytes_quarantined,
                "damage": [
                    {"file": d.file, "offset": d.offset, "length": d.length, "what": d.what,
                     "records_missing": d.records_missing, "loss": d.loss, "copy": d.copy}
                    for d in e.damage
                ],
                "snapshots_rejected": [
                    {"file": s.file, "bytes": s.bytes, "what": s.what, "chunks_damaged": s.chunks_damaged,
                     "copy": s.copy}
                    for s in e.snapshots_rejected
                ],
                "accepted": e.accepted,
                "accepted_by": e.accepted_by,
                "accepted_ms": e.accepted_ms,
                "accept_reason": e.accept_reason,
                "problem": e.problem,
            }
            for e in r.events
        ],
        "accepted": list(r.accepted),
    }  # fmt: skip


def _snapshot_doc(info: api_pb2.SnapshotInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "twin": info.twin_id,
        "created_ms": info.created_ms,
        "reason": info.reason,
        "actor": info.actor,
        "sha256": info.sha256,
        "size": info.size,
    }


def _value(f: api_pb2.FieldValue) -> Any:
    """A field as JSON, the way the audit trail and snapshots write values (bytes and sets tagged)."""
    v = field_to_python(f)
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode()}
    if isinstance(v, list):
        return {"$set": sorted(v)}
    if isinstance(v, tuple):
        return {"$desired": [_value_json(x) for x in v]}
    return v


def _value_json(v: object) -> Any:
    return {"$bytes": base64.b64encode(v).decode()} if isinstance(v, bytes) else v


def _digest(peer: PeerStatus) -> str:
    """A peer's state digest against the node's: equal, or how long since it was."""
    if peer.digest_checked_age_s is None:
        return "not compared"
    if peer.digest_equal:
        return "equal"
    age_s = peer.digest_equal_age_s
    return "differs" + ("" if age_s is None else f" (equal {age_s:.0f} s ago)")
