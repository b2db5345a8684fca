"""The executor: on the node named by an actuator, carries its commands out and follows each to its outcome.

It follows the command records (the store's change feed: records created here, replicated from peers, or
found in the store at start after a crash) and, one actuator at a time, for each command:

1. **settles what is already decided**: a cancel request -> ``cancelled``; a newer command on the same field
   -> ``superseded``; the deadline passed -> ``timed_out``; each with the reason;
2. **checks safety** (again: the issuing node checked the request, the reported value may have moved since):
   the actuator's limits and ``max_step`` from the reported value -> ``rejected``; its interlocks: a
   precondition field whose quality (the node's health view: stuck, stale, drifting ...) or age is not good
   enough refuses the command (``rejected``) or holds it (``held`` says why) until it is, or its deadline;
3. **rate limits**: writes to one actuator at least ``min_interval_s`` apart (the last write's time comes from
   the records, so it holds across restarts);
4. **writes** through the adapter's :class:`~drsdtp.adapters.write.Writer`, with retries and doubling backoff
   that never pass the deadline: ``sent``/``acknowledged`` as the adapter reports, ``rejected`` when the
   device refuses, ``failed`` when no attempt reached it;
5. **follows the twin**: ``applied`` once the reported field is within tolerance of the value (an action
   without a field: once the device acknowledged), else ``timed_out`` at the deadline.

Idempotence across a crash (SIGKILL mid-flight): the attempt counter is made durable *before* each write
(a command created on this node that can be written at once carries its first attempt in the record itself,
one durable append for both: :meth:`Executor.claim`). On
restart a record that has attempts and no outcome is first re-checked against the reported value (waiting
one ack timeout for an echo in flight): converged means ``applied`` with no new write; only otherwise is it
written again (the same value: a set-point write is idempotent, and the command id travels with it for
devices that can drop a repeat). An action (no reported field: a method call, a pulse) cannot be re-checked,
so it is never repeated after a restart: it fails, saying so (at most once rather than maybe twice). No sync
loops: only desired values and command records start work; a
reported value (the echo) never does, and a desired value maps to one command id on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from drsdtp._core import Store
from drsdtp.actions.actuators import Actuators, ActuatorSpec, Interlock, Value
from drsdtp.actions.book import CommandAudit, CommandBook
from drsdtp.actions.record import (
    ATTEMPTS,
    CANCEL,
    CLAIMED,
    CMD_PREFIX,
    HELD,
    RESULT,
    CommandId,
    CommandRecord,
    Mark,
    RecordReader,
    State,
    record_twin,
    transition_fields,
)
from drsdtp.actions.waiters import ChangeSource
from drsdtp.adapters.write import (
    NotConnectedError,
    WriteOutcome,
    Writer,
    WriteRequest,
    WriteStatus,
    WriteTarget,
)
from drsdtp.core import DESIRED_SUFFIX, intents
from drsdtp.errors import ConfigError, DrsdtpError, InvalidValueError

__all__ = ["Executor", "ExecutorStats", "FieldQuality", "HealthView"]

log = logging.getLogger(__name__)

POLL_S = 0.25  # waits re-check at least this often (health and deadlines move without a store change)
# A write's marks (sent, acknowledged) wait this long for the outcome, to be committed with it: one fsync
# instead of two when the echo is quick. Never longer: a command in flight shows it, durably.
ECHO_GRACE_S = 0.1
FINISHED_KEPT = 4096  # commands finished here whose later changes are not parsed again (final anyway)
Commit = Callable[[bytes, Sequence[str], str], Awaitable[None]]
RecordValue = str | float | int | bool | bytes
# Appends now, returns what resolves once durable (``Node.start_commit``): for marks nothing waits on.
Begin = Callable[[bytes, Sequence[str], str], "asyncio.Future[None]"]


@dataclass(frozen=True, slots=True)
class FieldQuality:
    quality: float  # 0..1, the health view's
    reasons: tuple[str, ...]  # stuck, stale, drifting ...
    age_s: float | None  # of the reported value


class HealthView(Protocol):
    """The node's view of a field's health (intelligence's field health, else the replicated ``.q``)."""

    def field_quality(self, twin: str, field: str) -> FieldQuality | None: ...


@dataclass(slots=True)
class ExecutorStats:
    outcomes: dict[str, int] = field(default_factory=dict)  # terminal state -> commands
    writes: int = 0  # write attempts sent to adapters
    write_errors: int = 0  # attempts that did not reach the device
    resumed: int = 0  # commands found unfinished at start
    held: int = 0  # commands that waited on an interlock
    skipped_rewrites: int = 0  # resumed commands already converged: not written again
    not_connected: int = 0  # writes not sent because the adapter had no session (no retry spent)
    record_writes: int = 0  # writes of a record's marks, outcome, hold or claim (see Executor._stage)
    record_appends: int = 0  # the log appends they took (one per loop step that wrote any)


@dataclass(frozen=True, slots=True)
class _Step:
    state: State
    reason: str
    ms: int


class _Done(Exception):
    """The command reached a terminal state (written); stop working on it."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Executor:
    def __init__(
        self,
        store: Store,
        commit: Commit,
        *,
        node_id: str,
        actuators: Actuators,
        book: CommandBook,
        changes: ChangeSource,
        writer: Callable[[str], Writer | None],
        health: HealthView,
        audit: CommandAudit | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
        begin: Begin | None = None,
    ) -> None:
        self.store = store
        # The book's reader when they share the store: a record version parsed by one is not parsed again.
        self._record = book.records if book.store is store else RecordReader(store)
        self.node_id = node_id
        self.book = book
        self.changes = changes
        self.stats = ExecutorStats()
        self._commit = commit
        self._begin = begin or (lambda d, t, o: asyncio.ensure_future(commit(d, t, o)))
        self._writer_of = writer
        self._health = health
        self._audit = audit
        self._clock_ms = clock_ms
        self.specs = actuators.executed_by(node_id)
        self._by_key = {(s.twin, s.action): s for s in self.specs}
        self._twins = {s.twin for s in self.specs if s.desired}
        self._targets: dict[tuple[str, str], tuple[Writer, WriteTarget]] = {}
        self._active: dict[tuple[str, str], dict[CommandId, tuple[int, str]]] = {}
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        self._last_write_ms: dict[tuple[str, str], int] = {}
        # Per command: the marks of its write not committed yet (and the device's answer): they go with the
        # outcome if it comes within ECHO_GRACE_S (see _execute).
        self._unwritten: dict[CommandId, tuple[list[_Step], dict[str, str]]] = {}
        # What a worker waiting in _pause is woken by (its actuator's own event: an echo wakes the worker it
        # concerns, not every worker), and the value each worker waiting for convergence waits for: a
        # change of the reported twin wakes it only once the field is there (one pass per change in
        # on_appended; before, every echo woke every waiting worker to re-check its own command).
        self._nudges = {key: asyncio.Event() for key in self._by_key}
        self._awaiting: dict[tuple[str, str], Value] = {}
        self._keys_of: dict[str, list[tuple[str, str]]] = {}
        for s in self.specs:
            if s.field:
                self._keys_of.setdefault(s.twin, []).append((s.twin, s.action))
        self._lock_keys: dict[str, set[tuple[str, str]]] = {}
        for s in self.specs:
            for lock in s.interlocks:
                self._lock_keys.setdefault(lock.twin, set()).add((s.twin, s.action))
        # Commands under way here (-> their actuator) and the latest ones finished here: a change of either
        # needs no parse of its record (the worker re-reads it at its next checkpoint; a finished one is
        # final). Without these, each of the executor's own commits was parsed once more as it was appended.
        self._tracked: dict[CommandId, tuple[str, str]] = {}
        self._finished: OrderedDict[CommandId, None] = OrderedDict()
        # Commands created here with their first attempt (claim): resolved once that record is durable.
        # The worker writes after it without appending the attempt again, or takes the attempt back.
        self._claims: dict[CommandId, asyncio.Future[None]] = {}
        # Record fields written in this loop step, per record twin, and what resolves once they are durable:
        # every worker that writes in one step (a batch's commands reach their outcomes together) shares one
        # delta and one append to the log (see _stage).
        self._staged: tuple[dict[str, dict[str, RecordValue]], asyncio.Future[None]] | None = None
        if book.store is store:
            book.claim = self.claim

    # ----- setup ------------------------------------------------------------------------------------------

    def bind(self) -> None:
        """Validates every actuator this node executes against its adapter (a ConfigError names the key)."""
        for spec in self.specs:
            writer = self._writer_of(spec.adapter)
            if writer is None:
                raise ConfigError(
                    f"{spec.key}.adapter",
                    f"this node ({self.node_id}) has no adapter {spec.adapter!r} that can write",
                )
            self._targets[spec.twin, spec.action] = (
                writer,
                writer.write_target(spec.write, f"{spec.key}.write"),
            )

    async def run(self) -> None:
        """Runs until cancelled: one worker per actuator, fed by the change feed."""
        if not self.specs:
            return
        if not self._targets:
            self.bind()
        stream = self.changes.subscribe()  # before the scan: nothing created in between is missed
        for command in self.book.ids():
            self._track(command, resumed=True)
        for twin in self._twins:
            await self._desired(twin)
        async with asyncio.TaskGroup() as tg:
            for spec in self.specs:
                key = (spec.twin, spec.action)
                self._wake.setdefault(key, asyncio.Event()).set()
                tg.create_task(self._worker(spec), name=f"executor {spec.label}")
            while True:
                batch = await stream.next_batch(4096)
                twins = {c.twin for c in batch}
                for twin in twins:
                    if twin.startswith(CMD_PREFIX):
                        self._track(twin[len(CMD_PREFIX) :])
                    else:
                        self._reported(twin)
                        for key in self._lock_keys.get(twin, ()):  # an interlock's field moved
                            self._nudges[key].set()
                for twin in twins & self._twins:
                    await self._desired(twin)

    def on_appended(self, twins: Sequence[str]) -> None:
        """A local commit is in the store and the log, not yet durable (``Node.appended_hooks``): a command
        record made here, or an actuated twin's echo, is acted on now rather than one fsync later. Safe:
        whatever the executor then writes (an attempt, ``applied``) is durable only after what it saw."""
        for twin in twins:
            if twin.startswith(CMD_PREFIX):
                self._track(twin[len(CMD_PREFIX) :], known_only=True)
            else:
                self._reported(twin)

    def busy(self, twin: str, action: str) -> bool:
        """Whether a command of the actuator is under way here (auto-correction waits for it to settle)."""
        return bool(self._active.get((twin, action)))

    def claim(
        self, spec: ActuatorSpec, command: CommandId, value: Value | None
    ) -> asyncio.Future[None] | None:
        """Called by the book as it creates a command of ``spec`` here: whether the worker will write it
        as soon as its record is durable, as far as can be told now (its actuator idle, the value within
        ``max_step`` of the reported one, no interlock blocking, the rate limit passed, the reported value
        not already there). Then the record carries the first attempt (see ``CommandBook._create``) and
        the book resolves the returned future once it is durable; None otherwise. If the worker does not
        write after all (held, rate limited, cancelled, superseded, timed out), it takes the attempt back
        (:meth:`_release`); a crash before that leaves the attempt counted, as a crash between an attempt
        and its write always did (a set-point is re-checked, then written once; an action fails)."""
        key = (spec.twin, spec.action)
        if key not in self._targets or self._active.get(key) or command in self._claims:
            return None
        if spec.max_step is not None and isinstance(value, int | float):
            reported = self._reported_value(spec)
            if isinstance(reported, int | float) and abs(value - reported) > spec.max_step:
                return None
        if self._clock_ms() < self._last_write_ms.get(key, 0) + int(spec.min_interval_s * 1000):
            return None
        if spec.field and value is not None and self._converged_to(spec, value):
            return None
        if any(self._interlock(lock) for lock in spec.interlocks):
            return None
        claim: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claims[command] = claim
        claim.add_done_callback(functools.partial(self._forget_claim, command))
        return claim

    def _forget_claim(self, command: CommandId, claim: asyncio.Future[None]) -> None:
        """A claim the book cancelled (its record was never made) is no claim."""
        if claim.cancelled() and self._claims.get(command) is claim:
            del self._claims[command]

    async def _release(self, command: CommandId) -> None:
        """Takes back the attempt the record was created with, when the worker does not write now."""
        if self._claims.pop(command, None) is not None:
            await asyncio.shield(self._stage(record_twin(command), {CLAIMED: 0}))

    def interlocked(self, spec: ActuatorSpec) -> str:
        """Why the actuator's interlocks block now ("" when none does): auto-correction asks before it
        issues a command (the same policy as any command's)."""
        return "; ".join(
            f"interlock {lock.label}: {why}" for lock in spec.interlocks if (why := self._interlock(lock))
        )

    def _reported(self, twin: str) -> None:
        """An actuated twin changed: wakes the workers of its actuators, except one waiting for its field
        to converge while it has not (one look-up per waiting command, no task woken for nothing)."""
        for key in self._keys_of.get(twin, ()):
            if key not in self._awaiting or self._converged_to(self._by_key[key], self._awaiting[key]):
                self._nudges[key].set()

    def _track(self, command: CommandId, resumed: bool = False, known_only: bool = False) -> None:
        if command in self._finished:
            return
        known = self._tracked.get(command)
        if known is not None and command in self._active.get(known, {}):
            self._wake[known].set()
            # A cancel request wakes its worker now. Not the executor's own commits (attempts, marks,
            # held): a worker waiting for its adapter would be woken by each one it makes, a spin, and one
            # that starved the loop when the commits complete at once (the log off).
            if self.store.get(record_twin(command), CANCEL) is not None:
                self._nudges[known].set()
            return
        record = self._record(command)
        if record is None or record.executor != self.node_id:
            return
        key = (record.twin, record.action)
        if key not in self._by_key and not record.terminal:
            if not known_only:  # refused once, from the feed
                self._by_key_missing(record)
            return
        active = self._active.setdefault(key, {})
        if record.terminal:
            active.pop(command, None)
            self._tracked.pop(command, None)
            if key in self._nudges:
                self._nudges[key].set()
            sent = record.marks.get(State.SENT)
            if sent is not None:
                self._last_write_ms[key] = max(self._last_write_ms.get(key, 0), sent.ms)
            return
        if command not in active:
            if resumed and (record.attempts > 0 or record.marks):  # work in flight at a crash
                self.stats.resumed += 1
            active[command] = (record.issued_ms, command)
            self._tracked[command] = key
        sent = record.marks.get(State.SENT)
        if sent is not None:
            self._last_write_ms[key] = max(self._last_write_ms.get(key, 0), sent.ms)
        self._wake.setdefault(key, asyncio.Event()).set()
        self._nudges[key].set()  # a newer command supersedes the one its worker waits on

    def _by_key_missing(self, record: CommandRecord) -> None:
        # A record naming this node for an actuator its config lacks: refused once, in the loop.
        reason = f"node {self.node_id} executes no actuator {record.action!r} of {record.twin!r} (config)"
        task = asyncio.get_running_loop().create_task(self._finish(record, State.REJECTED, reason))
        task.add_done_callback(_log_failure)

    async def _desired(self, twin: str) -> None:
        """A desired value (written here or replicated) on an actuated field becomes its command."""
        for spec in self.specs:
            if spec.twin != twin or not spec.desired:
                continue
            values = intents(self.store, twin, spec.field + DESIRED_SUFFIX)
            if not values:
                continue
            try:
                command = await self.book.desired(spec, values[-1])
            except DrsdtpError as exc:
                log.warning("desired %s/%s: no command: %s", twin, spec.field, exc)
                continue
            if command is not None:
                self._track(command)

    # ----- one actuator -----------------------------------------------------------------------------------

    async def _worker(self, spec: ActuatorSpec) -> None:
        key = (spec.twin, spec.action)
        wake = self._wake[key]
        while True:
            await wake.wait()
            wake.clear()
            while True:
                active = self._active.get(key, {})
                if not active:
                    break
                order = sorted(active.values())
                if spec.field:
                    # A newer value supersedes every older one still waiting.
                    newest = order[-1][1]
                    for _, older in order[:-1]:
                        await self._supersede(older, newest)
                    command = newest
                else:
                    command = order[0][1]
                try:
                    await self._execute(spec, command)
                except _Done:
                    pass
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("executor %s: command %s", spec.label, command)
                    await asyncio.sleep(1.0)  # a bug must not spin; the record is retried
                    continue
                active.pop(command, None)
                self._tracked.pop(command, None)

    async def _supersede(self, older: CommandId, newest: CommandId) -> None:
        record = self._record(older)
        if record is None:
            return
        self._active.get((record.twin, record.action), {}).pop(older, None)
        if not record.terminal:
            with contextlib.suppress(_Done):
                await self._finish(record, State.SUPERSEDED, f"superseded by the newer command {newest}")

    # ----- one command ------------------------------------------------------------------------------------

    def _read(self, command: CommandId) -> CommandRecord:
        record = self._record(command)
        assert record is not None  # tracked records exist
        return record

    async def _checkpoint(
        self, spec: ActuatorSpec, command: CommandId, what: str | Callable[[], str]
    ) -> CommandRecord:
        """The record as it is now, unless it was cancelled, superseded or ran out of time (then written
        and ``_Done`` raised)."""
        record = self._read(command)
        if record.terminal:
            raise _Done
        if record.cancel is not None:
            by = record.cancel.node or "anonymous"
            await self._finish(record, State.CANCELLED, f"cancelled by {by}: {record.cancel.reason}")
        if spec.field:
            active = self._active.get((spec.twin, spec.action), {})
            newer = [c for (ms, c) in active.values() if (ms, c) > (record.issued_ms, command)]
            if newer:
                await self._finish(record, State.SUPERSEDED, f"superseded by the newer command {max(newer)}")
        if self._clock_ms() >= record.deadline_ms:
            said = what if isinstance(what, str) else what()  # built only when it is said
            await self._finish(record, State.TIMED_OUT, f"deadline passed {said}")
        return record

    async def _execute(self, spec: ActuatorSpec, command: CommandId) -> None:
        record = await self._checkpoint(spec, command, "before it was written")
        resumed = record.attempts > 0 and command not in self._claims  # a claim's attempt is not sent yet
        if spec.field and self._converged(spec, record):
            if resumed:
                self.stats.skipped_rewrites += 1
            reason = "reported value already within tolerance" + (
                " after a restart: not written again" if resumed else ": nothing to write"
            )
            await self._finish(record, State.APPLIED, reason)
        if resumed and not spec.field:
            # An action has no reported field to check: repeating it could do it twice. At most once.
            await self._finish(
                record,
                State.FAILED,
                f"interrupted by a restart after {record.attempts} attempt(s) that may have reached the "
                "device; an action is not repeated (nothing on the twin tells whether it ran)",
            )
        if resumed and spec.field:
            # A write may have reached the device before a crash: give its echo one ack timeout first.
            record = await self._wait_converged(spec, command, min(spec.ack_timeout_s, self._left_s(record)))
        await self._check_safety(spec, command)
        await self._rate_limit(spec, command)
        outcome = await self._write(spec, command)
        record = self._read(command)
        if outcome.status == WriteStatus.REJECTED:
            await self._finish(record, State.REJECTED, f"the device refused it: {outcome.detail}")
        now = self._clock_ms()
        steps = [_Step(State.SENT, f"written to {self._target(spec).label}", now)]
        if outcome.status == WriteStatus.ACKNOWLEDGED:
            steps.append(_Step(State.ACKNOWLEDGED, outcome.detail or "acknowledged by the device", now))
        self._unwritten[command] = (steps, {RESULT: outcome.detail[:1000]} if outcome.detail else {})
        if not spec.field:
            how = "acknowledged" if outcome.status == WriteStatus.ACKNOWLEDGED else "delivered (no ack)"
            await self._finish(self._read(command), State.APPLIED, f"{how} by {self._target(spec).label}")
        # The write's marks and its outcome in one commit when the echo is quick; else the marks on their
        # own (durable before the wait goes on: a state shown is never lost to a crash), then the outcome.
        await self._wait_converged(spec, command, ECHO_GRACE_S)
        await self._move(command)
        await self._wait_converged(spec, command, None)  # until applied, or the deadline's timed_out
        raise AssertionError("unreachable")

    def _divergence(self, spec: ActuatorSpec, record: CommandRecord) -> str:
        reported = self._reported_value(spec)
        shown = "nothing" if reported is None else f"{reported!r}"
        within = f"not within {self._tolerance(spec):g} of {record.value!r}"
        return f"with the reported {spec.field} at {shown} ({within})"

    async def _wait_converged(
        self, spec: ActuatorSpec, command: CommandId, for_s: float | None
    ) -> CommandRecord:
        """Waits for the reported field to converge (-> applied, raises _Done) for ``for_s`` seconds (None:
        until the deadline, which the checkpoint settles). Returns the record when the time is up."""
        loop = asyncio.get_running_loop()
        until = None if for_s is None else loop.time() + for_s
        key = (spec.twin, spec.action)
        try:
            while True:
                record = await self._checkpoint(
                    spec, command, lambda: self._divergence(spec, self._read(command))
                )
                if self._converged(spec, record):
                    reported = self._reported_value(spec)
                    await self._finish(record, State.APPLIED, f"reported {spec.field} = {reported!r}")
                if until is not None and loop.time() >= until:
                    return record
                if record.value is not None:
                    self._awaiting[key] = record.value  # a reported change wakes it once converged
                await self._pause(record, until)
        finally:
            self._awaiting.pop(key, None)

    async def _pause(self, record: CommandRecord, until: float | None) -> None:
        await self._release(record.id)  # not written now: its claimed attempt is taken back
        loop = asyncio.get_running_loop()
        left = max(0.0, (record.deadline_ms - self._clock_ms()) / 1000)
        wait = min(POLL_S, left + 0.001)
        if until is not None:
            wait = min(wait, max(0.0, until - loop.time()))
        await self._nudged((record.twin, record.action), wait)

    async def _nudged(self, key: tuple[str, str], wait_s: float) -> None:
        """Waits until the actuator's worker is nudged or ``wait_s`` passed. A nudge while the worker ran
        is not lost: the event stays set, and the wait returns at once (the worker re-checks)."""
        nudge = self._nudges[key]
        if nudge.is_set():
            await asyncio.sleep(0)  # a turn for the rest of the loop: a re-checking worker never starves it
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await nudge.wait()
        nudge.clear()

    async def _check_safety(self, spec: ActuatorSpec, command: CommandId) -> None:
        record = self._read(command)
        try:
            spec.check_value(record.value)
        except InvalidValueError as exc:
            await self._finish(record, State.REJECTED, str(exc))
        if spec.max_step is not None and isinstance(record.value, int | float):
            reported = self._reported_value(spec)
            if isinstance(reported, int | float) and abs(record.value - reported) > spec.max_step:
                await self._finish(
                    record,
                    State.REJECTED,
                    f"a step from the reported {reported:g} to {record.value:g} is larger than max_step "
                    f"{spec.max_step:g}",
                )
        held = ""
        while True:
            record = await self._checkpoint(
                spec, command, f"while held: {held}" if held else "before the write"
            )
            blocking = [(lock, why) for lock in spec.interlocks if (why := self._interlock(lock))]
            refused = [f"interlock {lock.label}: {why}" for lock, why in blocking if lock.policy == "refuse"]
            if refused:
                await self._finish(record, State.REJECTED, "; ".join(refused))
            now_held = "; ".join(f"interlock {lock.label}: {why}" for lock, why in blocking)
            if now_held != held:
                if now_held and not held:
                    self.stats.held += 1
                    if self._audit is not None:
                        await self._audit(record, "held", record.actor or "system", now_held)
                held = now_held
                await self._apply(record, {HELD: held})
            if not held:
                return
            await self._pause(record, None)

    def _interlock(self, lock: Interlock) -> str:
        """Why the interlock blocks now ("" when it does not)."""
        q = self._health.field_quality(lock.twin, lock.field)
        if q is None:
            return "no health known for the field yet"
        why = []
        if q.quality < lock.min_quality:
            detail = f" ({', '.join(q.reasons)})" if q.reasons else ""
            why.append(f"quality {q.quality:.2f} < {lock.min_quality:g}{detail}")
        if lock.max_age_s is not None and (q.age_s is None or q.age_s > lock.max_age_s):
            age = "unknown" if q.age_s is None else f"{q.age_s:.1f} s"
            why.append(f"reported value age {age} > {lock.max_age_s:g} s")
        return "; ".join(why)

    async def _rate_limit(self, spec: ActuatorSpec, command: CommandId) -> None:
        key = (spec.twin, spec.action)
        while True:
            record = await self._checkpoint(spec, command, "while rate limited")
            due = self._last_write_ms.get(key, 0) + int(spec.min_interval_s * 1000)
            if self._clock_ms() >= due:
                return
            await self._release(command)
            await self._nudged(key, min((due - self._clock_ms()) / 1000, POLL_S))
            del record

    async def _write(self, spec: ActuatorSpec, command: CommandId) -> WriteOutcome:
        writer, target = self._targets[spec.twin, spec.action]
        backoff = spec.retry_backoff_s
        errors: list[str] = []
        waiting = ""  # the adapter has no session: nothing was sent, no retry is spent
        attempt = 1
        while attempt <= spec.retries + 1:
            if waiting:
                what = f"waiting for the adapter ({waiting})"
            elif errors:
                what = f"after {attempt - 1} failed attempts ({errors[-1]})"
            else:
                what = "before the write"
            record = await self._checkpoint(spec, command, what)
            twin = record_twin(command)
            # Durable before the write: after a crash the executor knows a write may have reached the device.
            claim = self._claims.pop(command, None)
            if claim is not None:  # the record was created with this attempt
                await asyncio.shield(claim)
                sent = record.attempts
            else:
                await self._commit(self.store.increment(twin, ATTEMPTS), [twin], "local")
                sent = record.attempts + 1
            request = WriteRequest(
                command=command,
                twin=record.twin,
                action=record.action,
                field=record.field,
                value=record.value,
                args=tuple(record.args),
                attempt=sent,
                timeout_s=min(spec.ack_timeout_s, max(0.001, self._left_s(record))),
            )
            try:
                async with asyncio.timeout(request.timeout_s + 1.0):
                    outcome = await writer.write(target, request)
                self._wrote(spec)
                return outcome
            except NotConnectedError as exc:
                await self._commit(self.store.increment(twin, ATTEMPTS, -1), [twin], "local")
                self.stats.not_connected += 1
                waiting = str(exc)
                await self._pause(record, None)
                continue
            except (OSError, TimeoutError) as exc:  # AdapterError is a ConnectionError
                self._wrote(spec)
                self.stats.write_errors += 1
                waiting = ""
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                log.info("executor %s: command %s attempt %d: %s", spec.label, command, attempt, errors[-1])
            if attempt <= spec.retries:
                left = self._left_s(self._read(command))
                await asyncio.sleep(max(0.0, min(backoff, left)))
                backoff *= 2
            attempt += 1
        record = self._read(command)
        await self._finish(
            record, State.FAILED, f"no write reached {target.label} in {len(errors)} attempts: {errors[-1]}"
        )
        raise AssertionError("unreachable")

    def _wrote(self, spec: ActuatorSpec) -> None:
        self._last_write_ms[spec.twin, spec.action] = self._clock_ms()
        self.stats.writes += 1

    # ----- reading the twin -------------------------------------------------------------------------------

    def _reported_value(self, spec: ActuatorSpec) -> object:
        entry = self.store.entry(spec.twin, spec.field) if spec.twin in self.store else None
        return None if entry is None else entry[0]

    def _tolerance(self, spec: ActuatorSpec) -> float:
        return spec.tolerance if spec.tolerance is not None else 1e-9

    def _converged(self, spec: ActuatorSpec, record: CommandRecord) -> bool:
        return self._converged_to(spec, record.value)

    def _converged_to(self, spec: ActuatorSpec, value: Value | None) -> bool:
        reported = self._reported_value(spec)
        if reported is None or value is None:
            return False
        if isinstance(value, bool) or isinstance(reported, bool):
            as_bool = bool(reported) if isinstance(reported, int | float) else reported
            return as_bool == value
        if isinstance(value, int | float) and isinstance(reported, int | float):
            return math.isfinite(reported) and abs(reported - value) <= self._tolerance(spec)
        return reported == value

    def _left_s(self, record: CommandRecord) -> float:
        return (record.deadline_ms - self._clock_ms()) / 1000

    def _target(self, spec: ActuatorSpec) -> WriteTarget:
        return self._targets[spec.twin, spec.action][1]

    # ----- writing the record -----------------------------------------------------------------------------

    async def _apply(self, record: CommandRecord, fields: dict[str, str]) -> None:
        await asyncio.shield(self._stage(record_twin(record.id), dict(fields)))

    def _stage(self, twin: str, fields: dict[str, RecordValue]) -> asyncio.Future[None]:
        """Writes ``fields`` into the record twin with every other record write of this loop step: one
        delta (:meth:`Store.set_many_twins`) and one append to the log at the end of the step, so a batch's
        commands reaching their outcomes together cost one log record, not one each. Returns what resolves
        once they are durable (the caller awaits it before it acts on, or shows, what it wrote; until the
        step ends the store does not show them, and nothing of this command reads them before)."""
        if self._staged is None:
            loop = asyncio.get_running_loop()
            self._staged = ({}, loop.create_future())
            loop.call_soon(self._flush)
        items, durable = self._staged
        items.setdefault(twin, {}).update(fields)  # a second write of a twin in one step: the later wins
        self.stats.record_writes += 1
        return durable

    def _flush(self) -> None:
        """The step's staged record writes as one delta, appended to the log (``Node.start_commit``)."""
        if self._staged is None:
            return
        items, durable = self._staged
        self._staged = None
        try:
            deltas = [self.store.set_many_twins(list(items.items()))]
        except Exception as exc:  # a fault of the node's: each record on its own, so one cannot fail all
            log.warning("executor: %d command records not written in one delta: %s", len(items), exc)
            deltas = []
            for twin, fields in items.items():
                try:
                    deltas.append(self.store.set_many(twin, fields))
                except Exception as one:
                    log.error("executor: command record %s not written: %s", twin, one)
        if not deltas:
            durable.set_exception(DrsdtpError(f"executor: {len(items)} command records not written"))
            durable.exception()  # retrieved: a caller that did not wait is no error
            return
        self.stats.record_appends += len(deltas)
        begun = [self._begin(delta, list(items), "local") for delta in deltas]
        settled = begun[0] if len(begun) == 1 else asyncio.gather(*begun)
        settled.add_done_callback(functools.partial(_settle, durable))

    def _fold(
        self, record: CommandRecord, steps: list[_Step]
    ) -> tuple[dict[str, str | float | int | bool | bytes], list[_Step]]:
        """The fields that move ``record`` through ``steps`` (with the write's unwritten marks first), and
        the steps that moved it."""
        before, extra = self._unwritten.pop(record.id, ([], {}))
        fields: dict[str, str | float | int | bool | bytes] = dict(extra)
        current, done = record.state, []
        for step in [*before, *steps]:
            moved = transition_fields(current, step.state, Mark(step.ms, self.node_id, step.reason))
            if moved is not None:
                fields.update(moved)
                current = step.state
                done.append(step)
        return fields, done

    async def _move(self, command: CommandId) -> None:
        """Commits the write's marks not committed yet (durable before this returns)."""
        record = self._read(command)
        fields, done = self._fold(record, [])
        if fields:
            durable = self._stage(record_twin(command), fields)
            await self._audit_steps(record, done, durable)
            await asyncio.shield(durable)

    async def _audit_steps(
        self, record: CommandRecord, done: list[_Step], durable: asyncio.Future[None]
    ) -> None:
        """One audit record for the states one commit reached (queued now, written once it is durable):
        the last state names the event, the ones it went through are in its reason."""
        if self._audit is None or not done:
            return
        last, passed = done[-1], "; ".join(f"{s.state}: {s.reason}" for s in done[:-1])
        reason = f"{last.reason} (after {passed})" if passed else last.reason
        await self._audit(record, str(last.state), record.actor or "system", reason, durable)

    async def _finish(self, record: CommandRecord, to: State, reason: str) -> None:
        """Writes a terminal state (with its reason, and the write's marks not committed yet) and raises
        ``_Done``."""
        fields, done = self._fold(record, [_Step(to, reason, self._clock_ms())])
        reached = bool(done) and done[-1].state == to
        twin = record_twin(record.id)
        if self._claims.pop(record.id, None) is not None:  # never written: the claimed attempt goes back
            if not fields:
                await asyncio.shield(self._stage(twin, {CLAIMED: 0}))
            else:
                fields[CLAIMED] = 0
        if fields:
            if record.held and reached:
                fields[HELD] = ""
            if reached:  # counted before a waiter wakes
                self.stats.outcomes[str(to)] = self.stats.outcomes.get(str(to), 0) + 1
            durable = self._stage(twin, fields)
            await self._audit_steps(record, done, durable)  # in the trail when waiters wake
            await asyncio.shield(durable)
            log.info("command %s (%s %s): %s: %s", record.id, record.twin, record.action, to, reason)
            self._finished[record.id] = None
            if len(self._finished) > FINISHED_KEPT:
                self._finished.popitem(last=False)
        self._active.get((record.twin, record.action), {}).pop(record.id, None)
        self._tracked.pop(record.id, None)
        raise _Done


def _settle(durable: asyncio.Future[None], begun: asyncio.Future[object]) -> None:
    """Resolves the step's future as its append(s) settle: durable, or the log's error."""
    if durable.done():
        return
    if begun.cancelled():
        durable.cancel()
    elif (exc := begun.exception()) is not None:
        durable.set_exception(exc)
        durable.exception()  # retrieved: a caller that did not wait is no error
    else:
        durable.set_result(None)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and not isinstance(task.exception(), _Done | None):
        log.error("executor: %s", task.exception())
