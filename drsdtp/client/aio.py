"""The asyncio client: :class:`AsyncClient`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from drsdtp.client import commands as c
from drsdtp.client import writes as w
from drsdtp.client.channel import Tls, metadata_for, open_channel
from drsdtp.client.coalesce import WriteCoalescer
from drsdtp.client.commands import Arg, Command, CommandOutcome, CommandSpec
from drsdtp.client.errors import from_rpc_error
from drsdtp.client.retry import NO_RETRY, RETRYABLE, RetryPolicy
from drsdtp.client.types import (
    Audit,
    HealthReport,
    History,
    Insight,
    RollbackResult,
    SnapshotInfo,
    Status,
    Twin,
    TwinList,
    TwinSummary,
    WriteResult,
)
from drsdtp.client.watch import MAX_CHANGES, StreamKey, Watch, WatchStream
from drsdtp.client.writes import Ack, Columns, Create, Op, Scalar, TwinWrite
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

__all__ = ["DEFAULT_TARGET", "AsyncClient"]

#: A node's API where the default config listens.
DEFAULT_TARGET: Final = "127.0.0.1:7401"

#: Methods that change nothing: retried after a failure to reach the node.
_READS: Final = frozenset(
    {
        "Status",
        "ListTwins",
        "GetTwin",
        "ReadHistory",
        "Insight",
        "Health",
        "ListSnapshots",
        "ReadAudit",
        "ListDeadLetters",
        "GetRecovery",
    }
)

M = TypeVar("M", bound=Message)


def _joinable(
    writes: Sequence[TwinWrite], columns: Columns | None, idempotency_key: str | None, ack: Ack
) -> bool:
    """A write the client may send joined with concurrent ones (see :mod:`drsdtp.client.coalesce`)."""
    return (
        columns is None
        and not idempotency_key
        and ack == "durable"
        and bool(writes)
        and all(tw.if_version is None and tw.create is None and not tw.delete for tw in writes)
    )


class AsyncClient:
    """A node's application API for asyncio code::

        async with AsyncClient("127.0.0.1:7401") as client:
            twin = await client.get("room-1")
            await client.report("room-1", {"temp_c": 21.5}, if_version=twin.version)

    Every call has a deadline (``timeout`` seconds, per call or the client's default) that also bounds its
    retries; reads, and writes that carry an idempotency key, are retried with jittered backoff while the
    node cannot be reached (``retry``). Failures raise :class:`~drsdtp.client.errors.ApiError` subclasses.
    ``token`` (default: ``$DRSDTP_TOKEN``) is sent as ``authorization: Bearer``; ``tls`` turns TLS on.
    ``actor`` names the caller in the node's audit trail (an authenticated identity wins over it).
    Plain writes made in one step of the event loop are sent joined as one request, and with
    ``coalesce_writes`` requests in flight (0: never join) further ones wait and join
    (:mod:`drsdtp.client.coalesce`): the node's work per request is paid once.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        actor: str = "",
        channel_options: Sequence[tuple[str, object]] = (),
        coalesce_writes: int = 4,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout: must be above 0, got {timeout}")
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.actor = actor
        self._metadata = metadata_for(token)
        self._channel = open_channel(target, tls, channel_options)
        self._stub = api_pb2_grpc.TwinApiStub(self._channel)
        self._watch_streams: dict[StreamKey, WatchStream] = {}  # streams that watches may still join
        # Write with a request already serialized (see writes.request_bytes).
        self._write_bytes = self._channel.unary_unary(
            "/drsdtp.wire.v1.TwinApi/Write", response_deserializer=api_pb2.WriteReply.FromString
        )
        # Concurrent plain writes joined into one request (0: never), at most `coalesce_writes` in flight.
        self._coalescer = (
            WriteCoalescer(self._send_write, in_flight=coalesce_writes) if coalesce_writes > 0 else None
        )

    async def _send_write(self, data: bytes, timeout: float) -> api_pb2.WriteReply:
        reply: api_pb2.WriteReply = await self.call("Write", data, timeout=timeout, retry=False)
        return reply

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel (open watches end)."""
        await self._channel.close()

    @property
    def stub(self) -> api_pb2_grpc.TwinApiStub:
        """The generated stub on this client's channel, for what the SDK does not wrap."""
        return self._stub

    @property
    def coalescer(self) -> WriteCoalescer | None:
        """What joins this client's concurrent writes (its ``requests`` and ``writes`` counts), or None."""
        return self._coalescer

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    # --- the one way every unary call is made --------------------------------------------------------------

    async def call(
        self,
        method: str,
        message: Message | bytes,
        *,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Any:
        """Calls ``method`` with a deadline, retrying when the call is idempotent (``retry``: default, for
        the read methods), and maps a failure to the SDK's error tree. Returns the reply message. A
        ``Write`` request may come serialized (bytes)."""
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        policy = self.retry if (method in _READS if retry is None else retry) else NO_RETRY
        delays = policy.delays()
        rpc = (
            self._write_bytes
            if isinstance(message, bytes) and method == "Write"
            else getattr(self._stub, method)
        )
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await rpc(message, timeout=max(remaining, 0.001), metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc, method, self.target)
                delay = next(delays, None) if exc.code() in RETRYABLE else None
                if delay is None or time.monotonic() + delay >= deadline:
                    raise error from None
            await asyncio.sleep(delay)

    # --- reads ---------------------------------------------------------------------------------------------

    async def status(self, *, timeout: float | None = None) -> Status:
        reply = await self.call("Status", api_pb2.StatusRequest(), timeout=timeout)
        return Status.from_pb(reply)

    async def list_twins(
        self,
        *,
        model: str = "",
        scope: str = "",
        prefix: str = "",
        limit: int = 0,
        timeout: float | None = None,
    ) -> TwinList:
        """Twins on the node (``limit`` 0: the node's default page), filtered by model, scope, id prefix."""
        req = api_pb2.ListTwinsRequest(model=model, scope=scope, prefix=prefix, limit=limit)
        reply = await self.call("ListTwins", req, timeout=timeout)
        twins = tuple(
            TwinSummary(t.twin_id, t.model, t.scope, t.fields, t.updated_ms, t.version) for t in reply.twins
        )
        return TwinList(twins, reply.total)

    async def get(self, twin_id: str, fields: Sequence[str] = (), *, timeout: float | None = None) -> Twin:
        """A twin's fields (only ``fields`` when given); :class:`NotFoundError` when there is no such twin."""
        req = api_pb2.GetTwinRequest(twin_id=twin_id, fields=list(fields))
        return Twin.from_pb(await self.call("GetTwin", req, timeout=timeout))

    async def history(
        self,
        twin_id: str,
        field: str,
        *,
        since_ms: int,
        until_ms: int | None = None,
        resolution: str = "auto",
        limit: int = 0,
        timeout: float | None = None,
    ) -> History:
        """A numeric field's history between two Unix-millisecond times (``until_ms`` None: now)."""
        req = api_pb2.HistoryRequest(
            twin_id=twin_id,
            field=field,
            start_ms=since_ms,
            end_ms=until_ms if until_ms is not None else int(time.time() * 1000),
            resolution=resolution,
            limit=limit,
        )
        return History.from_pb(await self.call("ReadHistory", req, timeout=timeout))

    async def insight(
        self, twin_id: str, kind: str = "health", *, timeout: float | None = None, **params: object
    ) -> Insight:
        """Twin intelligence: ``kind`` "health", "forecast", "whatif" (``scenario=...``), "recommendations"
        or "model"; ``params`` go to the node as JSON."""
        req = api_pb2.InsightRequest(twin_id=twin_id, kind=kind, params_json=json.dumps(params))
        reply = await self.call("Insight", req, timeout=timeout)
        return Insight.from_json(kind, reply.json)

    async def health(
        self, twin_ids: Sequence[str] = (), *, model: str = "", timeout: float | None = None
    ) -> HealthReport:
        """Health only (no forecasts) of ``twin_ids`` (empty: every twin the node judges, or of ``model``),
        with each unhealthy field's cause: sensor, process or model."""
        req = api_pb2.HealthRequest(twin_ids=list(twin_ids), model=model)
        return HealthReport.from_pb(await self.call("Health", req, timeout=timeout))

    # --- writes --------------------------------------------------------------------------------------------

    async def write(
        self,
        writes: Sequence[TwinWrite],
        *,
        columns: Columns | None = None,
        idempotency_key: str | None = None,
        ack: Ack = "durable",
        replicas: int = 0,
        replicate_timeout: float = 0.0,
        reason: str = "",
        timeout: float | None = None,
        retry: bool = False,
    ) -> WriteResult:
        """One request: every twin's writes (and ``columns``) validated whole, then applied in one durable
        commit, answered once ``ack`` is reached ("replicated": also made durable by ``replicas`` peers within
        ``replicate_timeout`` seconds). With an ``idempotency_key`` (see
        :func:`~drsdtp.client.writes.new_idempotency_key`) the write is retried while the node cannot be
        reached, and applied once however often it arrives; ``retry=True`` makes a fresh key for it."""
        if retry and not idempotency_key:
            idempotency_key = w.new_idempotency_key()
        twins, rest = w.request_parts(
            writes,
            columns=columns,
            idempotency_key=idempotency_key,
            ack=ack,
            replicas=replicas,
            replicate_timeout_s=replicate_timeout,
            actor=self.actor,
            reason=reason,
        )
        if self._coalescer is not None and _joinable(writes, columns, idempotency_key, ack):
            reply = await self._coalescer.write(twins, rest, self.timeout if timeout is None else timeout)
            names = {tw.twin_id for tw in writes}  # the reply of a joined request names others' twins too
            return WriteResult({t.twin_id: t.version for t in reply.twins if t.twin_id in names})
        if ack == "replicated" and timeout is None:  # the node waits for its peers within the call
            timeout = max(self.timeout, replicate_timeout + 2.0)
        reply = await self.call("Write", twins + rest, timeout=timeout, retry=bool(idempotency_key))
        return WriteResult.from_pb(reply)

    async def _one(
        self, twin_id: str, ops: Sequence[Op], if_version: int | None, options: Mapping[str, Any]
    ) -> int:
        result = await self.write([TwinWrite(twin_id, tuple(ops), if_version=if_version)], **options)
        return result.versions.get(twin_id, 0)

    async def report(
        self, twin_id: str, values: Mapping[str, Scalar], *, if_version: int | None = None, **options: Any
    ) -> int:
        """Reported values (manual readings, MES/ERP values); returns the twin's new version. ``options``:
        those of :meth:`write`."""
        return await self._one(twin_id, [w.report(k, v) for k, v in values.items()], if_version, options)

    async def desire(
        self, twin_id: str, values: Mapping[str, Scalar], *, if_version: int | None = None, **options: Any
    ) -> int:
        """Desired values for reported fields (kept in ``<field>.desired``); returns the new version."""
        return await self._one(twin_id, [w.desire(k, v) for k, v in values.items()], if_version, options)

    async def clear_desired(
        self, twin_id: str, *fields: str, if_version: int | None = None, **options: Any
    ) -> int:
        """Withdraws every desired value of ``fields`` (resolves a conflict by removing it)."""
        return await self._one(twin_id, [w.clear_desired(f) for f in fields], if_version, options)

    async def tag(
        self,
        twin_id: str,
        field: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        if_version: int | None = None,
        **options: Any,
    ) -> int:
        """Adds and removes elements of set field ``field``."""
        ops = [w.add(field, e) for e in add] + [w.remove(field, e) for e in remove]
        return await self._one(twin_id, ops, if_version, options)

    async def increment(self, twin_id: str, field: str, by: int = 1, **options: Any) -> int:
        """Adds ``by`` to counter field ``field`` (negative: subtracts)."""
        return await self._one(twin_id, [w.increment(field, by)], None, options)

    async def create(
        self,
        twin_id: str,
        *,
        model: str = "",
        scope: str = "",
        metadata: Mapping[str, str] | None = None,
        values: Mapping[str, Scalar] | None = None,
        **options: Any,
    ) -> int:
        """Creates a twin (:class:`ConflictError` if it exists), with reported ``values`` if given."""
        ops = tuple(w.report(k, v) for k, v in (values or {}).items())
        tw = TwinWrite(twin_id, ops, create=Create(model, scope, dict(metadata or {})))
        result = await self.write([tw], **options)
        return result.versions.get(twin_id, 0)

    async def delete(self, twin_id: str, *, if_version: int | None = None, **options: Any) -> int:
        """Deletes a twin (a replicated tombstone: it no longer lists or reads)."""
        result = await self.write([TwinWrite(twin_id, delete=True, if_version=if_version)], **options)
        return result.versions.get(twin_id, 0)

    # --- snapshots, rollback, audit --------------------------------------------------------------------

    async def snapshot(self, twin_id: str, reason: str, *, timeout: float | None = None) -> SnapshotInfo:
        """Takes a checksummed snapshot of a twin (``reason`` and this client's ``actor`` are recorded)."""
        req = api_pb2.TakeSnapshotRequest(twin_id=twin_id, reason=reason, actor=self.actor)
        return SnapshotInfo.from_pb(await self.call("TakeSnapshot", req, timeout=timeout))

    async def snapshots(self, twin_id: str, *, timeout: float | None = None) -> tuple[SnapshotInfo, ...]:
        """A twin's snapshots on the node, oldest first."""
        reply = await self.call(
            "ListSnapshots", api_pb2.ListSnapshotsRequest(twin_id=twin_id), timeout=timeout
        )
        return tuple(SnapshotInfo.from_pb(i) for i in reply.snapshots)

    async def rollback(
        self, twin_id: str, snapshot_id: str, reason: str, *, timeout: float | None = None
    ) -> RollbackResult:
        """Brings a twin back to a snapshot's values as new, replicated writes (a safety snapshot first)."""
        req = api_pb2.RollbackRequest(
            twin_id=twin_id, snapshot_id=snapshot_id, reason=reason, actor=self.actor
        )
        return RollbackResult.from_pb(await self.call("Rollback", req, timeout=timeout))

    async def audit(
        self,
        twin_id: str = "",
        *,
        since_ms: int = 0,
        until_ms: int = 0,
        actor: str = "",
        limit: int = 0,
        timeout: float | None = None,
    ) -> Audit:
        """The newest ``limit`` audit records (0: 100) matching, and the whole chain's verification."""
        req = api_pb2.AuditRequest(
            twin_id=twin_id, start_ms=since_ms, end_ms=until_ms, actor=actor, limit=limit
        )
        return Audit.from_pb(await self.call("ReadAudit", req, timeout=timeout))

    # --- commands (issue 12) ------------------------------------------------------------------------------

    def _wait_budget(self, wait: float, timeout: float | None) -> float | None:
        """A call that waits ``wait`` seconds on the node gets that long more than the client's timeout."""
        return max(self.timeout, wait + 2.0) if wait > 0 and timeout is None else timeout

    async def issue_command(
        self,
        twin_id: str,
        action: str,
        value: Arg | None = None,
        *,
        args: Sequence[Arg] = (),
        idempotency_key: str | None = None,
        deadline_s: float = 0.0,
        reason: str = "",
        wait: float = 0.0,
        timeout: float | None = None,
    ) -> Command:
        """Issues a command to an actuator; its record once durable on the node (with ``wait`` > 0: once
        it reached an outcome, or after ``wait`` seconds as it is). ``idempotency_key`` None makes a fresh
        one, so a retry after a lost reply is the same command (``""``: none, and no retry)."""
        spec = CommandSpec(twin_id, action, value, tuple(args), idempotency_key, deadline_s, reason)
        req = c.issue_request(spec, self.actor, wait)
        reply = await self.call(
            "IssueCommand", req, timeout=self._wait_budget(wait, timeout), retry=bool(req.idempotency_key)
        )
        return Command.from_pb(reply.command)

    async def issue_commands(
        self, commands: Sequence[CommandSpec], *, wait: float = 0.0, timeout: float | None = None
    ) -> tuple[CommandOutcome, ...]:
        """Many commands in one call (at most 512), each with its own key, deadline and checks, answered
        each on its own in their order: a refused one is an outcome with ``error_code``, the others are
        issued all the same. With ``wait`` > 0, answered once every command reached an outcome (or after
        ``wait`` seconds, each as it is). Retried while the node cannot be reached when every command has
        a key (the default: a fresh one each)."""
        req = c.batch_request(commands, self.actor, wait)
        retry = all(one.idempotency_key for one in req.commands)
        reply = await self.call("IssueCommands", req, timeout=self._wait_budget(wait, timeout), retry=retry)
        return tuple(CommandOutcome.from_pb(r) for r in reply.results)

    async def wait_commands(
        self, command_ids: Sequence[str], *, wait: float = 30.0, timeout: float | None = None
    ) -> tuple[CommandOutcome, ...]:
        """Follows many commands in one call: answers once each reached an outcome, or after ``wait``
        seconds with each as it is (a command the node does not hold is an outcome with ``NOT_FOUND``)."""
        req = api_pb2.CommandWaitBatch(command_ids=list(command_ids), timeout_s=wait)
        reply = await self.call("WaitCommands", req, timeout=self._wait_budget(wait, timeout), retry=True)
        return tuple(CommandOutcome.from_pb(r) for r in reply.results)

    async def follow_commands(
        self, command_ids: Sequence[str], *, wait: float = 30.0, timeout: float | None = None
    ) -> AsyncGenerator[tuple[int, CommandOutcome], None]:
        """:meth:`wait_commands` as a stream (``FollowCommands``): ``(index in command_ids, outcome)`` for
        each command as soon as it reached an outcome (a refused one first), then after ``wait`` seconds
        each one left as it is; one per command. From a node without the stream (UNIMPLEMENTED), the
        same through one ``WaitCommands`` call, in order once all are known."""
        req = api_pb2.CommandWaitBatch(command_ids=list(command_ids), timeout_s=wait)
        budget = self._wait_budget(wait, timeout)
        call = self._stub.FollowCommands(req, timeout=budget, metadata=self._metadata)
        got = 0
        try:
            async for result in call:
                got += 1
                yield result.index, CommandOutcome.from_pb(result)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED or got:
                raise from_rpc_error(exc, "FollowCommands", self.target) from None
            outcomes = await self.wait_commands(command_ids, wait=wait, timeout=timeout)
            for i, outcome in enumerate(outcomes):
                yield i, outcome
        finally:
            call.cancel()  # a caller that stopped early ends the stream on the node

    async def command(self, command_id: str, *, timeout: float | None = None) -> Command:
        """One command's record as the node holds it (:class:`NotFoundError` if it holds none)."""
        req = api_pb2.CommandGetRequest(command_id=command_id)
        reply = await self.call("GetCommand", req, timeout=timeout, retry=True)
        return Command.from_pb(reply.command)

    # --- watch ---------------------------------------------------------------------------------------------

    def watch(
        self,
        twins: Sequence[str] = (),
        *,
        prefix: str = "",
        fields: Sequence[str] = (),
        origins: Sequence[str] = (),
        since: int | None = None,
        reconnect: bool = True,
        share: bool = True,
    ) -> Watch:
        """Changes as the node applies them, as an async iterator of :class:`~drsdtp.client.types.Change`:
        first the matching twins' current state (unless ``since``: a cursor from an earlier watch, then every
        twin changed after it), then each change. After a disconnect or a node restart it reconnects with
        backoff and resumes after its last cursor by itself (``reconnect=False``: it raises instead).

        Watches asking the same, opened before the first of them receives its first message, share one
        stream (``share=False``: a stream of its own); one that falls behind the others is cut loose and
        resumes alone (see :mod:`drsdtp.client.watch`)."""
        req = api_pb2.WatchRequest(
            twin_ids=list(twins),
            prefix=prefix,
            fields=list(fields),
            origins=list(origins),
            max_changes=MAX_CHANGES,
        )
        shared = self._watch_streams if share else None
        return Watch(self._stub, req, self._metadata, self.retry, self.target, since, reconnect, shared)
