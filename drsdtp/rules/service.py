"""Rules in the node: a periodic task evaluates every rule (:class:`~drsdtp.rules.engine.RuleEngine`) and
carries out what fired: raise or clear the alarm (:mod:`drsdtp.alarms`), then the rule's actions.

Evaluation runs on its own task, every ``alerting.period_s``; ingest never waits for it (it reads the store
as it is). A rule whose evaluation or action fails is reported (``drsdtp rules``, the log), counted
(``drsdtp_rule_errors``) and sits out a while; the other rules go on.

Several nodes holding a twin evaluate its rules each. The alarm record de-duplicates their raises (one
episode), and the actions of an alarm's rule run on the node whose raise or clear changed the record; a
command action's idempotency key names the alarm's episode, so two nodes racing issue one command.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from drsdtp._core import Store
from drsdtp.alarms.book import AlarmBook
from drsdtp.alarms.record import AlarmRecord, alarm_id
from drsdtp.core import DESIRED_SUFFIX, intents
from drsdtp.errors import DrsdtpError
from drsdtp.lifecycle import BackgroundService
from drsdtp.rules.engine import Event, ReadingSource, RuleEngine
from drsdtp.rules.expr import Program
from drsdtp.rules.spec import ActionSpec, RuleSpec

__all__ = ["CommandIssuer", "Notifier", "RuleService", "SamplingControl"]

log = logging.getLogger(__name__)

RELAYOUT_S = 5.0  # how often the twins a rule matches are looked up again (when their number changed)


class CommandIssuer(Protocol):
    """What rules need of :class:`drsdtp.actions.CommandBook`."""

    async def issue_command(
        self,
        twin: str,
        action: str,
        value: Any = None,
        *,
        key: str = "",
        deadline_s: float | None = None,
        actor: str = "anonymous",
        reason: str = "",
        origin: str = "api",
    ) -> str: ...


class Notifier(Protocol):
    """The durable outbox of notifications (:mod:`drsdtp.notify`)."""

    async def enqueue(self, target: str, event: dict[str, Any]) -> None: ...


class SamplingControl(Protocol):
    def set_sampling_interval(self, adapter: str, interval_s: float) -> None:
        """Raises :class:`drsdtp.errors.DrsdtpError` when the adapter is unknown or cannot."""
        ...


Commit = Callable[[bytes, Sequence[str], str], Any]


@dataclass(slots=True)
class RuleStats:
    passes: int = 0
    last_pass_s: float = 0.0
    max_pass_s: float = 0.0
    events: int = 0
    action_errors: int = 0


class RuleService(BackgroundService):
    name = "rules"

    def __init__(
        self,
        rules: Sequence[RuleSpec],
        *,
        store: Store,
        commit: Commit,
        alarms: AlarmBook,
        source: ReadingSource,
        period_s: float,
        node_id: str,
        commands: CommandIssuer | None = None,
        notifier: Notifier | None = None,
        sampling: SamplingControl | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.engine = RuleEngine(rules, source)
        self.store = store
        self._commit = commit
        self.alarms = alarms
        self.source = source
        self.period_s = period_s
        self.node_id = node_id
        self.commands = commands
        self.notifier = notifier
        self.sampling = sampling
        self.time_scale = time_scale
        self.stats = RuleStats()
        self._laid_out_at = -math.inf
        self._twin_count = -1
        self._programs: dict[str, Program] = {}

    @property
    def rules(self) -> list[RuleSpec]:
        return self.engine.rules

    def now_s(self) -> float:
        return time.time() * self.time_scale

    async def run(self) -> None:
        if not self.engine.rules:
            return
        while True:
            await asyncio.sleep(self.period_s)
            await self.run_pass()

    async def run_pass(self) -> None:
        """One evaluation and its consequences (the task calls it every period; tests may too)."""
        started = time.perf_counter()
        mono = time.monotonic()
        self._maybe_layout(mono)
        events = self.engine.evaluate(self.now_s(), mono)
        took = time.perf_counter() - started
        self.stats.passes += 1
        self.stats.last_pass_s = took
        self.stats.max_pass_s = max(self.stats.max_pass_s, took)
        for event in events:
            self.stats.events += 1
            try:
                await self._handle(event)
            except Exception as exc:  # one rule's failing action must not stop the others
                self.stats.action_errors += 1
                index = self.engine.by_name[event.rule.name]
                self.engine.fail(index, f"{event.kind} on {event.twin}: {exc}", time.monotonic())
            await asyncio.sleep(0)  # a burst of events never holds the loop for long

    def _maybe_layout(self, mono: float) -> None:
        if mono - self._laid_out_at < RELAYOUT_S and self._laid_out_at > -math.inf:
            return
        self._laid_out_at = mono
        count = self.store.stats()["twins"]
        if count == self._twin_count:
            return
        self._twin_count = count
        self.engine.layout(self.store.twins(), self._alarm_active)

    def _alarm_active(self, rule: RuleSpec, twin: str) -> bool:
        record = self.alarms.get(alarm_id(rule.name, twin))
        return record is not None and record.active

    # ----- consequences ---------------------------------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        rule = event.rule
        record: AlarmRecord | None = None
        if rule.alarm:
            if event.kind == "raise":
                raised = await self.alarms.raise_alarm(rule.name, event.twin, rule.severity, rule.message)
                record, changed = raised.record, raised.changed
            else:
                cleared = await self.alarms.clear_alarm(rule.name, event.twin, "condition cleared")
                if cleared is None:
                    return
                record, changed = cleared.record, cleared.changed
            if not changed:
                return  # another node got there first: its actions ran there
        errors: list[str] = []
        for action in rule.actions:
            if action.on != event.kind:
                continue
            try:
                await self._act(action, event, record)
            except (DrsdtpError, ValueError, TypeError) as exc:
                errors.append(f"{action.key} ({action.type}): {exc}")
        if errors:
            raise DrsdtpError("; ".join(errors))

    async def _act(self, action: ActionSpec, event: Event, record: AlarmRecord | None) -> None:
        rule, twin = event.rule, event.twin
        if action.type == "notify":
            if self.notifier is None:
                raise DrsdtpError("this node has no notifier")
            await self.notifier.enqueue(action.target, self._payload(event, record))
        elif action.type == "correct":
            pass  # the alarm just raised is the verdict: the executing node's auto-correction acts on it
        elif action.type == "sampling":
            if self.sampling is None:
                raise DrsdtpError("this node cannot change sampling rates")
            self.sampling.set_sampling_interval(action.adapter, action.interval_s)
        elif action.type == "command":
            if self.commands is None:
                raise DrsdtpError("this node takes no commands")
            value = self._value(action, event)
            episode = record.count if record is not None else int(time.time() * 1000)
            await self.commands.issue_command(
                twin,
                action.action,
                value,
                key=f"rule:{rule.name}:{event.kind}:{episode}",
                deadline_s=action.deadline_s,
                actor=f"rule:{rule.name}",
                reason=f"{rule.name} {'fired' if event.kind == 'raise' else 'cleared'}: {rule.when.source}",
                origin="rule",
            )
        else:
            value = self._value(action, event)
            if value is None:
                raise DrsdtpError("set_desired needs a value")
            current = intents(self.store, twin, action.field + DESIRED_SUFFIX)
            if current and current[-1].value == value and len(current) == 1:
                return  # already desired: a second node's rule, or a repeat, writes nothing
            twin_field = action.field + DESIRED_SUFFIX
            delta = self.store.desire(twin, twin_field, value)
            await self._commit(delta, [twin], "local")

    def _value(self, action: ActionSpec, event: Event) -> Any:
        if action.value_expr is None:
            return action.value
        compiled = action.value_expr
        program = self._programs.get(compiled.source)
        if program is None:
            program = self._programs[compiled.source] = Program(compiled)
        import numpy as np

        now_s = self.now_s()
        loads = [
            np.array([event.inputs.get(load, math.nan) if load in event.inputs else
                      self.source.read_one(load, event.twin, now_s)])
            for load in compiled.loads
        ]  # fmt: skip
        consts = [np.array([c]) for c in compiled.constants]
        value = float(np.asarray(program(loads, consts, np.zeros(1))).reshape(-1)[0])
        if not math.isfinite(value):
            raise DrsdtpError(
                f"value_expr {compiled.source!r} is {value} on {event.twin} (an input is missing)"
            )
        return value

    def _payload(self, event: Event, record: AlarmRecord | None) -> dict[str, Any]:
        rule = event.rule
        out: dict[str, Any] = {
            "event": "raised" if event.kind == "raise" else "cleared",
            "rule": rule.name,
            "twin": event.twin,
            "severity": rule.severity,
            "message": rule.message,
            "node": self.node_id,
            "ms": time.time_ns() // 1_000_000,
            "inputs": {
                f"{load.kind}({load.field})" if load.kind != "value" else load.field: v
                for load, v in event.inputs.items()
                if math.isfinite(v)
            },
        }
        if record is not None:
            out["alarm"] = record.id
            out["episode"] = record.count
            out["id"] = (
                f"{record.id}:{record.count}:{out['event']}"  # the same on every node: receivers dedupe
            )
        else:
            out["id"] = f"{alarm_id(rule.name, event.twin)}:{out['ms']}:{out['event']}"
        return out
