"""The operator's methods: snapshots, rollback, the audit trail, dead letters, write-ahead log recovery."""

from __future__ import annotations

import asyncio

from drsdtp.api import convert
from drsdtp.api.caller import current_caller
from drsdtp.api.node import NodeApi, Selection
from drsdtp.api.recovery import recovery_reply
from drsdtp.api.visibility import in_scope
from drsdtp.errors import InvalidValueError
from drsdtp.wire.v1 import api_pb2

__all__ = ["AdminService"]

DEFAULT_LIMIT = 100


def _actor(stated: str) -> str:
    return current_caller().actor(stated)  # an authenticated identity wins over what the caller states


def _reason(reason: str, what: str) -> None:
    if not reason.strip():  # the audit trail records why
        raise InvalidValueError(f"{what} needs a reason")


def _selection(select: api_pb2.DeadLetterSelection) -> Selection:
    return Selection(ids=tuple(select.ids), all=select.all, adapter=select.adapter)


class AdminService:
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    async def take_snapshot(self, request: api_pb2.TakeSnapshotRequest) -> api_pb2.SnapshotInfo:
        _reason(request.reason, "a snapshot")
        info = await self.node.snapshots.take(request.twin_id, request.reason, _actor(request.actor))
        return convert.snapshot_message(info)

    async def list_snapshots(self, request: api_pb2.ListSnapshotsRequest) -> api_pb2.ListSnapshotsReply:
        infos = await self.node.snapshots.listing(request.twin_id)
        return api_pb2.ListSnapshotsReply(snapshots=[convert.snapshot_message(i) for i in infos])

    async def rollback(self, request: api_pb2.RollbackRequest) -> api_pb2.RollbackReply:
        _reason(request.reason, "a rollback")
        result = await self.node.snapshots.rollback(
            request.twin_id, request.snapshot_id, _actor(request.actor), request.reason
        )
        reply = api_pb2.RollbackReply(
            snapshot=convert.snapshot_message(result.snapshot),
            changed=[convert.change_message(n, old, new) for n, (old, new) in sorted(result.changed.items())],
            extra_fields=list(result.extra_fields),
            skipped=result.skipped,
        )
        if result.safety_snapshot is not None:
            reply.safety_snapshot.CopyFrom(convert.snapshot_message(result.safety_snapshot))
        return reply

    async def read_audit(self, request: api_pb2.AuditRequest) -> api_pb2.AuditReply:
        records, verification = await self.node.snapshots.read_audit(
            request.twin_id or None,
            request.start_ms or None,
            request.end_ms or None,
            request.actor or None,
        )
        within = in_scope()  # a scoped caller reads its twins' records only (not the node's own)
        if within is not None:
            records = [r for r in records if r.twin and within(r.twin)]
        limit = request.limit or DEFAULT_LIMIT
        return api_pb2.AuditReply(
            records=[convert.audit_message(rec) for rec in records[-limit:]],
            total=len(records),
            chain_ok=verification.ok,
            chain_problems=verification.problems,
        )

    async def list_dead_letters(
        self, request: api_pb2.ListDeadLettersRequest
    ) -> api_pb2.ListDeadLettersReply:
        listing = self.node.dead_letter_service.listing(request.adapter, request.limit or DEFAULT_LIMIT)
        return convert.listing_message(listing)

    async def replay_dead_letters(
        self, request: api_pb2.ReplayDeadLettersRequest
    ) -> api_pb2.ReplayDeadLettersReply:
        outcomes = await self.node.dead_letter_service.replay(_selection(request.select))
        return api_pb2.ReplayDeadLettersReply(outcomes=[convert.outcome_message(o) for o in outcomes])

    async def purge_dead_letters(
        self, request: api_pb2.PurgeDeadLettersRequest
    ) -> api_pb2.PurgeDeadLettersReply:
        purged = await self.node.dead_letter_service.purge(_selection(request.select))
        return api_pb2.PurgeDeadLettersReply(purged=purged)

    async def get_recovery(self, request: api_pb2.GetRecoveryRequest) -> api_pb2.RecoveryReply:
        ledger = self.node.recovery
        await asyncio.to_thread(ledger.refresh)
        return recovery_reply(ledger)

    async def accept_recovery(self, request: api_pb2.AcceptRecoveryRequest) -> api_pb2.RecoveryReply:
        _reason(request.reason, "accepting a recovery")
        done = await self.node.accept_recovery(_actor(request.actor), request.reason)
        return recovery_reply(self.node.recovery, done)
