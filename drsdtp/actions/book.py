"""The in-process interface to commands: issue one, read its status, list, cancel, wait for its outcome.

Any node takes a command (the API, the CLI, a rule on any node); the record it writes replicates to the
executor, which carries it out (:mod:`drsdtp.actions.executor`)::

    book = node.commands
    command = await book.issue_command("pump-1", "valve", 0.4, key="morning-open", actor="rules")
    record = book.get(command)                        # CommandRecord: state, why, marks, attempts ...
    record = await book.wait(command, timeout_s=30)   # returns at a terminal state or at the timeout

De-duplication: an idempotency key gives a command id computed from the twin and the key
(:func:`~drsdtp.actions.record.command_id`), so a retry on any node, before or after a partition heals,
names the same record, and the executor carries a record out once. The same key with another request is
refused. Bound: ``commands.max_records`` records (counted from the store, so it holds across restarts);
beyond it new commands are refused (the engine cannot delete a twin yet, see the README's limitations).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from drsdtp._core import Store
from drsdtp.actions.actuators import Actuators, ActuatorSpec, Value
from drsdtp.actions.record import (
    CANCEL,
    CLAIMED,
    CMD_PREFIX,
    CommandId,
    CommandRecord,
    Mark,
    RecordReader,
    command_id,
    intent_command_id,
    record_from_fields,
    record_twin,
    request_fields,
)
from drsdtp.actions.waiters import ChangeSource, CommandWaiters
from drsdtp.core import Intent
from drsdtp.errors import DrsdtpError, InvalidValueError, LimitError, PreconditionError, UnknownTwinError
from drsdtp.gossip.scopes import scope_of

__all__ = [
    "CommandAudit",
    "CommandBook",
    "CommandFailed",
    "CommandLimits",
    "CommandRequest",
]

log = logging.getLogger(__name__)

Commit = Callable[[bytes, Sequence[str], str], Awaitable[None]]
# Appends now, returns what resolves once durable (``Node.start_commit``).
Begin = Callable[[bytes, Sequence[str], str], "asyncio.Future[None]"]
# The executor on this node: whether it writes a new command at once (see CommandBook._create); if so, a
# future the book resolves once the record (with the attempt) is durable, or fails with the log's error.
Claim = Callable[[ActuatorSpec, CommandId, Value | None], "asyncio.Future[None] | None"]
# What issue_many answers per request: (command, repeated) or the error that refused it.
Issued = tuple[CommandId, bool] | DrsdtpError


class CommandFailed(DrsdtpError):
    """One command of a batch the node could not check or issue for a fault of its own (not the request's):
    that command's INTERNAL answer; the batch's other commands stand."""


def failed(request: CommandRequest, stage: str, exc: Exception) -> CommandFailed:
    """Logs a command's own fault with its twin and actuator named; the error that answers it."""
    trace = log.isEnabledFor(logging.DEBUG)
    log.warning(
        "command %s %s of a batch failed while %s: %s: %s",
        request.twin, request.action, stage, type(exc).__name__, exc, exc_info=trace,
    )  # fmt: skip
    return CommandFailed(
        f"{request.twin} {request.action}: the node failed while {stage}: {type(exc).__name__}: {exc}"
    )


Waited = list[CommandRecord | None]
Durables = list["asyncio.Future[None] | None"]  # per record of a batch: what resolves once it is durable
MAX_KEY_BYTES = 128
MAX_ARGS_BYTES = 4096
COUNT_REFRESH_S = 5.0


class CommandAudit(Protocol):
    """Appends a command event to the node's audit trail (``event``: issued, cancel, or a state); with
    ``after``, once that commit is durable (and not if it fails)."""

    async def __call__(
        self,
        record: CommandRecord,
        event: str,
        actor: str,
        reason: str,
        after: asyncio.Future[None] | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandLimits:
    max_records: int = 100_000
    default_deadline_s: float = 60.0
    max_deadline_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class CommandRequest:
    twin: str
    action: str
    value: Value | None = None
    args: tuple[Any, ...] = ()
    key: str = ""
    deadline_s: float | None = None  # None: the actuator's, else commands.default_deadline_s
    actor: str = "anonymous"
    reason: str = ""
    origin: str = "api"  # api, rule, correction ... (desired values: see CommandBook.desired)


def _settle(claim: asyncio.Future[None], durable: asyncio.Future[None]) -> None:
    """The executor's claim follows the record's commit: durable, failed with the log's error, or
    cancelled."""
    if claim.done():
        return
    if durable.cancelled():
        claim.cancel()
    elif (exc := durable.exception()) is not None:
        claim.set_exception(exc)
    else:
        claim.set_result(None)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandBook:
    def __init__(
        self,
        store: Store,
        commit: Commit,
        *,
        node_id: str,
        actuators: Actuators,
        changes: ChangeSource,
        limits: CommandLimits | None = None,
        audit: CommandAudit | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
        begin: Begin | None = None,
    ) -> None:
        self.store = store
        # Parsed records, shared with the executor (one parse per version of a record on the node).
        self.records = RecordReader(store)
        self.node_id = node_id
        self.actuators = actuators
        self.changes = changes
        self.limits = limits or CommandLimits()
        self._commit = commit
        self._begin = begin or (lambda d, t, o: asyncio.ensure_future(commit(d, t, o)))
        # Set by the executor of this node's actuators: when it says it writes a new command at once, the
        # record is created with its first attempt (one durable append where two were; see _create).
        self.claim: Claim | None = None
        self._audit = audit
        self._clock_ms = clock_ms
        self._count = 0
        self._counted_at = -float("inf")
        self.refused_over_cap = 0
        self.issued = 0
        self.repeats = 0  # requests answered with the command an idempotency key already names
        # Commands of a batch (IssueCommands, WaitCommands) answered with an error, by status name.
        self.batch_refusals: collections.Counter[str] = collections.Counter()
        self.waiters = CommandWaiters(changes, self.get)

    # ----- reads ------------------------------------------------------------------------------------------

    def get(self, command: CommandId) -> CommandRecord | None:
        return self.records(command)

    def ids(self) -> list[CommandId]:
        """Every command this replica holds (walks the store's ``_cmd/`` twins in pages)."""
        out: list[CommandId] = []
        after: str | None = None
        while True:
            page = self.store.twins_page(after, CMD_PREFIX, 4096)
            out.extend(t[len(CMD_PREFIX) :] for t in page)
            if len(page) < 4096:
                return out
            after = page[-1]

    def list(
        self,
        twin: str | None = None,
        *,
        active: bool = False,
        limit: int = 100,
        where: Callable[[str], bool] | None = None,
    ) -> list[CommandRecord]:
        """Records (of ``twin``; of twins ``where`` holds for; only those not yet terminal with ``active``),
        newest first."""
        records = []
        for command in self.ids():
            record = self.get(command)
            if record is None or (twin is not None and record.twin != twin):
                continue
            if where is not None and not where(record.twin):
                continue
            if active and record.terminal:
                continue
            records.append(record)
        records.sort(key=lambda r: (r.issued_ms, r.id), reverse=True)
        return records[:limit]

    def issued_since(self, twin: str, action: str, origin: str, since_ms: int) -> tuple[int, ...]:
        """When each command of the actuator from ``origin`` issued at or after ``since_ms`` was issued
        (wall ms; from the durable records, so it holds across restarts)."""
        records = (self.get(command) for command in self.ids())
        return tuple(
            r.issued_ms
            for r in records
            if r is not None
            and r.origin == origin
            and r.issued_ms >= since_ms
            and (r.twin, r.action) == (twin, action)
        )

    def count(self) -> int:
        now = time.monotonic()
        if now - self._counted_at >= COUNT_REFRESH_S:
            self._count, self._counted_at = len(self.ids()), now
        return self._count

    async def wait(
        self,
        command: CommandId,
        timeout_s: float,
        until: Callable[[CommandRecord], bool] = lambda r: r.terminal,
    ) -> CommandRecord | None:
        """The record once ``until`` holds for it (by default: a terminal state) or at the timeout,
        whichever comes first (then as it is). Every waiter shares one subscription (:mod:`.waiters`)."""
        return await self.waiters.wait(command, timeout_s, until)

    async def wait_many(
        self,
        commands: Sequence[CommandId],
        timeout_s: float,
        until: Callable[[CommandRecord], bool] = lambda r: r.terminal,
    ) -> Waited:
        """:meth:`wait` for many commands at once: returns when ``until`` holds for each, or at the
        timeout (then each as it is; None for a command this node does not hold)."""
        return await self.waiters.wait_many(commands, timeout_s, until)

    def follow(
        self,
        commands: Sequence[CommandId],
        timeout_s: float,
        until: Callable[[CommandRecord], bool] = lambda r: r.terminal,
    ) -> AsyncGenerator[tuple[int, CommandRecord | None], None]:
        """:meth:`wait_many` as each command gets there: ``(its position, record)`` in the order they reach
        ``until``, then at the timeout each one left as it is (None for a command this node does not hold)."""
        return self.waiters.follow(commands, timeout_s, until)

    def takes_value(self, twin: str, action: str) -> bool:
        """Whether the actuator's commands carry a value (else only args); UnknownTwinError if none."""
        return self.actuators.get(twin, action).value != "none"

    # ----- writes -----------------------------------------------------------------------------------------

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
    ) -> CommandId:
        """Takes a command (checked against the actuator) and returns its id once its record is durable."""
        return await self.issue(
            CommandRequest(twin, action, value, tuple(args), key, deadline_s, actor, reason, origin)
        )

    async def issue(self, request: CommandRequest) -> CommandId:
        new = self._prepare(request)
        if isinstance(new, str):
            return new  # a repeat
        command, fields, spec, value = new
        await self._create(command, fields, spec, value)
        await self._audit_issued(command, request.reason)
        return command

    async def issue_many(self, requests: Sequence[CommandRequest]) -> Sequence[Issued]:
        """Each request as :meth:`issue` takes it, answered on its own: ``(command, repeated)``, or the error
        that refused it (one refusal never fails the others). Every new record is checked, then all are
        written with one delta and one append to the log (:meth:`Store.set_many_twins`), then awaited
        together: one log record and one durable group commit for the batch, no task per command. A key
        repeated within the batch names the command its first use created."""
        out: list[Issued] = []
        batch: dict[CommandId, CommandRecord] = {}  # the batch's new records, not written yet
        new: list[tuple[int, CommandRequest, CommandId, dict[str, Value], ActuatorSpec, Value | None]] = []
        for request in requests:
            try:
                prepared = self._prepare(request, batch)
                if isinstance(prepared, str):
                    out.append((prepared, True))
                    continue
                command, fields, spec, value = prepared
                record = record_from_fields(command, fields)
                assert record is not None  # request fields name the twin and action
                batch[command] = record
                self._count += 1  # the cap holds within the batch
            except DrsdtpError as exc:
                out.append(exc)
                continue
            except Exception as exc:  # a fault of the node's, before anything of this command was written
                out.append(failed(request, "checking it", exc))
                continue
            new.append((len(out), request, command, fields, spec, value))
            out.append((command, False))
        if not new:
            return out
        durables = self._start_batch([(c, f, s, v) for _, _, c, f, s, v in new])
        if durables is None:  # the batch's delta failed (a fault of the node's): each on its own
            self._count -= len(new)
            durables = Durables()
            for i, request, command, fields, spec, value in new:
                try:
                    durables.append(self._start_create(command, fields, spec, value))
                except Exception as exc:
                    out[i] = exc if isinstance(exc, DrsdtpError) else failed(request, "writing it", exc)
                    durables.append(None)
        started: list[tuple[int, asyncio.Future[None], CommandRequest]] = []
        for (i, request, command, *_), durable in zip(new, durables, strict=True):
            if durable is None:
                continue
            started.append((i, durable, request))
            # Queued now, written once durable (not if the log fails): a caller gone before the commit
            # still leaves every issued command in the audit trail.
            try:
                await self._audit_issued(command, request.reason, after=durable)
            except Exception as exc:  # the command is issued all the same; the trail's own fault is logged
                log.warning("command %s: its issue not queued for the audit trail: %s", command, exc)
        for i, durable, request in started:
            try:
                await asyncio.shield(durable)
            except DrsdtpError as exc:  # the log failed: this record is not durable, nothing executes it
                out[i] = exc
            except Exception as exc:
                out[i] = failed(request, "making it durable", exc)
        return out

    async def desired(
        self, spec: ActuatorSpec, intent: Intent, *, actor: str | None = None, reason: str = ""
    ) -> CommandId | None:
        """The command carrying out one desired value of ``spec``'s field; created when this replica holds
        none (``actor``: only the node that took the desired write knows who asked). Returns None for a
        value the actuator refuses (it stays desired and visible; nothing is actuated)."""
        command = intent_command_id(spec.twin, spec.field, intent.writer, intent.counter)
        if self.get(command) is not None:
            return command
        try:
            value = spec.check_value(intent.value)
        except InvalidValueError as exc:
            log.warning("desired value of %s/%s not actuated: %s", spec.twin, spec.field, exc)
            return None
        self._check_cap()
        issued = intent.ms
        fields = request_fields(
            twin=spec.twin, action=spec.action, field_name=spec.field, value=value, args=(),
            origin="desired", key="", issued_ms=issued,
            deadline_ms=issued + int(self._deadline_s(spec, None) * 1000), executor=spec.node,
            issuer=self.node_id, scope=self._scope(spec.twin), intent=f"{intent.writer:x}:{intent.counter}",
            actor=actor, reason=reason,
        )  # fmt: skip
        await self._create(command, fields, spec, value)
        record = self.get(command)
        if record is not None and actor is not None and self._audit is not None:
            await self._audit(record, "issued", actor, reason)
        return command

    async def cancel(self, command: CommandId, actor: str, reason: str) -> CommandRecord:
        """Asks the executor to cancel (it does unless the command reached a terminal state first)."""
        record = self.get(command)
        if record is None:
            raise UnknownTwinError(f"no command {command!r} on this node")
        if record.terminal:
            raise PreconditionError(f"command {command} is already {record.state}: {record.why}")
        if not reason.strip():
            raise InvalidValueError("a cancel needs a reason (the audit trail records why)")
        mark = Mark(self._clock_ms(), actor or "anonymous", reason)
        twin = record_twin(command)
        await self._commit(self.store.set(twin, CANCEL, mark.to_text()), [twin], "local")
        if self._audit is not None:
            await self._audit(record, "cancel", mark.node, reason)
        updated = self.get(command)
        assert updated is not None
        return updated

    # ----- helpers ----------------------------------------------------------------------------------------

    def _prepare(
        self, request: CommandRequest, batch: Mapping[CommandId, CommandRecord] | None = None
    ) -> CommandId | tuple[CommandId, dict[str, Value], ActuatorSpec, Value | None]:
        """Checks a request: the command its key already names (a repeat: in the store, or among the
        ``batch``'s records not written yet), else the new record's fields."""
        spec = self.actuators.get(request.twin, request.action)
        value = spec.check_value(request.value)
        args = self._check_args(request)
        deadline_s = self._deadline_s(spec, request.deadline_s)
        command = command_id(request.twin, request.key)
        existing = self.get(command)
        if existing is None and batch:
            existing = batch.get(command)
        if existing is not None:
            self._same_request(existing, request, value, args)
            self.repeats += 1
            return command
        self._check_cap()
        now = self._clock_ms()
        fields = request_fields(
            twin=request.twin, action=request.action, field_name=spec.field, value=value, args=args,
            origin=request.origin, key=request.key, issued_ms=now, deadline_ms=now + int(deadline_s * 1000),
            executor=spec.node, issuer=self.node_id, scope=self._scope(request.twin),
            actor=request.actor or "anonymous", reason=request.reason,
        )  # fmt: skip
        return command, fields, spec, value

    async def _audit_issued(
        self, command: CommandId, reason: str, after: asyncio.Future[None] | None = None
    ) -> None:
        record = self.get(command)
        if record is not None and self._audit is not None:
            await self._audit(record, "issued", record.actor, reason, after)

    def _start_create(
        self, command: CommandId, fields: dict[str, Value], spec: ActuatorSpec, value: Value | None
    ) -> asyncio.Future[None]:
        """Applies the record and appends it to the log in this step of the loop; returns what resolves
        once it is durable (:meth:`issue_many` awaits many together, :meth:`_create` one).

        The intent (the record) and the attempt (``attempts``, one more per write that may reach the
        device) must both be durable before the executor writes. When the executor is this node's and
        says it writes the command at once (:attr:`claim`: its actuator idle, limits, interlocks and rate
        limit clear, not converged already), both go in one set of fields (``claimed``: 1), made durable
        by one append: the crash windows are the ones two appends had (both shared the fsync before the
        write). The executor takes the attempt back if it does not write after all (held, cancelled,
        superseded). A field, not the ``attempts`` counter: a counter's delta had to be joined to the
        record's, which cost twice the record's own ``set_many``."""
        twin = record_twin(command)
        claim = None
        if self.claim is not None and spec.node == self.node_id:
            claim = self.claim(spec, command, value)
        try:
            delta = self.store.set_many(twin, fields if claim is None else {**fields, CLAIMED: 1})
        except BaseException:
            if claim is not None:
                claim.cancel()  # never created: the executor forgets the claim
            raise
        durable = self._begin(delta, [twin], "local")
        if claim is not None:
            durable.add_done_callback(functools.partial(_settle, claim))
        self._count += 1
        self.issued += 1
        return durable

    def _start_batch(
        self, records: Sequence[tuple[CommandId, dict[str, Value], ActuatorSpec, Value | None]]
    ) -> Durables | None:
        """:meth:`_start_create` for many records (distinct commands), with one delta and one append: the
        future (one for all) for each; None, with nothing written, when the delta fails. The executor
        claims at most one command per actuator of the batch (the first: the others wait behind it, as
        they would have one by one)."""
        claims: list[asyncio.Future[None]] = []
        claimed: set[tuple[str, str]] = set()
        items: list[tuple[str, dict[str, Value]]] = []
        for command, fields, spec, value in records:
            claim = None
            key = (spec.twin, spec.action)
            if self.claim is not None and spec.node == self.node_id and key not in claimed:
                claim = self.claim(spec, command, value)
            if claim is not None:
                claims.append(claim)
                claimed.add(key)
                fields = {**fields, CLAIMED: 1}
            items.append((record_twin(command), fields))
        try:
            delta = self.store.set_many_twins(items)
        except Exception as exc:
            for claim in claims:
                claim.cancel()  # never created: the executor forgets the claim
            log.warning("a batch of %d command records not written at once: %s", len(items), exc)
            return None
        durable = self._begin(delta, [twin for twin, _ in items], "local")
        for claim in claims:
            durable.add_done_callback(functools.partial(_settle, claim))
        self.issued += len(items)
        return [durable] * len(items)

    async def _create(
        self, command: CommandId, fields: dict[str, Value], spec: ActuatorSpec, value: Value | None
    ) -> None:
        """:meth:`_start_create`, returning once the record is durable."""
        await asyncio.shield(self._start_create(command, fields, spec, value))

    def _check_cap(self) -> None:
        if self.count() >= self.limits.max_records:
            self._counted_at = -float("inf")  # recount before refusing
            if self.count() >= self.limits.max_records:
                self.refused_over_cap += 1
                exc = LimitError(
                    f"this node holds {self._count} command records, the cap is commands.max_records "
                    f"({self.limits.max_records}); no new command is taken"
                )
                exc.exhausted = True  # type: ignore[attr-defined]
                raise exc

    def _deadline_s(self, spec: ActuatorSpec, asked: float | None) -> float:
        deadline = asked if asked is not None else spec.deadline_s or self.limits.default_deadline_s
        if not 0 < deadline <= self.limits.max_deadline_s:
            raise InvalidValueError(
                f"deadline_s: {deadline:g} is outside (0, {self.limits.max_deadline_s:g}] "
                "(commands.max_deadline_s)"
            )
        return deadline

    def _check_args(self, request: CommandRequest) -> tuple[Any, ...]:
        if len(request.key.encode()) > MAX_KEY_BYTES:
            raise InvalidValueError(f"idempotency_key: longer than {MAX_KEY_BYTES} bytes")
        for i, arg in enumerate(request.args):
            if isinstance(arg, float) and arg != arg:
                raise InvalidValueError(f"args[{i}]: NaN is no argument")
            if not isinstance(arg, bool | int | float | str):
                raise InvalidValueError(f"args[{i}]: expected a number, boolean or text, got {arg!r}")
        if len(repr(request.args)) > MAX_ARGS_BYTES:
            raise InvalidValueError(f"args: longer than {MAX_ARGS_BYTES} bytes")
        return tuple(request.args)

    def _same_request(
        self, existing: CommandRecord, request: CommandRequest, value: Value | None, args: tuple[Any, ...]
    ) -> None:
        same = (
            existing.action == request.action
            and type(existing.value) is type(value)
            and existing.value == value
            and existing.args == args
        )
        if not same:
            raise InvalidValueError(
                f"idempotency_key: {request.key!r} already names command {existing.id} "
                f"({existing.action} {existing.value!r}) on {request.twin!r}: a key names one command"
            )

    def _scope(self, twin: str) -> str:
        return scope_of(self.store, twin)
