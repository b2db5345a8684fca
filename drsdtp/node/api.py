"""The application API (``proto/drsdtp/wire/v1/api.proto``) served over gRPC on ``listen.api``, and a small
client for the CLI and applications.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import grpc
import grpc.aio

from drsdtp._core import Store
from drsdtp.config import Address, LimitsConfig, TlsConfig
from drsdtp.errors import DrsdtpError
from drsdtp.gossip.scopes import scope_of
from drsdtp.gossip.tls import NodeCertificates, ca_credentials, channel_credentials
from drsdtp.history.snapshots import SnapshotInfo
from drsdtp.history.values import FieldValue
from drsdtp.node.api_guard import ApiGuard, status_for
from drsdtp.node.deadletters import DeadLetterService
from drsdtp.node.feed import ChangeFeed
from drsdtp.node.snapshots import SnapshotService
from drsdtp.node.watch import WatchService
from drsdtp.node.watch_limits import WatchGate, WatchLimits
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

MODEL_FIELD = "_model"
KEEPALIVE_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000


class NodeView(Protocol):
    """What the API reads from the node."""

    @property
    def store(self) -> Store: ...
    @property
    def feed(self) -> ChangeFeed: ...
    def status(self) -> api_pb2.StatusReply: ...
    async def read_history(self, request: api_pb2.HistoryRequest) -> api_pb2.HistoryReply: ...
    def insight(self, twin_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...
    @property
    def snapshots(self) -> SnapshotService: ...
    @property
    def dead_letter_service(self) -> DeadLetterService: ...


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


def field_message(store: Store, twin: str, name: str, value: object) -> api_pb2.FieldValue:
    """One field as the API sends it (registers and each desired value carry their stamp and writer)."""
    entry = store.entry(twin, name)
    if entry is not None:
        msg = value_message(name, entry[0])
        msg.stamp, msg.writer = entry[1], entry[2]
        return msg
    msg = api_pb2.FieldValue(name=name)
    intents = store.desired(twin, name) if isinstance(value, tuple) else None
    if intents is not None:
        msg.desired.SetInParent()
        for value_now, stamp, writer, _ in intents:
            one = msg.desired.values.add()
            one.CopyFrom(value_message(name, value_now))
            one.stamp, one.writer = stamp, writer
        return msg
    if isinstance(value, frozenset):
        msg.set.elements.extend(sorted(value))
    elif isinstance(value, int):
        msg.counter = value
    return msg


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


def twin_message(store: Store, twin: str, only: Sequence[str] = ()) -> api_pb2.Twin:
    fields = store.fields(twin)
    names = [n for n in only if n in fields] if only else sorted(fields)
    return api_pb2.Twin(twin_id=twin, fields=[field_message(store, twin, n, fields[n]) for n in names])


def field_to_python(f: api_pb2.FieldValue) -> object:
    """The Python value of an API field."""
    kind = f.WhichOneof("value")
    if kind is None:
        return None
    if kind == "set":
        return sorted(f.set.elements)
    if kind == "desired":
        return tuple(field_to_python(v) for v in f.desired.values)
    return getattr(f, kind)


class TwinApiService(api_pb2_grpc.TwinApiServicer):
    def __init__(self, node: NodeView, watches: WatchService) -> None:
        self.node = node
        self.watches = watches

    async def Status(
        self, request: api_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.StatusReply:
        return self.node.status()

    async def ListTwins(
        self, request: api_pb2.ListTwinsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ListTwinsReply:
        store = self.node.store
        out = api_pb2.ListTwinsReply()
        for twin in store.twins():
            if twin.startswith("_") or (request.prefix and not twin.startswith(request.prefix)):
                continue
            model = str(store.get(twin, MODEL_FIELD) or "")
            scope = scope_of(store, twin)
            if (request.model and model != request.model) or (request.scope and scope != request.scope):
                continue
            out.total += 1
            if request.limit and len(out.twins) >= request.limit:
                continue
            fields = store.fields(twin)
            stamps = [e[1] for n in fields if (e := store.entry(twin, n)) is not None]
            out.twins.append(
                api_pb2.TwinSummary(
                    twin_id=twin,
                    model=model,
                    scope=scope,
                    fields=len(fields),
                    updated_ms=(max(stamps) >> 16) if stamps else 0,
                )
            )
        return out

    async def GetTwin(
        self, request: api_pb2.GetTwinRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.Twin:
        if request.twin_id not in self.node.store:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no twin {request.twin_id!r} on this node")
        return twin_message(self.node.store, request.twin_id, list(request.fields))

    async def ReadHistory(
        self, request: api_pb2.HistoryRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.HistoryReply:
        try:
            return await self.node.read_history(request)
        except DrsdtpError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

    async def Watch(  # type: ignore[override]  # gRPC also serves a coroutine that writes itself
        self, request: api_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self.watches.serve(request, context)  # each write with a deadline: see drsdtp.node.watch

    async def Insight(
        self, request: api_pb2.InsightRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.InsightReply:
        try:
            params = json.loads(request.params_json) if request.params_json else {}
            if not isinstance(params, dict):
                raise ValueError("params_json must hold a JSON object")
            doc = self.node.insight(request.twin_id, request.kind, params)
        except (ValueError, DrsdtpError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        return api_pb2.InsightReply(json=json.dumps(doc))

    async def TakeSnapshot(
        self, request: api_pb2.TakeSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.SnapshotInfo:
        if not request.reason.strip():  # the audit trail records why
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a snapshot needs a reason")
        try:
            info = await self.node.snapshots.take(request.twin_id, request.reason, _actor(request.actor))
        except DrsdtpError as exc:
            await _abort_for(context, exc)
            raise
        return snapshot_message(info)

    async def ListSnapshots(
        self, request: api_pb2.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ListSnapshotsReply:
        infos = await self.node.snapshots.listing(request.twin_id)
        return api_pb2.ListSnapshotsReply(snapshots=[snapshot_message(i) for i in infos])

    async def Rollback(
        self, request: api_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.RollbackReply:
        if not request.reason.strip():  # the audit trail records why
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a rollback needs a reason")
        try:
            result = await self.node.snapshots.rollback(
                request.twin_id, request.snapshot_id, _actor(request.actor), request.reason
            )
        except DrsdtpError as exc:
            await _abort_for(context, exc)
            raise
        reply = api_pb2.RollbackReply(
            snapshot=snapshot_message(result.snapshot),
            changed=[change_message(n, old, new) for n, (old, new) in sorted(result.changed.items())],
            extra_fields=list(result.extra_fields),
            skipped=result.skipped,
        )
        if result.safety_snapshot is not None:
            reply.safety_snapshot.CopyFrom(snapshot_message(result.safety_snapshot))
        return reply

    async def ReadAudit(
        self, request: api_pb2.AuditRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.AuditReply:
        try:
            records, verification = await self.node.snapshots.read_audit(
                request.twin_id or None,
                request.start_ms or None,
                request.end_ms or None,
                request.actor or None,
            )
        except DrsdtpError as exc:
            await _abort_for(context, exc)
            raise
        limit = request.limit or 100
        reply = api_pb2.AuditReply(
            total=len(records), chain_ok=verification.ok, chain_problems=verification.problems
        )
        for rec in records[-limit:]:
            reply.records.append(
                api_pb2.AuditRecord(
                    seq=rec.seq,
                    ts_ms=rec.ts_ms,
                    actor=rec.actor,
                    action=rec.action,
                    twin_id=rec.twin,
                    changes=[
                        change_message(n, c.old if c.old_known else None, c.new)
                        for n, c in sorted(rec.changes.items())
                    ],
                    reason=rec.reason,
                    via=rec.via,
                    ref=rec.ref or "",
                    hash=rec.hash,
                )
            )
        return reply

    # Dead letters: the logic is in drsdtp.node.deadletters.
    async def ListDeadLetters(
        self, request: api_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ListDeadLettersReply:
        return self.node.dead_letter_service.listing(request)

    async def ReplayDeadLetters(
        self, request: api_pb2.ReplayDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ReplayDeadLettersReply:
        return await self.node.dead_letter_service.replay(request)

    async def PurgeDeadLetters(
        self, request: api_pb2.PurgeDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.PurgeDeadLettersReply:
        return await self.node.dead_letter_service.purge(request)


def _actor(stated: str) -> str:
    return stated or "anonymous"


async def _abort_for(context: grpc.aio.ServicerContext, exc: DrsdtpError) -> None:
    await context.abort(status_for(exc), str(exc))


class ApiServer:
    """The gRPC server of the application API; an async context manager."""

    name = "api"

    def __init__(
        self, node: NodeView, address: Address, limits: LimitsConfig, tls: TlsConfig | None = None
    ) -> None:
        self.node = node
        self.address = address
        self.tls = tls if tls is not None and tls.api != "off" else None
        self.port = 0
        mutual = self.tls is not None and self.tls.api == "mutual"
        self.requests = ApiGuard(
            max_requests=limits.api_max_requests,
            max_reply_bytes=limits.max_message_bytes,
            allowed_names=self.tls.allowed_names if self.tls is not None and mutual else (),
        )
        self.watchers = WatchGate(WatchLimits.from_config(limits))
        self._server = grpc.aio.server(
            interceptors=[self.requests],
            # A backstop below the guard's own caps (whose refusals say which limit): gRPC refuses calls
            # beyond this before any Python runs.
            maximum_concurrent_rpcs=limits.api_max_watchers + limits.api_max_requests + 32,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # A client that stops answering pings (a frozen process) loses its connection, and with it
                # any stream still waiting for it to read.
                ("grpc.keepalive_time_ms", KEEPALIVE_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ],
        )
        watches = WatchService(node.store, node.feed, self.watchers, twin_message)
        api_pb2_grpc.add_TwinApiServicer_to_server(TwinApiService(node, watches), self._server)

    async def __aenter__(self) -> ApiServer:
        target = f"{self.address.host}:{self.address.port}"
        if self.tls is None:
            self.port = self._server.add_insecure_port(target)
        else:
            certificates = NodeCertificates(self.tls)
            creds = certificates.server_credentials(require_client_auth=self.tls.api == "mutual")
            self.port = self._server.add_secure_port(target, creds)
        if self.port == 0:
            raise DrsdtpError(f"cannot listen on {self.address.host}:{self.address.port} for the API")
        await self._server.start()
        mode = "plaintext" if self.tls is None else f"TLS ({self.tls.api})"
        log.info("application API on %s:%d, %s", self.address.host, self.port, mode)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.stop(grace=1.0)


def connect(
    address: Address, tls: TlsConfig | None = None, server_name: str | None = None
) -> tuple[grpc.aio.Channel, api_pb2_grpc.TwinApiStub]:
    """A client channel and stub for a node's API: TLS when ``tls.api`` is on, verifying the node's
    certificate against the CA under ``server_name`` (its node id); with "mutual", presenting ``tls``'s
    certificate (with "server" only the CA is read, so a client needs no access to the node's key)."""
    target = f"{address.host}:{address.port}"
    if tls is None or tls.api == "off":
        channel = grpc.aio.insecure_channel(target)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        creds = channel_credentials(tls) if tls.api == "mutual" else ca_credentials(tls)
        channel = grpc.aio.secure_channel(target, creds, options=options)
    return channel, api_pb2_grpc.TwinApiStub(channel)
