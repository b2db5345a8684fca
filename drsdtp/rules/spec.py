"""The ``[[rules]]`` config: what a rule watches, when it fires and clears, and what it does.

Settings::

    [[rules]]
    name = "room-hot"                 # unique; names the alarm (with the twin) and the metrics
    twins = "room-*"                  # glob, or an array of globs, over twin ids (internal twins never)
    when = "temperature > 30"         # the condition (drsdtp.rules.expr)
    for = "30s"                       # it must hold this long before the rule fires (default 0)
    clear_when = "temperature < 28"   # hysteresis: an active rule clears only when this holds ...
    deadband = 2.0                    # ... or (without clear_when) once `when` fails by this margin
    severity = "major"                # critical | major | minor | warning | info (default warning)
    message = "room too hot"          # the alarm's text (default: the condition)
    alarm = true                      # raise/clear an alarm (default true; false: actions only)
    enabled = true
    [[rules.actions]]                 # what to do when it fires (on = "raise") or clears (on = "clear")
    on = "raise"
    type = "notify"                   # notify | command | set_desired | sampling | correct
    target = "ops"                    # notify: a [[notify]] target's name
    # command:     action = "heater", value = 1 (or value_expr = "22 - temperature"), deadline_s = 30
    # set_desired: field = "setpoint", value = 21.5 (or value_expr)
    # sampling:    adapter = "plc", interval_s = 0.1 (adaptive sampling: the adapter's new poll interval;
    #              an adapter with the hook, the Modbus one; another action on = "clear" sets it back)
    # correct:     action = "valve" (an actuator with [actuators.correct]): the rule firing is a verdict
    #              that its field diverges from desired; the executing node corrects it by the actuator's
    #              auto-correction policy (drsdtp.actions.correct), without waiting its after_s. The
    #              rule's alarm carries the verdict there (alarm must be true); on = "raise" only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError
from drsdtp.rules.expr import Compiled, ExprError, Load, compile_expr, parse_duration

__all__ = ["SEVERITIES", "ActionSpec", "RuleSpec", "parse_rules"]

Severity = Literal["critical", "major", "minor", "warning", "info"]
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "major", "minor", "warning", "info")
ActionType = Literal["notify", "command", "set_desired", "sampling", "correct"]
ACTION_TYPES: Final[tuple[ActionType, ...]] = ("notify", "command", "set_desired", "sampling", "correct")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_RULES: Final = 100_000
MAX_ACTIONS: Final = 16

Literal_ = float | int | bool | str


@dataclass(frozen=True, slots=True)
class ActionSpec:
    on: Literal["raise", "clear"]
    type: ActionType
    target: str = ""  # notify
    action: str = ""  # command, correct
    field: str = ""  # set_desired
    value: Literal_ | None = None
    value_expr: Compiled | None = None
    deadline_s: float | None = None
    adapter: str = ""  # sampling
    interval_s: float = 0.0
    key: str = ""


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    twins: tuple[str, ...]
    when: Compiled
    for_s: float
    clear_when: Compiled | None
    deadband: float
    severity: Severity
    message: str
    alarm: bool
    enabled: bool
    actions: tuple[ActionSpec, ...]
    key: str

    @property
    def loads(self) -> tuple[Load, ...]:
        """The inputs of its conditions: ``when``'s, then those only ``clear_when`` reads."""
        return _loads(self.when, self.clear_when)


def _loads(when: Compiled, clear_when: Compiled | None) -> tuple[Load, ...]:
    if clear_when is None:
        return when.loads
    return when.loads + tuple(x for x in clear_when.loads if x not in when.loads)


def _expr(t: Table, name: str, *, boolean: bool = True) -> Compiled:
    text = t.get_str(name)
    try:
        return compile_expr(text, boolean=boolean)
    except ExprError as exc:
        raise t.error(name, f"{exc} in {text!r}") from None


def _duration(t: Table, name: str) -> float:
    raw = t._get(name, 0.0)  # a duration is a string or a number
    try:
        return parse_duration(raw, t.path(name))
    except ValueError as exc:
        raise ConfigError(t.path(name), str(exc).split(": ", 1)[-1]) from None


def _literal(t: Table, name: str) -> Literal_ | None:
    if not t.has(name):
        t.ignore(name)
        return None
    value = t._get(name, None)
    if not isinstance(value, float | int | bool | str):
        raise t.error(name, "expected a number, boolean or string")
    return value


