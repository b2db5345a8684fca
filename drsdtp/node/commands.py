"""The CLI's node-backed commands: ``run`` serves a node; the client commands read one over its API."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import grpc

from drsdtp.client import connect, field_to_python
from drsdtp.config import NodeConfig
from drsdtp.console import Console
from drsdtp.errors import ConfigError
from drsdtp.history.values import to_json
from drsdtp.lifecycle import run_services
from drsdtp.node_commands import (
    EXIT_FAILURE,
    EXIT_OK,
    PID_FILE,
    ApiTarget,
    AuditQuery,
    DeadLetterSelection,
    DeadLettersQuery,
    DemoOptions,
    ExportRequest,
    GetQuery,
    HistoryQuery,
    InsightQuery,
    RecoverRequest,
    Reloads,
    RollbackRequest,
    SnapshotRequest,
    TwinsQuery,
)
from drsdtp.sdnotify import SystemdNotifier
from drsdtp.wire.v1 import api_pb2


def _ms(seconds: float | None, default: int) -> int:
    return default if seconds is None else int(seconds * 1000)


class NodeCommands:
    """Implements :class:`drsdtp.node_commands.Commands`."""

    async def run(
        self, config: NodeConfig, stop: asyncio.Event, console: Console, reloads: Reloads | None = None
    ) -> int:
        from drsdtp.node.node import Node  # the daemon's imports stay out of client commands
        from drsdtp.node.reload import PidFile, ReloadService

        node = Node(config)
        services = node.services()
        if reloads is not None:
            services.append(ReloadService(node, reloads))
        with PidFile(config.data_dir / PID_FILE):
            await run_services(
                services,
                stop=stop,
                shutdown_timeout=config.shutdown_timeout_s,
                notifier=SystemdNotifier.from_env(),
            )
        return EXIT_OK

    async def demo(self, options: DemoOptions, stop: asyncio.Event, console: Console) -> int:
        from drsdtp.node.cluster_demo import run_demo

        return await run_demo(options, stop, console)

    async def _call(
        self,
        target: ApiTarget,
        console: Console,
        method: str,
        request: Any,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        channel, stub = connect(target.address, target.tls, target.server_name)
        try:
            return await getattr(stub, method)(request, timeout=timeout_s or target.timeout_s)
        except grpc.aio.AioRpcError as exc:
            where = f"{target.address.host}:{target.address.port}"
            console.error(f"{method} on {where}: {exc.code().name}: {exc.details()}")
            return None
        finally:
            await channel.close()

    async def status(self, target: ApiTarget, console: Console) -> int:
        s = await self._call(target, console, "Status", api_pb2.StatusRequest())
        if s is None:
            return EXIT_FAILURE
        offset = f"{s.clock_offset_s * 1000:+.1f} ms" if s.HasField("clock_offset_s") else "unknown"
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
            "ready": "yes" if not s.not_ready_reason else f"no: {s.not_ready_reason}",
        }
        if console.json_mode:
            console.json({**info, "peers": [{"name": p.name, "up": p.up, "lag_s": p.lag_s} for p in s.peers]})
            return EXIT_OK
        console.fields(info.items())
        if s.peers:
            console.table(
                ["peer", "address", "up", "lag s"],
                [(p.name, p.address, "yes" if p.up else "no", round(p.lag_s, 3)) for p in s.peers],
            )
        return EXIT_OK

    async def twins(self, target: ApiTarget, query: TwinsQuery, console: Console) -> int:
        req = api_pb2.ListTwinsRequest(
            model=query.model or "", scope=query.scope or "", prefix=query.prefix or "", limit=query.limit
        )
        r = await self._call(target, console, "ListTwins", req)
        if r is None:
            return EXIT_FAILURE
        rows = [(t.twin_id, t.model, t.scope, t.fields, _age(t.updated_ms)) for t in r.twins]
        if console.json_mode:
            console.json(
                [dict(zip(("twin", "model", "scope", "fields", "age"), row, strict=True)) for row in rows]
            )
        else:
            console.table(
                ["twin", "model", "scope", "fields", "updated"], rows, title=f"{len(rows)} of {r.total} twins"
            )
        return EXIT_OK

    async def get(self, target: ApiTarget, query: GetQuery, console: Console) -> int:
        t = await self._call(
            target,
            console,
            "GetTwin",
            api_pb2.GetTwinRequest(twin_id=query.twin_id, fields=list(query.fields)),
        )
        if t is None:
            return EXIT_FAILURE
        rows = [(f.name, field_to_python(f), _age(f.stamp >> 16) if f.stamp else "") for f in t.fields]
        if console.json_mode:
            console.json({name: value for name, value, _ in rows})
        else:
            console.table(["field", "value", "updated"], rows, title=t.twin_id)
        return EXIT_OK

    async def history(self, target: ApiTarget, query: HistoryQuery, console: Console) -> int:
        now = int(time.time() * 1000)
        req = api_pb2.HistoryRequest(
            twin_id=query.twin_id,
            field=query.field,
            start_ms=_ms(query.since, now - 3_600_000),
            end_ms=_ms(query.until, now),
            limit=query.limit,
        )
        h = await self._call(target, console, "ReadHistory", req)
        if h is None:
            return EXIT_FAILURE
        rows = list(zip(h.ts_ms, h.values, strict=True))
        if console.json_mode:
            console.json({"resolution": h.resolution, "points": [{"ts_ms": t, "value": v} for t, v in rows]})
        else:
            console.table(
                ["time", "value"],
                [(_iso(t), v) for t, v in rows],
                title=f"{query.twin_id}.{query.field} ({h.resolution}, {len(rows)} points)",
            )
        return EXIT_OK

    async def export(self, target: ApiTarget, request: ExportRequest, console: Console) -> int:
        listing = await self._call(
            target, console, "ListTwins", api_pb2.ListTwinsRequest(prefix=request.prefix or "")
        )
        if listing is None:
            return EXIT_FAILURE
        out: TextIO = sys.stdout if request.output is None else request.output.open("w", newline="")
        try:
            writer = csv.writer(out) if request.format == "csv" else None
            if writer is not None:
                writer.writerow(["twin", "field", "value", "stamp_ms"])
            with console.progress("exporting", total=len(listing.twins)) as progress:
                for summary in listing.twins:
                    t = await self._call(
                        target, console, "GetTwin", api_pb2.GetTwinRequest(twin_id=summary.twin_id)
                    )
                    if t is None:
                        return EXIT_FAILURE
                    _write_twin(out, writer, t)
                    if request.history and not await self._export_history(target, console, out, writer, t):
                        return EXIT_FAILURE
                    progress.advance()
        finally:
            if out is not sys.stdout:
                out.close()
        return EXIT_OK

    async def _export_history(
        self, target: ApiTarget, console: Console, out: TextIO, writer: Any, t: api_pb2.Twin
    ) -> bool:
        """Every raw reading the node still holds of the twin's numeric fields (one history row each)."""
        numeric = [
            f.name for f in t.fields if f.WhichOneof("value") in ("f64", "i64") and not f.name.startswith("_")
        ]
        for field in numeric:
            req = api_pb2.HistoryRequest(
                twin_id=t.twin_id,
                field=field,
                start_ms=1,
                end_ms=int(time.time() * 1000) + 1,
                resolution="raw",
                limit=10_000_000,
            )
            h = await self._call(target, console, "ReadHistory", req)
            if h is None:
                return False
            if writer is None:
                points = [[ts, v] for ts, v in zip(h.ts_ms, h.values, strict=True)]
                out.write(json.dumps({"twin": t.twin_id, "field": field, "history": points}) + "\n")
            else:
                writer.writerows([t.twin_id, field, v, ts] for ts, v in zip(h.ts_ms, h.values, strict=True))
        return True

    async def insight(self, target: ApiTarget, query: InsightQuery, console: Console) -> int:
        params: dict[str, Any] = {"horizon_min": query.horizon_min}
        if query.scenario:
            params["scenario"] = query.scenario
        req = api_pb2.InsightRequest(twin_id=query.twin_id, kind=query.kind, params_json=json.dumps(params))
        reply = await self._call(target, console, "Insight", req)
        if reply is None:
            return EXIT_FAILURE
        doc = json.loads(reply.json)
        if query.kind == "health" and not console.json_mode:
            console.line(f"{doc.get('twin')}: {doc.get('status')} (quality {doc.get('quality')})")
            rows = [
                (f.get("field"), f.get("status"), f.get("quality"), ", ".join(f.get("reasons", [])))
                for f in doc.get("fields", [])
            ]
            console.table(["field", "status", "quality", "reasons"], rows)
        else:
            console.json(doc)
        return EXIT_OK

    async def snapshot(self, target: ApiTarget, request: SnapshotRequest, console: Console) -> int:
        req = api_pb2.TakeSnapshotRequest(twin_id=request.twin_id, reason=request.reason, actor=request.actor)
        info = await self._call(target, console, "TakeSnapshot", req)
        if info is None:
            return EXIT_FAILURE
        if console.json_mode:
            console.json(_snapshot_doc(info))
        else:
            console.line(
                f"snapshot {info.id} of {info.twin_id} taken (sha256 {info.sha256[:16]}..., {info.size} B)"
            )
        return EXIT_OK

    async def snapshots(self, target: ApiTarget, twin_id: str, console: Console) -> int:
        reply = await self._call(
            target, console, "ListSnapshots", api_pb2.ListSnapshotsRequest(twin_id=twin_id)
        )
        if reply is None:
            return EXIT_FAILURE
        if console.json_mode:
            console.json([_snapshot_doc(i) for i in reply.snapshots])
        else:
            rows = [(i.id, _iso(i.created_ms), i.actor, i.reason, i.size) for i in reply.snapshots]
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
        r = await self._call(target, console, "Rollback", req)
        if r is None:
            return EXIT_FAILURE
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
        r = await self._call(target, console, "ReadAudit", req)
        if r is None:
            return EXIT_FAILURE
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
                (a.seq, _iso(a.ts_ms), a.actor, a.action, a.twin_id, a.ref, len(a.changes), a.reason)
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
        r = await self._call(target, console, "ListDeadLetters", req)
        if r is None:
            return EXIT_FAILURE
        if console.json_mode:
            console.json([_letter_doc(lt) for lt in r.letters])
            return EXIT_OK
        rows = [
            (
                lt.id,
                _iso(lt.received_ms),
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
        # The node waits up to a minute for the replayed readings to be applied.
        r = await self._call(target, console, "ReplayDeadLetters", req, timeout_s=max(target.timeout_s, 90.0))
        if r is None:
            return EXIT_FAILURE
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
        r = await self._call(target, console, "PurgeDeadLetters", req)
        if r is None:
            return EXIT_FAILURE
        if console.json_mode:
            console.json({"purged": r.purged})
        else:
            console.line(f"{r.purged} dead letters purged")
        return EXIT_OK

    async def recover(self, target: ApiTarget, request: RecoverRequest, console: Console) -> int:
        if request.accept:
            req = api_pb2.AcceptRecoveryRequest(actor=request.actor, reason=request.reason)
            r = await self._call(target, console, "AcceptRecovery", req)
        else:
            r = await self._call(target, console, "GetRecovery", api_pb2.GetRecoveryRequest())
        if r is None:
            return EXIT_FAILURE
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

    def check_plugins(self, config: NodeConfig) -> Sequence[ConfigError]:
        problems: list[ConfigError] = []
        try:
            from drsdtp.adapters import build_adapter
        except ImportError:  # pragma: no cover - the adapters package ships with drsdtp
            return problems
        from drsdtp.kernels import default_registry
        from drsdtp.models import ModelCatalog

        for i, raw in enumerate(config.adapters):
            try:
                build_adapter(raw, f"adapters[{i}]")
            except ConfigError as exc:
                problems.append(exc)
        try:
            ModelCatalog.from_config(config, default_registry())
        except ConfigError as exc:
            problems.append(exc)
        return problems


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
    return to_json(frozenset(v) if isinstance(v, list) else v)  # type: ignore[arg-type]


def _age(ms: int) -> str:
    if not ms:
        return ""
    age = time.time() - ms / 1000
    return f"{age:.1f} s ago" if age < 120 else _iso(ms)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"
