"""Commands in the node: the command book every node has, the audit of command events, the hook that
turns an application's desired value of an actuated field into a command (with the caller's identity), and
the executor (:mod:`drsdtp.actions.executor`) of the actuators this node owns, as a background service.

The executor's health view (:class:`NodeHealth`) is the node's: the twin intelligence's field health when
the field's twin has a model here, else the replicated ``<field>.q``; a field with neither has no known
health, and an interlock on it holds (or refuses) rather than act blind.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drsdtp.actions import CommandBook, CommandLimits, CommandRecord, parse_actuators
from drsdtp.actions.actuators import ActuatorSpec
from drsdtp.actions.correct import CORRECTION, Corrector, Verdict
from drsdtp.actions.executor import Executor, FieldQuality
from drsdtp.adapters.write import Writer, writer_of
from drsdtp.api.node import AuditEntry
from drsdtp.core import DESIRED_SUFFIX, intents
from drsdtp.errors import DrsdtpError
from drsdtp.history.audit import Change, Readings, Via
from drsdtp.intelligence.results import DivergenceKind
from drsdtp.lifecycle import BackgroundService
from drsdtp.node.snapshots import CommandEvent

if TYPE_CHECKING:
    from drsdtp.node.node import Node

__all__ = ["Actuation", "NodeHealth"]

log = logging.getLogger(__name__)

_Audit = tuple[CommandRecord, str, str, str, "asyncio.Future[None] | None"]
MAX_PENDING_AUDITS = 10_000  # command events queued for the audit trail; beyond, the executor waits
_VIA: dict[str, Via] = {"api": "api", "cli": "cli", "desired": "api", "rule": "rule"}


def _event(record: CommandRecord, event: str, actor: str, reason: str) -> CommandEvent:
    """A command event's line in the audit trail: the value with its issue, why with every event."""
    name = record.field or record.action
    changes = {name: Change(new=record.value)} if record.value is not None and event == "issued" else {}
    text = f"{event}: {reason}" if reason else event
    return CommandEvent(actor, record.twin, changes, text, _VIA.get(record.origin, "system"), record.id)