def _parse_action(t: Table, notify_targets: Sequence[str] | None) -> ActionSpec:
    on: Literal["raise", "clear"] = t.choice("on", ("raise", "clear"), "raise")
    kind = t.choice("type", ACTION_TYPES)
    spec: ActionSpec
    if kind == "notify":
        target = t.get_str("target")
        if notify_targets is not None and target not in notify_targets:
            known = ", ".join(notify_targets) or "none configured"
            raise t.error("target", f"no [[notify]] target named {target!r} (known: {known})")
        spec = ActionSpec(on, kind, target=target, key=t.key)
    elif kind == "correct":
        if on != "raise":
            raise t.error("on", 'a correct action acts on a rule firing: on = "raise"')
        spec = ActionSpec(on, kind, action=t.get_str("action"), key=t.key)
    elif kind == "sampling":
        spec = ActionSpec(
            on,
            kind,
            adapter=t.get_str("adapter"),
            interval_s=t.get_float("interval_s", lo=0.001, hi=86_400.0),
            key=t.key,
        )
    else:
        value = _literal(t, "value")
        expr = _expr(t, "value_expr", boolean=False) if t.has("value_expr") else None
        if value is not None and expr is not None:
            raise t.error("value_expr", "set value or value_expr, not both")
        if kind == "set_desired" and value is None and expr is None:
            raise t.error("value", "set_desired needs a value (or value_expr)")
        spec = ActionSpec(
            on,
            kind,
            action=t.get_str("action") if kind == "command" else "",
            field=t.get_str("field") if kind == "set_desired" else "",
            value=value,
            value_expr=expr,
            deadline_s=t.opt_float("deadline_s", lo=0.0, lo_exclusive=True) if kind == "command" else None,
            key=t.key,
        )
    t.done()
    return spec


def _parse_one(t: Table, notify_targets: Sequence[str] | None) -> RuleSpec:
    name = t.get_str("name")
    if not _NAME.fullmatch(name):
        raise t.error("name", f"{name!r} is not a valid name (letters, digits, '.', '_', '-'; up to 64)")
    raw_twins = t._get("twins", None)
    twins = ((raw_twins,) if raw_twins else ()) if isinstance(raw_twins, str) else tuple(t.str_list("twins"))
    if not twins:
        raise t.error("twins", 'name the twins it applies to: a glob such as "room-*" or an array')
    when = _expr(t, "when")
    clear_when = _expr(t, "clear_when") if t.has("clear_when") else None
    deadband = t.get_float("deadband", 0.0, lo=0.0)
    if clear_when is not None and deadband:
        raise t.error("deadband", "set clear_when or deadband, not both")
    actions = t.tables("actions")
    if len(actions) > MAX_ACTIONS:
        raise t.error("actions", f"at most {MAX_ACTIONS} actions per rule")
    spec = RuleSpec(
        name=name,
        twins=twins,
        when=when,
        for_s=_duration(t, "for"),
        clear_when=clear_when,
        deadband=deadband,
        severity=t.choice("severity", SEVERITIES, "warning"),
        message=t.get_str("message", when.source),
        alarm=t.get_bool("alarm", True),
        enabled=t.get_bool("enabled", True),
        actions=tuple(_parse_action(a, notify_targets) for a in actions),
        key=t.key,
    )
    t.done()
    if not spec.alarm and not spec.actions:
        raise t.error("alarm", "a rule without an alarm needs at least one action")
    if not spec.alarm and any(a.type == "correct" for a in spec.actions):
        raise t.error("alarm", "a correct action needs the rule's alarm (it carries the verdict)")
    return spec


def parse_rules(
    raw: Sequence[Mapping[str, Any]], notify_targets: Sequence[str] | None = None, key: str = "rules"
) -> tuple[RuleSpec, ...]:
    """Validates the ``[[rules]]`` tables; ``notify_targets``: the names notify actions may use (None:
    not checked). Raises :class:`ConfigError` naming the key and what is wrong."""
    if len(raw) > MAX_RULES:
        raise ConfigError(key, f"at most {MAX_RULES} rules")
    rules: list[RuleSpec] = []
    seen: dict[str, str] = {}
    for i, table in enumerate(raw):
        rule = _parse_one(Table(table, f"{key}[{i}]"), notify_targets)
        if rule.name in seen:
            raise ConfigError(f"{rule.key}.name", f"{rule.name!r} is already {seen[rule.name]}")
        seen[rule.name] = rule.key
        rules.append(rule)
    return tuple(rules)
