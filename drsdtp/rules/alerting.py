"""Rules, alarms and notifications in the node: validation of their config (the node's start and
``check-config`` call :func:`parse_alerting`), and :class:`Alerting`, which builds the alarm book, the
notification outbox and the rule service from narrow parts of the node and registers their metrics.

The rule engine and the notification outbox are built, and their modules imported, only when the config
has ``[[rules]]`` or ``[[notify]]`` (issue 13: idle RSS, about 0.9 MiB of Python heap). The alarm book is
always there: peers replicate alarms and the API lists them."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from drsdtp.alarms.book import AlarmBook
from drsdtp.alarms.record import ALARM_PREFIX, AlarmRecord, alarm_twin
from drsdtp.api.node import AuditEntry
from drsdtp.config import NodeConfig
from drsdtp.errors import ConfigError, DrsdtpError, PreconditionError, UnknownTwinError
from drsdtp.history.audit import Change
from drsdtp.rules.ops import RulesSummary, RuleView
from drsdtp.supervisor import Backoff

if TYPE_CHECKING:
    from drsdtp.intelligence.engine import TwinIntelligence
    from drsdtp.node.node import Node
    from drsdtp.notify.service import NotifyService
    from drsdtp.notify.targets import NotifyTarget
    from drsdtp.rules.engine import RuleStatus
    from drsdtp.rules.service import RuleService
    from drsdtp.rules.spec import ActionSpec, RuleSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["Alerting", "EngineInsights", "parse_alerting"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"


@dataclass(frozen=True, slots=True)
class AlertingSpec:
    rules: tuple[RuleSpec, ...]
    targets: tuple[NotifyTarget, ...]


def parse_alerting(config: NodeConfig) -> AlertingSpec:
    """The ``[[notify]]`` targets and ``[[rules]]`` (a notify action must name a target); ConfigError."""
    if not config.notify and not config.rules:
        return AlertingSpec((), ())  # nothing to parse: the parsers' modules stay unimported
    from drsdtp.notify.targets import parse_targets
    from drsdtp.rules.spec import parse_rules

    targets = parse_targets(config.notify)
    rules = parse_rules(config.rules, [t.name for t in targets])
    actuators = {(a.get("twin"), a.get("action", a.get("field"))) for a in config.actuators}
    for rule in rules:
        for action in rule.actions:
            if action.type == "command" and not any(act == action.action for _, act in actuators):
                raise ConfigError(
                    f"{action.key}.action", f"no [[actuators]] entry has the action {action.action!r}"
                )
            if action.type == "correct":
                _check_correct(config, rule, action)
            if action.type == "sampling" and action.adapter not in {a.get("name") for a in config.adapters}:
                raise ConfigError(f"{action.key}.adapter", f"no adapter named {action.adapter!r}")
    return AlertingSpec(rules, targets)


def _check_correct(config: NodeConfig, rule: RuleSpec, action: ActionSpec) -> None:
    """A correct action names an actuator with auto-correction, on a twin the rule can match."""
    for a in config.actuators:
        if a.get("action", a.get("field")) != action.action or not isinstance(a.get("twin"), str):
            continue
        if any(fnmatch.fnmatchcase(a["twin"], glob) for glob in rule.twins) and a.get("correct"):
            return
    raise ConfigError(
        f"{action.key}.action",
        f"no [[actuators]] entry with the action {action.action!r}, [actuators.correct] and a twin "
        f"matching {', '.join(rule.twins)}",
    )


@runtime_checkable
class AdjustableSampling(Protocol):
    """An adapter whose sampling rate a rule may change (the Modbus adapter's poll interval)."""

    def set_sampling_interval(self, interval_s: float | None) -> None: ...


class AdapterSampling:
    """:class:`drsdtp.rules.service.SamplingControl` over the node's adapters (by name)."""

    def __init__(self, adapters: Callable[[], Mapping[str, object]]) -> None:
        self._adapters = adapters

    def set_sampling_interval(self, adapter: str, interval_s: float) -> None:
        found = self._adapters().get(adapter)
        if found is None:
            raise UnknownTwinError(f"no adapter {adapter!r} runs on this node")
        if not isinstance(found, AdjustableSampling):
            kind = getattr(found, "kind", type(found).__name__)
            raise PreconditionError(f"adapter {adapter!r} ({kind}) cannot change its sampling rate")
        found.set_sampling_interval(interval_s)


class EngineInsights:
    """:class:`drsdtp.rules.inputs.Insights` from the intelligence engine's last pass."""

    def __init__(self, engine: Callable[[], TwinIntelligence | None]) -> None:
        self._engine = engine

    @property
    def engine(self) -> TwinIntelligence | None:
        return self._engine()  # a reload replaces it

    def rows(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.intp]:
        out = np.full(len(pairs), -1, np.intp)
        if self.engine is None:
            return out
        for i, (twin, field) in enumerate(pairs):
            try:
                out[i] = self.engine.row(twin, field)
            except (DrsdtpError, KeyError, IndexError):
                continue
        return out

    def _take(self, rows: npt.NDArray[np.intp], column: Any, missing: float) -> FloatArray:
        out = np.full(len(rows), missing)
        if column is None:
            return out
        values = np.asarray(column, np.float64)
        ok = (rows >= 0) & (rows < len(values))
        out[ok] = values[rows[ok]]
        return out

    def anomaly(self, rows: npt.NDArray[np.intp]) -> FloatArray:
        engine = self.engine
        last = engine.last if engine is not None else None
        return self._take(rows, last.health.screen.anomaly if last is not None else None, np.nan)

    def time_to_threshold(self, rows: npt.NDArray[np.intp]) -> FloatArray:
        engine = self.engine
        last = engine.last if engine is not None else None
        if last is None:
            return np.full(len(rows), np.inf)
        eta = np.fmin(last.forecast.eta_high_s, last.forecast.eta_low_s)  # NaN only where both are
        out = self._take(rows, eta, np.inf)
        return np.where(np.isnan(out), np.inf, out)


def _describe(action: ActionSpec) -> str:
    if action.type == "notify":
        what = action.target
    elif action.type == "command":
        value = action.value_expr.source if action.value_expr is not None else action.value
        what = f"{action.action} {value if value is not None else ''}".rstrip()
    elif action.type == "correct":
        what = action.action
    elif action.type == "set_desired":
        value = action.value_expr.source if action.value_expr is not None else action.value
        what = f"{action.field} = {value}"
    else:
        what = f"{action.adapter} every {action.interval_s:g}s"
    return f"{action.on}: {action.type} {what}"


class Alerting:
    """The node's rules, alarms and notifications (built from the config at start)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        config = node.config
        spec = parse_alerting(config)
        settings = config.alerting
        store = node.store
        self.alarm_book = AlarmBook(
            store, node.commit, node_id=config.node_id, max_alarms=settings.max_alarms, audit=self._audit
        )
        self.notify: NotifyService | None = None
        self.rule_service: RuleService | None = None
        if spec.rules or spec.targets:
            self.notify, self.rule_service = self._build(node, spec)
        # (action) -> (rule, its twin globs): the rules whose firing is a verdict to correct the actuator.
        self._correcting: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for rule in spec.rules:
            for action in rule.actions:
                if action.type == "correct" and rule.enabled:
                    self._correcting.setdefault(action.action, []).append((rule.name, rule.twins))
        self._register_metrics(node)

    def _build(self, node: Node, spec: AlertingSpec) -> tuple[NotifyService, RuleService]:
        """The notification outbox and the rule service (their modules imported here: only when used)."""
        from drsdtp.notify.service import NotifyService
        from drsdtp.rules.inputs import StoreSource
        from drsdtp.rules.service import RuleService

        config, settings = node.config, node.config.alerting
        notify = NotifyService(
            spec.targets,
            config.data_dir / "notify" / "outbox",
            max_items=settings.outbox_max_items,
            max_bytes=settings.outbox_max_bytes,
            backoff=Backoff(settings.retry_min_s, max(settings.retry_min_s, settings.retry_max_s)),
        )
        intel = node.intelligence
        insights = EngineInsights(lambda: intel.engine if intel.models else None)
        source = StoreSource(node.store, insights, config.intelligence.time_scale)
        rules = RuleService(
            spec.rules,
            store=node.store,
            commit=node.commit,
            alarms=self.alarm_book,
            source=source,
            period_s=settings.period_s,
            node_id=config.node_id,
            commands=node.commands,
            notifier=notify,
            sampling=AdapterSampling(self._adapters),
            time_scale=config.intelligence.time_scale,
        )
        return notify, rules

    def correcting_rules(self, twin: str, action: str) -> list[str]:
        """The rules (on ``twin``) with a ``correct`` action of the actuator ``action``: their alarms are
        verdicts the executor's auto-correction acts on."""
        return [
            name
            for name, globs in self._correcting.get(action, ())
            if any(fnmatch.fnmatchcase(twin, glob) for glob in globs)
        ]

    async def _audit(self, record: AlarmRecord, event: str, actor: str, reason: str) -> None:
        """An acknowledgement in the node's audit trail: a write of the alarm's ``acked`` field."""
        changes = {"acked": Change(new=f"{event} episode {record.count} of {record.rule} on {record.twin}")}
        entry = AuditEntry(alarm_twin(record.id), "write", changes, actor, reason)
        await self._node.snapshots.audit_writes([entry])

    def _adapters(self) -> Mapping[str, object]:
        intake: Any = self._node.intake  # built before the alerting (the node's __init__ order)
        return {name: runner.adapter for name, runner in intake.service.runners.items()}

    # ----- the AlertingOps of the API (drsdtp.rules.ops) ------------------------------------------------

    def alarms(
        self, *, active: bool, twin: str, rule: str, limit: int, where: Callable[[str], bool] | None = None
    ) -> tuple[list[AlarmRecord], int]:
        found = self.alarm_book.list(active=active, twin=twin, rule=rule, limit=1 << 62)
        if where is not None:
            found = [r for r in found if where(r.twin)]
        return found[:limit], len(found)

    def alarm(self, alarm: str) -> AlarmRecord | None:
        return self.alarm_book.get(alarm)

    def is_alarm_twin(self, twin: str) -> str | None:
        return twin[len(ALARM_PREFIX) :] if twin.startswith(ALARM_PREFIX) else None

    async def acknowledge(self, alarm: str, actor: str, reason: str) -> AlarmRecord:
        return await self.alarm_book.acknowledge(alarm, actor, reason)

    def rules(self) -> RulesSummary:
        service = self.rule_service
        if service is None:
            return RulesSummary([], 0, 0.0, self._node.config.alerting.period_s)
        now_mono, now_wall = time.monotonic(), time.time()
        views = []
        for st in service.engine.status:
            r = st.spec
            held = st.held_until > now_mono
            views.append(
                RuleView(
                    name=r.name, twins=r.twins, when=r.when.source, for_s=r.for_s,
                    clear_when=r.clear_when.source if r.clear_when is not None else "",
                    deadband=r.deadband, severity=r.severity, alarm=r.alarm, enabled=r.enabled,
                    actions=tuple(_describe(a) for a in r.actions), matched=st.twins, active=st.active,
                    fired=st.fired, cleared=st.cleared, errors=st.errors, last_error=st.last_error,
                    suspended_until_ms=int((now_wall + st.held_until - now_mono) * 1000) if held else 0,
                )
            )  # fmt: skip
        return RulesSummary(views, service.stats.passes, service.stats.last_pass_s, service.period_s)

    def services(self) -> list[Any]:
        """In start order: the outbox's workers before the rules that fill it."""
        return [self.notify, self.rule_service] if self.rule_service is not None else []

    def _statuses(self) -> Sequence[RuleStatus]:
        return self.rule_service.engine.status if self.rule_service is not None else ()

    def _register_metrics(self, node: Node) -> None:
        """Every node has them (zero without rules or targets): a dashboard need not know the config."""
        m, alarms = node.metrics, self.alarm_book
        rules, notify = self.rule_service, self.notify
        m.add_counter(
            "drsdtp_rule_passes", "Rule evaluation passes.", lambda: rules.stats.passes if rules else 0
        )
        m.add_gauge(
            "drsdtp_rule_pass_seconds",
            "Duration of the last rule pass.",
            lambda: rules.stats.last_pass_s if rules else 0.0,
        )
        m.add_gauge(
            "drsdtp_rule_slots",
            "Rules times the twins each matches.",
            lambda: rules.engine.slots if rules else 0,
        )
        m.add_labelled_counter(
            "drsdtp_rule_errors",
            "Rule evaluations or actions that failed (the rule sat out a while; the others went on).",
            ("rule",),
            lambda: {(s.spec.name,): s.errors for s in self._statuses() if s.errors},
        )
        m.add_labelled_counter(
            "drsdtp_rule_fired", "Rule transitions by kind.", ("kind",),
            lambda: {("raise",): sum(s.fired for s in self._statuses()),
                     ("clear",): sum(s.cleared for s in self._statuses())},
        )  # fmt: skip
        m.add_counter("drsdtp_alarms_raised", "Alarm episodes this node raised.", lambda: alarms.raised)
        m.add_counter("drsdtp_alarms_acknowledged", "Alarms acknowledged here.", lambda: alarms.acknowledged)
        m.add_counter(
            "drsdtp_alarms_refused",
            "Raises refused over alerting.max_alarms.",
            lambda: alarms.refused_over_cap,
        )
        m.add_gauge(
            "drsdtp_alarms_active",
            "Alarms not cleared (recounted every few seconds).",
            alarms.active_count,
        )
        m.add_gauge(
            "drsdtp_notify_pending",
            "Notifications in the outbox.",
            lambda: len(notify.outbox) if notify else 0,
        )
        m.add_labelled_counter(
            "drsdtp_notify_sent", "Notifications delivered, by target.", ("target",),
            lambda: {(n,): s.sent for n, s in notify.stats.items()} if notify else {},
        )  # fmt: skip
        m.add_labelled_counter(
            "drsdtp_notify_failures", "Delivery attempts that failed (retried), by target.", ("target",),
            lambda: {(n,): s.failures for n, s in notify.stats.items()} if notify else {},
        )  # fmt: skip
        m.add_counter(
            "drsdtp_notify_dropped",
            "Notifications dropped: the outbox was full, or their target left the config.",
            lambda: notify.outbox.dropped + notify.orphaned + notify.outbox.unreadable if notify else 0,
        )
