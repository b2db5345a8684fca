"""The Write method: decode, check whole, apply, commit once, remember the key, audit, acknowledge.

Order within one step of the event loop (nothing else runs in between): apply to the store, append the
joined delta to the write-ahead log, append the idempotency record. So no peer catch-up can read the write
before the log holds it, and no key is remembered for a write that was not applied. Then the reply waits
for the log's group commit and the key's fsync (together), is audited, and, for ``ACK_REPLICATED``, waits
for the peers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drsdtp import stages
from drsdtp._core import join
from drsdtp.api import write_bulk, write_small
from drsdtp.api.caller import current_caller
from drsdtp.api.errors import naming
from drsdtp.api.idempotency import MAX_KEY_BYTES, IdempotencyStore
from drsdtp.api.node import AuditEntry, NodeApi, Value
from drsdtp.api.write_bulk import BulkWrite
from drsdtp.api.write_columns import Columns, apply_columns, check_columns
from drsdtp.api.write_plan import Applied, Create, Numbers, Op, OpKind, TwinOps, apply, check
from drsdtp.errors import InvalidValueError, PreconditionError, ReplicationTimeoutError
from drsdtp.wire.v1 import api_pb2

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["WriteService"]

log = logging.getLogger(__name__)

DEFAULT_REPLICATE_MS = 5_000
MAX_REPLICATE_MS = 600_000
MAX_OPS = 10_000  # per request (the request's size, 64 KiB, bounds it first)
MAX_ROWS = 100_000
VALUE_KINDS = ("f64", "i64", "flag", "text", "blob")


def _value(msg: api_pb2.FieldValue, path: str) -> Value:
    kind = msg.WhichOneof("value")
    if kind not in VALUE_KINDS:
        shown = kind or "no value"
        raise naming(
            InvalidValueError(f"{path}: expected one of {', '.join(VALUE_KINDS)}, got {shown}"), path
        )
    value: Value = getattr(msg, kind)
    return value


def _op(msg: api_pb2.FieldOp, path: str) -> Op:
    kind = msg.WhichOneof("op")
    if kind is None:
        raise naming(InvalidValueError(f"{path}: no operation (report, desire, add ...)"), path)
    if kind in ("report", "desire"):
        return Op(msg.field, kind, _value(getattr(msg, kind), f"{path}.{kind}"), path)
    if kind == "clear_desired":
        if not msg.clear_desired:
            raise naming(InvalidValueError(f"{path}.clear_desired: false clears nothing"), path)
        return Op(msg.field, "clear_desired", None, path)
    if kind in ("add", "remove"):
        element = getattr(msg, kind)
        if not element:
            raise naming(InvalidValueError(f"{path}.{kind}: an empty element"), f"{path}.{kind}")
        op_kind: OpKind = "add" if kind == "add" else "remove"
        return Op(msg.field, op_kind, element, path)
    return Op(msg.field, "increment", int(msg.increment), path)


def _numbers(ops: Sequence[api_pb2.FieldOp]) -> Numbers | None:
    """The ops as :class:`Numbers` when every one reports an f64 (else None: decoded one by one)."""
    names: list[str] = []
    values: list[float] = []
    for op in ops:
        if op.WhichOneof("op") != "report":
            return None
        value = op.report
        if value.WhichOneof("value") != "f64":
            return None
        names.append(op.field)
        values.append(value.f64)
    return Numbers(names, values) if names else None


def decode_columns(msg: api_pb2.NumericColumns) -> Columns:
    if len(msg.values) > MAX_ROWS:
        raise naming(
            InvalidValueError(f"columns: more than {MAX_ROWS} rows in one request"), "columns.values"
        )
    source = np.array(msg.source_ms, np.int64) if msg.source_ms else np.zeros(len(msg.values), np.int64)
    return Columns(
        list(msg.twin_ids),
        list(msg.fields),
        np.array(msg.twin, np.uint32),
        np.array(msg.field, np.uint32),
        np.array(msg.values, np.float64),
        source,
    )


def decode(request: api_pb2.WriteRequest) -> list[TwinOps]:
    """The request as domain operations (each with its path in the request, for errors)."""
    if not request.twins and not request.columns.values:
        raise naming(InvalidValueError("twins: a write needs at least one twin"), "twins")
    if sum(len(t.ops) for t in request.twins) > MAX_OPS:
        raise naming(InvalidValueError(f"twins: more than {MAX_OPS} operations in one request"), "twins")
    out = []
    for i, tw in enumerate(request.twins):
        path = f"twins[{i}]"
        create = None
        if tw.HasField("create"):
            c = tw.create
            create = Create(c.model, c.scope, dict(c.metadata))
        numbers = _numbers(tw.ops)
        out.append(
            TwinOps(
                twin=tw.twin_id,
                ops=[] if numbers else [_op(op, f"{path}.ops[{j}]") for j, op in enumerate(tw.ops)],
                if_version=tw.if_version if tw.HasField("if_version") else None,
                create=create,
                delete=tw.delete,
                path=path,
                numbers=numbers,
            )
        )
    return out


class WriteService:
    def __init__(self, node: NodeApi, keys: IdempotencyStore, paths: Counter[str] | None = None) -> None:
        self.node = node
        self.keys = keys
        # Requests by the path that applied them: "small" (drsdtp.api.write_small), "bulk" (decoded
        # natively, drsdtp.api.write_bulk) or "general" (drsdtp.api.write_plan); refused ones count where
        # they were refused.
        self.paths: Counter[str] = Counter() if paths is None else paths

    async def write(self, request: api_pb2.WriteRequest | BulkWrite) -> api_pb2.WriteReply:
        if isinstance(request, BulkWrite):
            node = self.node
            key, digest = request.cols.idempotency_key, b""
            if key:  # checked before the plan: a repeat is answered, never applied again
                digest = self._digest(key, request.message())
                repeated = self._repeated(key, digest)
                if repeated is not None:
                    return await self._acknowledged(request, repeated)
            planned = write_bulk.plan(node.store, request, node.model, node.limits.max_name_bytes)
            stages.mark("planned")
            if planned is not None:
                self.paths["bulk"] += 1
                reply = await asyncio.shield(self._apply_bulk(request, planned, key, digest))
                return await self._acknowledged(request, reply)
            request = request.message()  # a check did not pass: the general path words the error
        else:
            node = self.node
            small = write_small.plan(node.store, request, node.model, node.limits.max_name_bytes)
            if small is not None:
                stages.mark("planned")
                got = await asyncio.shield(self._apply_small(request, small))
                if got is not None:
                    self.paths["small"] += 1
                    return await self._acknowledged(request, got)
        self.paths["general"] += 1
        key = request.idempotency_key
        digest = b""
        if key:
            digest = self._digest(key, request)
            repeated = self._repeated(key, digest)
            if repeated is not None:
                return await self._acknowledged(request, repeated)
        writes = decode(request)
        columns = decode_columns(request.columns)
        # Shielded: a caller that goes away does not stop a write half way (applied but not announced,
        # or not audited).
        reply = await asyncio.shield(self._apply(request, writes, columns, key, digest))
        return await self._acknowledged(request, reply)

    @staticmethod
    def _digest(key: str, request: api_pb2.WriteRequest) -> bytes:
        """What a key names: the digest of the request's deterministic encoding (on every path)."""
        if len(key.encode()) > MAX_KEY_BYTES:
            raise naming(
                InvalidValueError(f"idempotency_key: longer than {MAX_KEY_BYTES} bytes"), "idempotency_key"
            )
        return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()

    def _repeated(self, key: str, digest: bytes) -> api_pb2.WriteReply | None:
        """The reply a key already answered (marked repeated), None for a new key; a key used for a
        different request is refused by name."""
        seen = self.keys.get(key)
        if seen is None:
            return None
        if seen.digest != digest:
            raise naming(
                InvalidValueError(
                    "idempotency_key: already used for a different request (a key names one write)"
                ),
                "idempotency_key",
            )
        reply = api_pb2.WriteReply.FromString(seen.reply)
        reply.repeated = True
        self.keys.repeats += 1
        return reply

    async def _apply(
        self,
        request: api_pb2.WriteRequest,
        writes: list[TwinOps],
        columns: Columns,
        key: str,
        digest: bytes,
    ) -> api_pb2.WriteReply:
        node = self.node
        checker = check(node.store, writes, node.model, node.limits.max_name_bytes)
        check_columns(checker, columns)
        applied = Applied()
        failure: Exception | None = None
        try:
            apply(node.store, writes, node.twin_defaults, applied, checker)
            apply_columns(node.store, columns, applied)
            stages.mark("applied")
        except Exception as exc:  # the store refused what the check passed: commit what it took, then say so
            failure = exc
        if applied.deltas:
            # From the apply to the log append (inside commit's first step) nothing else runs, so no peer
            # catch-up can read the write before the log holds it.
            delta = applied.deltas[0][0] if len(applied.deltas) == 1 else join([d for d, _ in applied.deltas])
            twins = list(dict.fromkeys([*(t for _, t in applied.deltas), *applied.extra_twins]))
            flushed = None
            if key and failure is None:
                self.keys.remember(key, digest, _reply(applied).SerializeToString(), delta)
                flushed = asyncio.ensure_future(self.keys.flush())
            await node.commit(delta, twins, "local")
            if flushed is not None:
                await flushed
            await node.audit([self._audit_entry(request, twin, applied) for twin in applied.versions])
            stages.mark("audited")
        if failure is not None:
            raise failure
        return _reply(applied)

    async def _apply_bulk(
        self, request: BulkWrite, planned: write_bulk.Plan, key: str = "", digest: bytes = b""
    ) -> api_pb2.WriteReply:
        node = self.node
        applied = Applied()
        failure = write_bulk.apply(node.store, planned, applied)  # checked whole: the store takes it all
        if failure is not None:  # all or nothing: the store took none of it
            raise failure
        stages.mark("applied")
        # Applied and appended to the log in this one step of the loop (see _apply).
        if applied.deltas:
            flushed = None
            if key:  # the key is kept with the same durability as on the general path (see _apply)
                self.keys.remember(key, digest, _reply(applied).SerializeToString(), applied.deltas[0][0])
                flushed = asyncio.ensure_future(self.keys.flush())
            await node.commit(applied.deltas[0][0], applied.extra_twins, "local")
            if flushed is not None:
                await flushed
        if applied.record is not None:
            actor = current_caller().actor(request.actor)
            intents = [
                AuditEntry(twin, "write", changes, actor, request.reason)
                for twin, changes in applied.intents.items()
            ]
            await node.audit_request(actor, request.reason, applied.record, intents)
        else:
            await node.audit([self._audit_entry(request, twin, applied) for twin in applied.versions])
        stages.mark("audited")
        return _reply(applied)

    async def _apply_small(
        self, request: api_pb2.WriteRequest, small: write_small.Small
    ) -> api_pb2.WriteReply | None:
        """The small write applied, committed and audited; None (nothing applied) when a field holds
        something other than an f64 register (the general path decides)."""
        node = self.node
        applied = Applied()
        if not write_small.apply(node.store, small, applied):
            return None
        stages.mark("applied")
        # Applied and appended to the log in this one step of the loop (see _apply).
        await node.commit(applied.deltas[0][0], applied.extra_twins, "local")
        await node.audit([self._audit_entry(request, small.twin, applied)])
        stages.mark("audited")
        return _reply(applied)

    def _audit_entry(
        self, request: api_pb2.WriteRequest | BulkWrite, twin: str, applied: Applied
    ) -> AuditEntry:
        return AuditEntry(
            twin=twin,
            action=applied.actions.get(twin, "write"),
            changes=applied.changes.get(twin, {}),
            actor=current_caller().actor(request.actor),
            reason=request.reason,
        )

    async def _acknowledged(
        self, request: api_pb2.WriteRequest | BulkWrite, reply: api_pb2.WriteReply
    ) -> api_pb2.WriteReply:
        if request.ack != api_pb2.ACK_REPLICATED:
            return reply
        wanted = request.replicas or 1
        known = self.node.peer_count()
        if wanted > known:
            raise naming(
                PreconditionError(
                    f"replicas: {wanted} peers asked for, this node knows {known}; the write is durable here"
                ),
                "replicas",
            )
        timeout_ms = min(request.replicate_timeout_ms or DEFAULT_REPLICATE_MS, MAX_REPLICATE_MS)
        got = await self.node.wait_replicated(wanted, timeout_ms / 1000)
        reply.replicated = got
        if got < wanted:
            raise ReplicationTimeoutError(
                f"durable here, replicated to {got} of {wanted} peers within {timeout_ms} ms "
                "(the write stays applied and replicates on)"
            )
        return reply


def _reply(applied: Applied) -> api_pb2.WriteReply:
    return api_pb2.WriteReply(
        twins=[api_pb2.WrittenTwin(twin_id=t, version=v) for t, v in applied.versions.items()]
    )
