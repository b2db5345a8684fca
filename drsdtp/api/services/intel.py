"""The intelligence methods beyond Insight: ListAnomalies, WatchAnomalies (a stream), Health, and the
relations between twins: Relate, Query.

WatchAnomalies holds one message in flight and a cursor in the node's anomaly log (nothing is queued per
stream); it is admitted by the same gate as Watch (``limits.api_max_watchers``) and ends with
RESOURCE_EXHAUSTED when a write is not taken within ``limits.api_watch_stall_s``, naming the last sequence
number sent so the client can resume with ``after_seq``.
"""

from __future__ import annotations

import asyncio
import json
import math

import grpc
import grpc.aio

from drsdtp.api.node import NodeApi
from drsdtp.api.visibility import TwinFilter, in_scope
from drsdtp.api.watch_limits import WatchGate, admit_stream
from drsdtp.errors import InvalidValueError
from drsdtp.intelligence.anomalies import AnomalyRecord
from drsdtp.intelligence.serialize import to_jsonable
from drsdtp.relations.edges import Edge
from drsdtp.relations.query import QuerySpec, parse_condition
from drsdtp.wire.v1 import api_pb2

__all__ = ["AnomalyStreams", "IntelService", "anomaly_message"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
STREAM_BATCH = 256


def anomaly_message(record: AnomalyRecord, within: TwinFilter | None = None) -> api_pb2.AnomalyRecord:
    """``within``: the caller's scopes; a related twin outside them is left out."""
    e = record.event
    msg = api_pb2.AnomalyRecord(
        seq=record.seq,
        twin_id=e.twin,
        field=e.field,
        model=record.model,
        kind=e.kind,
        severity=e.severity.name,
        t_s=e.t_s,
        detail=e.detail,
        test=e.test,
        logged_ms=record.logged_ms,
        related=[t for t in record.related if within is None or within(t)],
        cause=record.cause,
        evidence=list(record.evidence),
    )
    for name in ("value", "magnitude", "score"):
        v = getattr(e, name)
        if v is not None and math.isfinite(v):
            setattr(msg, name, v)
    return msg


class IntelService:
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    async def list_anomalies(self, request: api_pb2.ListAnomaliesRequest) -> api_pb2.ListAnomaliesReply:
        if request.limit > MAX_LIMIT:
            raise InvalidValueError(f"ListAnomalies: limit {request.limit} is above {MAX_LIMIT}")
        log = self.node.anomalies
        limit = request.limit or DEFAULT_LIMIT
        twins = [request.twin_id] if request.twin_id else None
        within = in_scope()  # a scoped caller's twins only, in the listing and the count
        records = (
            log.after(request.after_seq, twins, limit, within)
            if request.after_seq
            else log.latest(twins, limit, within)
        )
        return api_pb2.ListAnomaliesReply(
            anomalies=[anomaly_message(r, within) for r in records],
            held=log.count(twins, within),
            per_twin=log.per_twin,
            max_events=log.max_events,
        )

    async def health(self, request: api_pb2.HealthRequest) -> api_pb2.HealthReply:
        if len(request.twin_ids) > MAX_LIMIT:
            raise InvalidValueError(f"Health: at most {MAX_LIMIT} twin ids at once")
        views = self.node.health_view(list(request.twin_ids), request.model)
        within = in_scope()
        if within is not None:
            views = [v for v in views if within(v.twin)]
        out = api_pb2.HealthReply(t_s=max((v.t_s for v in views), default=0.0))
        for v in views:
            out.twins.append(
                api_pb2.TwinHealthSummary(
                    twin_id=v.twin,
                    model=v.model,
                    status=v.status.name,
                    quality=v.quality,
                    fields=[
                        api_pb2.FieldHealthSummary(
                            field=f.field,
                            status=f.status.name,
                            quality=f.quality,
                            reasons=list(f.reasons),
                            cause=f.cause,
                            evidence=list(f.evidence),
                            cause_detail=f.cause_detail,
                        )
                        for f in v.fields
                        if f.status.name != "HEALTHY"
                    ],
                )
            )
        return out

    async def relate(self, request: api_pb2.RelateRequest) -> api_pb2.RelateReply:
        if len(request.add) + len(request.remove) > MAX_LIMIT:
            raise InvalidValueError(f"Relate: at most {MAX_LIMIT} edges at once")
        changed = await self.node.relations.relate(
            [Edge(e.twin_id, e.relation, e.target) for e in request.add],
            [Edge(e.twin_id, e.relation, e.target) for e in request.remove],
        )
        return api_pb2.RelateReply(changed=changed)

    async def query(self, request: api_pb2.QueryRequest) -> api_pb2.QueryReply:
        if len(request.where) > 64:
            raise InvalidValueError("Query: at most 64 where conditions")
        spec = QuerySpec(
            under=request.under,
            above=request.above,
            related=request.related,
            relation=request.relation,
            where=tuple(parse_condition(w) for w in request.where),
            health=tuple(h.upper() for h in request.health),
            limit=request.limit or 1000,
            within=in_scope(),
        )
        hits, total = self.node.relations.query(spec)
        shown = spec.within or (lambda _: True)  # an edge to a twin outside the scopes is not shown
        return api_pb2.QueryReply(
            total=total,
            twins=[
                api_pb2.QueryHit(
                    twin_id=h.twin,
                    model=h.model,
                    health=h.health,
                    values_json=json.dumps(to_jsonable(h.values)) if h.values else "",
                    edges=[
                        api_pb2.RelationEdge(twin_id=e.twin, relation=e.relation, target=e.target)
                        for e in h.edges
                        if shown(e.target)
                    ],
                )
                for h in hits
            ],
        )


class AnomalyStreams:
    """Serves WatchAnomalies."""

    def __init__(self, node: NodeApi, gate: WatchGate) -> None:
        self.node, self.gate = node, gate

    async def serve(self, request: api_pb2.WatchAnomaliesRequest, context: grpc.aio.ServicerContext) -> None:
        await admit_stream(self.gate, context)
        log = self.node.anomalies
        twins = [request.twin_id] if request.twin_id else None
        within = in_scope()  # a scoped caller is sent its twins' anomalies only
        cursor = request.after_seq if request.HasField("after_seq") else log.next_seq - 1
        while True:
            batch = log.after(cursor, twins, STREAM_BATCH, within)
            if not batch:
                newest = log.next_seq - 1
                if newest > cursor and (twins is not None or within is not None):
                    cursor = newest  # newer events, none this stream sends
                    continue
                await log.wait_after(cursor)
                continue
            for record in batch:
                try:
                    async with asyncio.timeout(self.gate.limits.stall_s):
                        await context.write(anomaly_message(record, within))
                except TimeoutError:
                    self.gate.cut_off += 1
                    context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                    context.set_details(
                        f"WatchAnomalies cut off: a write was not taken within limits.api_watch_stall_s "
                        f"({self.gate.limits.stall_s:g} s); resume with after_seq={cursor}"
                    )
                    return
                cursor = record.seq