class NodeHealth:
    """A field's quality and age as this node knows them (see the module doc)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def field_quality(self, twin: str, field: str) -> FieldQuality | None:
        store = self.node.store
        entry = store.entry(twin, field) if twin in store else None
        age_s = None if entry is None else max(0.0, time.time() - (entry[1] >> 16) / 1000)
        engine = self.node.intelligence._engine  # None: no modelled twin yet, nothing to ask
        if engine is not None:
            try:
                health = engine.field_health(twin, field)
            except (DrsdtpError, KeyError, IndexError):
                health = None
            if health is not None:
                return FieldQuality(health.quality, health.reasons, age_s)
        q = store.get(twin, f"{field}.q") if entry is not None else None
        if isinstance(q, float | int) and not isinstance(q, bool):
            return FieldQuality(float(q), ("replicated quality",), age_s)
        return None


class Actuation(BackgroundService):
    name = "executor"

    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.actuators = parse_actuators(config.actuators)
        c = config.commands
        self.book = CommandBook(
            node.store,
            node.commit,
            node_id=config.node_id,
            actuators=self.actuators,
            changes=node.feed,
            limits=CommandLimits(c.max_records, c.default_deadline_s, c.max_deadline_s),
            audit=self.audit,
            begin=node.start_commit,
        )
        self.health = NodeHealth(node)
        self.executor = Executor(
            node.store,
            node.commit,
            node_id=config.node_id,
            actuators=self.actuators,
            book=self.book,
            changes=node.feed,
            writer=self._writer,
            health=self.health,
            audit=self.audit,
            begin=node.start_commit,
        )
        node.appended_hooks.append(self.executor.on_appended)
        # Auto-correction of the actuators this node executes (alarms: the node's, made after this service).
        self.corrector = Corrector(
            node.store,
            specs=self.executor.specs,
            book=self.book,
            health=self.health,
            busy=self.executor.busy,
            interlocked=self.executor.interlocked,
            alarms=lambda: alerting.alarm_book if (alerting := getattr(node, "alerting", None)) else None,
            verdicts=self._verdicts,
            history=lambda twin, action, since_ms: self.book.issued_since(twin, action, CORRECTION, since_ms),
        )
        if self.corrector:
            node.appended_hooks.append(self.corrector.on_appended)
        # Command events reach the audit trail in order but off the command's path: the trail holds its
        # lock through its periodic fsync, which a command must not wait behind (the lines are flushed
        # within the trail's flush delay either way).
        self._audits: collections.deque[_Audit] = collections.deque()
        self._audit_more = asyncio.Event()
        self._audit_room = asyncio.Event()  # set as each queued line is written
        self.executor.bind()  # a write target its adapter refuses stops the node at start, naming the key
        self._register_metrics(node)

    def _register_metrics(self, node: Node) -> None:
        m, book, st = node.metrics, self.book, self.executor.stats
        m.add_counter("drsdtp_commands_issued", "Commands this node took (API, CLI, rules, desired).",
                      lambda: book.issued)  # fmt: skip
        m.add_counter("drsdtp_commands_repeats", "Command requests answered by an idempotency key's command.",
                      lambda: book.repeats)  # fmt: skip
        m.add_counter("drsdtp_commands_refused_over_cap", "Commands refused over commands.max_records.",
                      lambda: book.refused_over_cap)  # fmt: skip
        m.add_labelled_counter(
            "drsdtp_commands_outcomes", "Commands this node executed, by terminal state.", ("state",),
            lambda: {(state,): float(n) for state, n in st.outcomes.items()},
        )  # fmt: skip
        m.add_labelled_counter(
            "drsdtp_commands_batch_refusals",
            "Commands of IssueCommands / WaitCommands answered with an error, by status.", ("code",),
            lambda: {(code,): float(n) for code, n in book.batch_refusals.items()},
        )  # fmt: skip
        m.add_counter("drsdtp_command_writes", "Write attempts sent to adapters.", lambda: st.writes)
        m.add_counter("drsdtp_command_write_errors", "Write attempts that did not reach the device.",
                      lambda: st.write_errors)  # fmt: skip
        m.add_counter("drsdtp_command_writes_not_connected",
                      "Writes not sent because the adapter had no session (no retry spent).",
                      lambda: st.not_connected)  # fmt: skip
        m.add_counter("drsdtp_commands_resumed", "Unfinished commands found at start (after a crash).",
                      lambda: st.resumed)  # fmt: skip
        m.add_counter("drsdtp_commands_not_rewritten",
                      "Resumed commands already converged: applied without a second write.",
                      lambda: st.skipped_rewrites)  # fmt: skip
        m.add_counter("drsdtp_commands_held", "Commands an interlock held.", lambda: st.held)
        cs = self.corrector.stats
        m.add_counter("drsdtp_corrections", "Auto-corrections issued (minor divergences from desired).",
                      lambda: cs.corrections)  # fmt: skip
        m.add_counter("drsdtp_corrections_critical",
                      "Divergences beyond minor_within: an alarm raised, nothing written.",
                      lambda: cs.critical)  # fmt: skip
        m.add_counter("drsdtp_corrections_blocked",
                      "Divergences not corrected: the reported field's quality was low or unknown.",
                      lambda: cs.blocked)  # fmt: skip
        m.add_counter("drsdtp_corrections_over_rate", "Divergences not corrected: max_per_hour reached.",
                      lambda: cs.over_rate)  # fmt: skip
        m.add_counter("drsdtp_corrections_verdicts",
                      "Verdicts auto-correction took (rules' correct actions, model divergence alerts).",
                      lambda: cs.verdicts)  # fmt: skip
        m.add_counter("drsdtp_corrections_refused", "Corrections the command book refused.",
                      lambda: cs.errors)  # fmt: skip

    def _verdicts(self, spec: ActuatorSpec) -> list[Verdict]:
        """What says now that the actuator's field diverges: the alarms of rules with a ``correct`` action
        on it (replicated: raised on any node), and with ``on_divergence`` the twin intelligence's model
        divergence alerts naming the field."""
        out = []
        alerting = getattr(self.node, "alerting", None)
        if alerting is not None:
            for rule in alerting.correcting_rules(spec.twin, spec.action):
                record = alerting.alarm_book.find(rule, spec.twin)
                if record is not None and record.active:
                    out.append(Verdict(f"rule {rule} #{record.count}", f"rule {rule} fired"))
        engine = self.node.intelligence._engine
        if spec.correct is not None and spec.correct.on_divergence and engine is not None:
            try:
                alerts = engine.divergence(spec.twin)
            except (DrsdtpError, KeyError):  # no model for the twin here
                alerts = ()
            for alert in alerts:
                if spec.field in alert.fields:
                    out.append(
                        Verdict(
                            f"divergence {alert.kernel}/{alert.variable} {alert.kind.value}",
                            f"model {alert.kernel} diverges on {alert.variable}: {alert.kind.value}",
                            blames_sensor=alert.kind == DivergenceKind.SENSOR_FAULT,
                        )
                    )
        return out

    def _writer(self, adapter: str) -> Writer | None:
        runner = self.node.intake.service.runners.get(adapter)
        return None if runner is None else writer_of(runner.adapter)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._audit_writer(), name="command audit")
            if self.corrector:
                tg.create_task(self.corrector.run(), name="autocorrect")
            await self.executor.run()

    async def stopped(self) -> None:
        self.book.waiters.close()  # no task outlives the service (a wait from here on stops it as it ends)
        await self._drain_audits()  # what the executor queued before it stopped

    async def audit(
        self,
        record: CommandRecord,
        event: str,
        actor: str,
        reason: str,
        after: asyncio.Future[None] | None = None,
    ) -> None:
        """Queues one line per command event for the node's audit trail (``ref``: the command id), written
        once ``after`` (the commit that reached that state) is durable; not if it failed."""
        while len(self._audits) >= MAX_PENDING_AUDITS:
            self._audit_room.clear()
            await self._audit_room.wait()
        self._audits.append((record, event, actor, reason, after))
        self._audit_more.set()

    async def audits_written(self) -> None:
        """Returns once every command event queued so far is in the audit trail (a read shows them all)."""
        while self._audits and self._group is not None:  # a stopped service drained them already
            self._audit_room.clear()
            await self._audit_room.wait()

    async def _audit_writer(self) -> None:
        while True:
            await self._audit_more.wait()
            self._audit_more.clear()
            await self._drain_audits()

    async def _drain_audits(self) -> None:
        """Writes the queued lines in order: each once its commit is durable (dropped if it failed), every
        line ready at once in one write (one hold of the trail's lock for a batch's or a burst's events)."""
        while self._audits:
            head = self._audits[0]
            if head[4] is not None and not head[4].done():
                await asyncio.wait([head[4]])  # its outcome is read below
            ready: list[CommandEvent] = []
            taken = 0
            for record, event, actor, reason, after in self._audits:
                if after is not None:
                    if not after.done():
                        break
                    if after.cancelled() or after.exception() is not None:
                        log.error("audit: command %s %s not recorded: its commit failed", record.id, event)
                        taken += 1
                        continue
                ready.append(_event(record, event, actor, reason))
                taken += 1
            try:
                if ready:
                    await self.node.snapshots.audit_commands(ready)
            except DrsdtpError as exc:  # a disk failed: said once per write, the commands go on
                log.error("audit: %d command events not recorded: %s", len(ready), exc)
            for _ in range(taken):  # after the write: a stop in between drains them again
                self._audits.popleft()
            self._audit_room.set()

    async def on_writes(self, entries: Sequence[AuditEntry]) -> None:
        """Desired values an application wrote here, on actuated fields: each becomes a command now, with
        the caller as its actor (the executor would also create it from the replicated value, without)."""
        for entry in entries:
            if isinstance(entry.changes, Readings):
                continue  # numeric readings (a columns write): never a desired value
            for name in entry.changes:
                if not name.endswith(DESIRED_SUFFIX) or not entry.changes[name].new:
                    continue
                spec = self.actuators.for_desired(entry.twin, name[: -len(DESIRED_SUFFIX)])
                if spec is None:
                    continue
                values = intents(self.node.store, entry.twin, name)
                if not values:
                    continue
                try:
                    await self.book.desired(spec, values[-1], actor=entry.actor, reason=entry.reason)
                except DrsdtpError as exc:  # the write itself stands; the executor may still pick it up
                    log.warning("desired %s/%s: no command: %s", entry.twin, name, exc)
