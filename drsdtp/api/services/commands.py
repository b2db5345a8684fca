"""The command methods (issue 12): IssueCommand, GetCommand, ListCommands, CancelCommand, WaitCommand, and
the batched IssueCommands and WaitCommands (many commands per call: a call's cost, the guard and gRPC, is
paid once per batch instead of once per command).

They reach the node's command book through :class:`CommandOps` (``drsdtp.actions.CommandBook`` fits), never
the node. The actor of a command is the caller's authenticated identity when there is one
(:meth:`drsdtp.api.caller.Caller.actor`): the audit trail records it with every event of the command.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio

from drsdtp.actions.book import CommandFailed, CommandRequest, Issued, Waited, failed
from drsdtp.actions.record import CommandId, CommandRecord, command_id, order
from drsdtp.api.auth.authority import AUDIT_BURST, AUDIT_PER_S
from drsdtp.api.auth.ratelimit import AuditBudget
from drsdtp.api.caller import Caller, current_caller
from drsdtp.api.convert import value_message
from drsdtp.api.errors import error_text, status_for
from drsdtp.api.node import AuditEntry
from drsdtp.api.visibility import in_scope
from drsdtp.api.watch_limits import WatchGate, admit_stream
from drsdtp.errors import DrsdtpError, InvalidValueError, LimitError, UnknownTwinError
from drsdtp.wire.v1 import api_pb2

__all__ = ["AuditSink", "CommandOps", "CommandService", "CommandStreams", "command_message", "plain_value"]

log = logging.getLogger(__name__)

# Appends entries to the audit trail in one write (``NodeApi.audit``).
AuditSink = Callable[[Sequence[AuditEntry]], Awaitable[None]]

Value = float | int | bool | str | bytes
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_WAIT_S = 30.0
MAX_WAIT_S = 3600.0
MAX_BATCH = 512  # commands per IssueCommands / WaitCommands (a request is at most 64 KiB anyway)


class CommandOps(Protocol):
    # Commands of IssueCommands / WaitCommands answered with an error, by status name (a metric).
    batch_refusals: collections.Counter[str]

    def takes_value(self, twin: str, action: str) -> bool: ...
    def get(self, command: CommandId) -> CommandRecord | None: ...
    def list(
        self,
        twin: str | None = None,
        *,
        active: bool = False,
        limit: int = 100,
        where: Callable[[str], bool] | None = None,
    ) -> list[CommandRecord]: ...
    async def issue_command(
        self,
        twin: str,
        action: str,
        value: Value | None = None,
        *,
        args: Sequence[Any] = (),
        key: str = "",
        deadline_s: float | None = None,
        actor: str = "anonymous",
        reason: str = "",
        origin: str = "api",
    ) -> CommandId: ...
    async def issue_many(self, requests: Sequence[CommandRequest]) -> Sequence[Issued]: ...
    async def cancel(self, command: CommandId, actor: str, reason: str) -> CommandRecord: ...
    async def wait(
        self, command: CommandId, timeout_s: float, until: Callable[[CommandRecord], bool] = ...
    ) -> CommandRecord | None: ...
    async def wait_many(
        self, commands: Sequence[CommandId], timeout_s: float, until: Callable[[CommandRecord], bool] = ...
    ) -> Waited: ...
    def follow(
        self, commands: Sequence[CommandId], timeout_s: float, until: Callable[[CommandRecord], bool] = ...
    ) -> AsyncGenerator[tuple[int, CommandRecord | None], None]: ...


def plain_value(msg: api_pb2.FieldValue, what: str) -> Value:
    kind = msg.WhichOneof("value")
    if kind == "f64":
        return msg.f64
    if kind == "i64":
        return msg.i64
    if kind == "flag":
        return msg.flag
    if kind == "text":
        return msg.text
    raise InvalidValueError(f"{what}: expected f64, i64, flag or text, got {kind or 'nothing'}")


def command_message(record: CommandRecord) -> api_pb2.Command:
    msg = api_pb2.Command(
        command_id=record.id, twin_id=record.twin, action=record.action, field=record.field,
        args=[value_message("", a) for a in record.args if isinstance(a, bool | int | float | str)],
        origin=record.origin, idempotency_key=record.key, issued_ms=record.issued_ms,
        deadline_ms=record.deadline_ms, executor=record.executor, issuer=record.issuer, actor=record.actor,
        reason=record.reason, state=str(record.state), why=record.why, attempts=max(0, record.attempts),
        held=record.held, result=record.result, terminal=record.terminal,
        marks=[api_pb2.CommandMark(state=str(s), ms=m.ms, node=m.node, reason=m.reason)
               for s, m in sorted(record.marks.items(), key=lambda sm: (sm[1].ms, order(sm[0])))],
    )  # fmt: skip
    if record.value is not None:
        msg.value.CopyFrom(value_message("", record.value))
    if record.cancel is not None:
        msg.cancel_actor, msg.cancel_reason = record.cancel.node, record.cancel.reason
    return msg


def _reply(record: CommandRecord | None, command: CommandId, repeated: bool = False) -> api_pb2.CommandReply:
    if record is None:
        raise UnknownTwinError(f"no command {command!r} on this node")
    return api_pb2.CommandReply(command=command_message(record), repeated=repeated)


def _wait_s(asked: float, default: float) -> float:
    wait = asked or default
    if not 0 <= wait <= MAX_WAIT_S:
        raise InvalidValueError(f"wait: {wait:g} s is outside [0, {MAX_WAIT_S:g}]")
    return wait


def _refused(exc: DrsdtpError) -> api_pb2.CommandResult:
    code = "INTERNAL" if isinstance(exc, CommandFailed) else status_for(exc).name
    return api_pb2.CommandResult(error_code=code, error=error_text(exc))


def _out_of_scope(caller: Caller, method: str, twin: str) -> tuple[api_pb2.CommandResult, AuditEntry]:
    """A command of a batch naming a twin outside the caller's scopes: its result, and the audit entry the
    guard writes for a single call refused so (:meth:`drsdtp.api.auth.Authority.refused`: same action,
    twin, actor and reason, the batch's method named)."""
    why = f"the twin {twin!r} is outside the scopes of {caller.identity} ({', '.join(caller.scopes)})"
    entry = AuditEntry(twin, "refused", {}, caller.identity, f"refused {method} (permission_denied): {why}")
    return api_pb2.CommandResult(error_code="PERMISSION_DENIED", error=f"{method}: {why}"), entry


def _batch_size(n: int, what: str) -> None:
    if n > MAX_BATCH:
        raise LimitError(f"{what}: {n} commands, at most {MAX_BATCH} per call")


def _batch_reply(book: CommandOps, results: list[api_pb2.CommandResult | None]) -> api_pb2.CommandBatchReply:
    done = [r for r in results if r is not None]
    assert len(done) == len(results), "a command of the batch got no result"
    for result in done:
        if result.error_code:
            book.batch_refusals[result.error_code] += 1
    return api_pb2.CommandBatchReply(results=done)


class CommandService:
    def __init__(
        self,
        commands: Callable[[], CommandOps],
        audit: AuditSink | None = None,
        budget: AuditBudget | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._commands = commands
        self._audit = audit  # where a batch's refusals go (None: not audited, as in unit tests)
        # The guard's budget for refusal records (drsdtp.api.auth.Authority.audit_budget), so a caller's
        # refused calls and refused batches share one rate; its own when none is given (``clock``).
        self._budget = budget if budget is not None else AuditBudget(AUDIT_PER_S, AUDIT_BURST, clock=clock)

    async def _audit_refusals(self, method: str, entries: Sequence[AuditEntry]) -> None:
        """A batch's scope refusals (one caller's), in one write; the refusals stand if the trail cannot take
        them. A twin refused for several commands of the call is one entry saying how many (the trail's
        request record names each twin once). A caller refused in a loop cannot fill the disk: past the
        guard's rate its refusals are counted and said in its next record."""
        if not entries or self._audit is None:
            return
        more = self._budget.admit(entries[0].actor, len(entries))
        if more is None:
            return
        times = collections.Counter(e.twin for e in entries)
        once = {e.twin: e for e in entries}.values()
        written = [
            dataclasses.replace(
                e,
                reason=e.reason
                + (f" ({times[e.twin]} commands)" if times[e.twin] > 1 else "")
                + ("" if i else more),  # said once, in the first entry
            )
            for i, e in enumerate(once)
        ]
        try:
            await self._audit(written)
        except Exception as exc:  # the audit trail logs its own failures
            log.warning("cannot audit %d refused commands of a %s call: %s", len(entries), method, exc)

    def _request(self, book: CommandOps, request: api_pb2.CommandIssueRequest) -> CommandRequest:
        """The book's request from the wire's (the caller's identity as its actor)."""
        value = plain_value(request.value, "value") if request.HasField("value") else None
        args = [plain_value(a, f"args[{i}]") for i, a in enumerate(request.args)]
        if (
            request.args_positional
            and value is None
            and args
            and book.takes_value(request.twin_id, request.action)
        ):
            value, args = args[0], args[1:]
            if args:
                raise InvalidValueError(
                    f"args: {request.twin_id} {request.action} takes one value, got {len(args) + 1}"
                )
        return CommandRequest(
            request.twin_id, request.action, value, tuple(args), request.idempotency_key,
            request.deadline_s or None, current_caller().actor(request.actor), request.reason, "api",
        )  # fmt: skip

    async def issue(self, request: api_pb2.CommandIssueRequest) -> api_pb2.CommandReply:
        book = self._commands()
        issue = self._request(book, request)
        wait = _wait_s(request.wait_s, 0.0)
        key = request.idempotency_key
        existed = bool(key) and book.get(command_id(request.twin_id, key)) is not None
        command = await book.issue_command(
            issue.twin, issue.action, issue.value, args=issue.args, key=key, deadline_s=issue.deadline_s,
            actor=issue.actor, reason=issue.reason, origin="api",
        )  # fmt: skip
        record = await book.wait(command, wait) if wait else book.get(command)
        return _reply(record, command, existed)

    async def issue_batch(self, request: api_pb2.CommandIssueBatch) -> api_pb2.CommandBatchReply:
        """Every command checked and issued on its own (a refused one is its own result, the scope check
        included: a scoped caller gets its commands within scope taken), all made durable together."""
        _batch_size(len(request.commands), "commands")
        wait = _wait_s(request.wait_s, 0.0)
        book, visible, caller = self._commands(), in_scope(), current_caller()
        results: list[api_pb2.CommandResult | None] = [None] * len(request.commands)
        taken: list[tuple[int, CommandRequest]] = []
        refusals: list[AuditEntry] = []
        for i, one in enumerate(request.commands):
            try:
                if one.wait_s:
                    raise InvalidValueError(f"commands[{i}].wait_s: set wait_s on the batch, not per command")
                if visible is not None and not visible(one.twin_id):
                    results[i], entry = _out_of_scope(caller, "IssueCommands", one.twin_id)
                    refusals.append(entry)
                    continue
                taken.append((i, self._request(book, one)))
            except DrsdtpError as exc:
                results[i] = _refused(exc)
            except Exception as exc:  # the node's own fault: this command's answer, not the whole call's
                results[i] = _refused(failed(CommandRequest(one.twin_id, one.action), "checking it", exc))
        await self._audit_refusals("IssueCommands", refusals)
        issued = await book.issue_many([r for _, r in taken])
        commands: list[tuple[int, Issued]] = [(i, got) for (i, _), got in zip(taken, issued, strict=True)]
        ids = [got[0] for _, got in commands if isinstance(got, tuple)]
        try:
            records = await book.wait_many(ids, wait) if wait else [book.get(c) for c in ids]
        except Exception as exc:  # the commands stand: answer each as it is now, not INTERNAL for the call
            log.warning(
                "IssueCommands: waiting for %d commands failed: %s: %s", len(ids), type(exc).__name__, exc
            )
            records = [book.get(c) for c in ids]
        by_id = dict(zip(ids, records, strict=True))
        for i, got in commands:
            if isinstance(got, DrsdtpError):
                results[i] = _refused(got)
                continue
            record = by_id[got[0]]
            if record is None:  # not held here after all (never: it was just written)
                results[i] = _refused(UnknownTwinError(f"no command {got[0]!r} on this node"))
                continue
            results[i] = api_pb2.CommandResult(command=command_message(record), repeated=got[1])
        return _batch_reply(book, results)

    async def _wait_targets(
        self, book: CommandOps, request: api_pb2.CommandWaitBatch, method: str
    ) -> tuple[float, list[api_pb2.CommandResult | None], list[CommandId]]:
        """A wait request checked: its wait, a result per command (None: to wait for; else its refusal,
        one not held here or of a twin outside the caller's scopes) and the commands to wait for."""
        _batch_size(len(request.command_ids), "command_ids")
        wait = _wait_s(request.timeout_s, DEFAULT_WAIT_S)
        visible, caller = in_scope(), current_caller()
        results: list[api_pb2.CommandResult | None] = []
        ids: list[CommandId] = []
        refusals: list[AuditEntry] = []
        for command in request.command_ids:
            record = book.get(command)
            if record is None:
                results.append(_refused(UnknownTwinError(f"no command {command!r} on this node")))
            elif visible is not None and not visible(record.twin):
                refused, entry = _out_of_scope(caller, method, record.twin)
                results.append(refused)
                refusals.append(entry)
            else:
                results.append(None)
                ids.append(command)
        await self._audit_refusals(method, refusals)
        return wait, results, ids

    async def wait_batch(self, request: api_pb2.CommandWaitBatch) -> api_pb2.CommandBatchReply:
        """Every named command once each reached an outcome (or at the timeout); one not held here, or
        of a twin outside the caller's scopes, is an error of its own."""
        book = self._commands()
        wait, results, ids = await self._wait_targets(book, request, "WaitCommands")
        waited = iter(await book.wait_many(ids, wait) if ids else [])
        for i, result in enumerate(results):
            if result is None:
                record = next(waited)
                assert record is not None  # records are never removed
                results[i] = api_pb2.CommandResult(command=command_message(record))
        return _batch_reply(book, results)

    async def follow(self, request: api_pb2.CommandWaitBatch) -> AsyncGenerator[api_pb2.CommandResult, None]:
        """FollowCommands: :meth:`wait_batch`'s results one by one, each as soon as it is known (refusals
        first), ``index`` naming its place in the request; one result per command, then the end."""
        book = self._commands()
        wait, results, ids = await self._wait_targets(book, request, "FollowCommands")
        places = [i for i, r in enumerate(results) if r is None]
        for i, result in enumerate(results):
            if result is not None:
                result.index = i
                if result.error_code:
                    book.batch_refusals[result.error_code] += 1
                yield result
        if not ids:
            return
        async with contextlib.aclosing(book.follow(ids, wait)) as followed:
            async for at, record in followed:
                assert record is not None  # records are never removed
                yield api_pb2.CommandResult(command=command_message(record), index=places[at])

    async def get(self, request: api_pb2.CommandGetRequest) -> api_pb2.CommandReply:
        return _reply(self._commands().get(request.command_id), request.command_id)

    async def list(self, request: api_pb2.CommandListRequest) -> api_pb2.CommandListReply:
        limit = request.limit or DEFAULT_LIMIT
        if limit > MAX_LIMIT:
            raise InvalidValueError(f"limit: {limit} is above {MAX_LIMIT}")
        records = self._commands().list(
            request.twin_id or None, active=request.active, limit=limit, where=in_scope()
        )
        return api_pb2.CommandListReply(commands=[command_message(r) for r in records])

    async def cancel(self, request: api_pb2.CommandCancelRequest) -> api_pb2.CommandReply:
        actor = current_caller().actor(request.actor)
        record = await self._commands().cancel(request.command_id, actor, request.reason)
        return _reply(record, request.command_id)

    async def wait(self, request: api_pb2.CommandWaitRequest) -> api_pb2.CommandReply:
        book = self._commands()
        if book.get(request.command_id) is None:
            raise UnknownTwinError(f"no command {request.command_id!r} on this node")
        record = await book.wait(request.command_id, _wait_s(request.timeout_s, DEFAULT_WAIT_S))
        return _reply(record, request.command_id)


class CommandStreams:
    """Serves FollowCommands over gRPC (and as server-sent events, :mod:`drsdtp.api.http.streams`): an open
    stream counts against the caller's streams (``limits.api_max_watchers``), and a client that stops
    reading is cut off after ``limits.api_watch_stall_s``, as a watch is."""

    def __init__(self, service: CommandService, gate: WatchGate) -> None:
        self.service, self.gate = service, gate

    async def serve(self, request: api_pb2.CommandWaitBatch, context: grpc.aio.ServicerContext) -> None:
        await admit_stream(self.gate, context)
        try:
            async with contextlib.aclosing(self.service.follow(request)) as results:
                async for result in results:
                    async with asyncio.timeout(self.gate.limits.stall_s):
                        await context.write(result)
        except DrsdtpError as exc:  # the request's own fault (too many ids, a bad timeout)
            await context.abort(status_for(exc), f"FollowCommands: {error_text(exc)}")
        except TimeoutError:
            self.gate.cut_off += 1
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(
                "FollowCommands cut off: a result was not taken within limits.api_watch_stall_s "
                f"({self.gate.limits.stall_s:g} s); WaitCommands or GetCommand give the state"
            )
