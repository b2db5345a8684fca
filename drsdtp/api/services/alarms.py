"""Rules and alarms over the API: ListAlarms, AcknowledgeAlarm, ListRules, and the stream WatchAlarms.

WatchAlarms sends the matching alarms, then every change of an alarm record (raised here or by a peer,
acknowledged, cleared) as the node's change feed announces it; it is admitted by the same gate as Watch
(``limits.api_max_watchers``) and ends with RESOURCE_EXHAUSTED when a write is not taken within
``limits.api_watch_stall_s``.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from drsdtp.alarms.record import AlarmRecord
from drsdtp.api.caller import current_caller
from drsdtp.api.node import NodeApi
from drsdtp.api.visibility import in_scope
from drsdtp.api.watch_limits import WatchGate, admit_stream
from drsdtp.errors import InvalidValueError
from drsdtp.wire.v1 import api_pb2

__all__ = ["AlarmService", "AlarmStreams", "alarm_message"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
FEED_BATCH = 4096


def alarm_message(record: AlarmRecord) -> api_pb2.Alarm:
    msg = api_pb2.Alarm(
        id=record.id,
        rule=record.rule,
        twin_id=record.twin,
        severity=record.severity,
        message=record.message,
        state=str(record.state),
        count=record.count,
        first_ms=record.first_ms,
        raised_ms=record.raised_ms,
        last_ms=record.last_ms,
        raised_by=record.raised_by,
    )
    if record.acked is not None:
        msg.acked_by, msg.acked_ms, msg.ack_reason = record.acked.who, record.acked.ms, record.acked.reason
    if record.cleared is not None:
        msg.cleared_by, msg.cleared_ms = record.cleared.who, record.cleared.ms
    return msg


class AlarmService:
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    async def list_alarms(self, request: api_pb2.ListAlarmsRequest) -> api_pb2.ListAlarmsReply:
        if request.limit > MAX_LIMIT:
            raise InvalidValueError(f"ListAlarms: limit {request.limit} is above {MAX_LIMIT}")
        records, total = self.node.alerting.alarms(
            active=request.active,
            twin=request.twin_id,
            rule=request.rule,
            limit=request.limit or DEFAULT_LIMIT,
            where=in_scope(),
        )
        return api_pb2.ListAlarmsReply(alarms=[alarm_message(r) for r in records], total=total)

    async def acknowledge_alarm(self, request: api_pb2.AcknowledgeAlarmRequest) -> api_pb2.Alarm:
        if not request.alarm_id:
            raise InvalidValueError("AcknowledgeAlarm: alarm_id is empty (drsdtp alarms lists the ids)")
        record = await self.node.alerting.acknowledge(
            request.alarm_id, current_caller().actor(request.actor), request.reason
        )
        return alarm_message(record)

    async def list_rules(self, request: api_pb2.ListRulesRequest) -> api_pb2.ListRulesReply:
        summary = self.node.alerting.rules()
        return api_pb2.ListRulesReply(
            rules=[
                api_pb2.RuleInfo(
                    name=r.name,
                    twins=list(r.twins),
                    when=r.when,
                    for_s=r.for_s,
                    clear_when=r.clear_when,
                    deadband=r.deadband,
                    severity=r.severity,
                    alarm=r.alarm,
                    enabled=r.enabled,
                    actions=list(r.actions),
                    matched=r.matched,
                    active=r.active,
                    fired=r.fired,
                    cleared=r.cleared,
                    errors=r.errors,
                    last_error=r.last_error,
                    suspended_until_ms=r.suspended_until_ms,
                )
                for r in summary.rules
            ],
            passes=summary.passes,
            last_pass_s=summary.last_pass_s,
            period_s=summary.period_s,
        )


class AlarmStreams:
    """Serves WatchAlarms."""

    def __init__(self, node: NodeApi, gate: WatchGate) -> None:
        self.node, self.gate = node, gate

    async def serve(self, request: api_pb2.WatchAlarmsRequest, context: grpc.aio.ServicerContext) -> None:
        await admit_stream(self.gate, context)
        alerting = self.node.alerting
        stream = self.node.feed.subscribe()  # before the listing: a change in between is not missed
        within = in_scope()  # a scoped caller is sent its twins' alarms only

        def wanted(record: AlarmRecord) -> bool:
            return (
                (not request.twin_id or record.twin == request.twin_id)
                and (not request.rule or record.rule == request.rule)
                and (within is None or within(record.twin))
            )

        initial, _ = alerting.alarms(
            active=request.active, twin=request.twin_id, rule=request.rule, limit=MAX_LIMIT, where=within
        )
        for record in reversed(initial):  # oldest first, as changes come
            if not await self._send(context, record):
                return
        while True:
            batch = await stream.next_batch(FEED_BATCH)
            seen: dict[str, None] = {}
            for change in batch:
                alarm = alerting.is_alarm_twin(change.twin)
                if alarm is not None:
                    seen[alarm] = None
            for alarm in seen:
                changed = alerting.alarm(alarm)
                if changed is not None and wanted(changed) and not await self._send(context, changed):
                    return

    async def _send(self, context: grpc.aio.ServicerContext, record: AlarmRecord) -> bool:
        try:
            async with asyncio.timeout(self.gate.limits.stall_s):
                await context.write(alarm_message(record))
        except TimeoutError:
            self.gate.cut_off += 1
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(
                "WatchAlarms cut off: a write was not taken within limits.api_watch_stall_s "
                f"({self.gate.limits.stall_s:g} s); ListAlarms gives the current state"
            )
            return False
        return True
