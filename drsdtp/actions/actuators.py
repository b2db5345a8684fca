"""Actuators: what a node may act on, which node executes, through which adapter, within which limits.

Every node of a cluster should carry the same ``[[actuators]]`` tables (like its peer list): a node checks
a command against them when it takes the request and the executor checks again before it writes. Exactly
one node executes an actuator's commands: the one named by ``node``, through its adapter ``adapter``.

Settings::

    [[actuators]]
    twin = "pump-1"
    action = "valve"          # the command's name: drsdtp command pump-1 valve 0.4 (default: field)
    field = "valve"           # the reported field it drives; applied = that field converged to the value
    node = "edge-a"           # the node that executes
    adapter = "plc-1"         # that node's adapter that writes
    value = "number"          # what a command carries: number | bool | text | none (default number with a
                              # field, else none: an action such as a method call, with optional args)
    desired = true            # a desired value of `field` (Write's desire op) becomes a command (default:
                              # true with a field)
    tolerance = 0.005         # |reported - value| <= tolerance counts as converged (default: half the
                              # model field's resolution, else 1e-9)
    min = 0.0                 # limits, checked when the command is taken and before it is written
    max = 1.0                 # (default: the model field's valid range)
    max_step = 0.5            # the largest change from the reported value one command may make
    min_interval_s = 1.0      # rate limit: writes to this actuator at least this far apart
    deadline_s = 30.0         # default deadline of its commands
    retries = 2               # further attempts after a write that did not reach the device
    retry_backoff_s = 0.2     # first wait between attempts (doubles; never past the deadline)
    ack_timeout_s = 5.0       # how long one attempt waits for the adapter's acknowledgement
    [[actuators.interlocks]]  # preconditions: fields whose quality must be good enough to act
    twin = "pump-1"           # default: the actuator's twin
    field = "flow"
    min_quality = 0.5         # the field's health quality (stuck, stale, drifting ... lower it)
    max_age_s = 30.0          # the reported value must be at most this old (optional)
    policy = "hold"           # hold: wait until it is good (or the deadline); refuse: reject at once
    [actuators.write]         # the adapter's write target: see the adapter's module (mqtt, opcua, ...)
    [actuators.correct]       # auto-correction of reported drifting from desired: see drsdtp.actions.correct
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from drsdtp.actions.correct import CorrectSpec, parse_correct
from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError, InvalidValueError, UnknownTwinError

__all__ = ["ActuatorSpec", "Actuators", "Interlock", "ValueKind", "parse_actuators"]

ValueKind = Literal["number", "bool", "text", "none"]
VALUE_KINDS: tuple[ValueKind, ...] = ("number", "bool", "text", "none")
Value = float | int | bool | str | bytes


@dataclass(frozen=True, slots=True)
class Interlock:
    twin: str
    field: str
    min_quality: float
    max_age_s: float | None
    policy: Literal["hold", "refuse"]

    @property
    def label(self) -> str:
        return f"{self.twin}/{self.field}"


@dataclass(frozen=True, slots=True)
class ActuatorSpec:
    twin: str
    action: str
    field: str  # "" for an action that drives no reported field
    node: str
    adapter: str
    value: ValueKind
    desired: bool
    tolerance: float | None  # None: from the model (half its resolution), else 1e-9
    min: float | None
    max: float | None
    max_step: float | None
    min_interval_s: float
    deadline_s: float | None  # None: commands.default_deadline_s
    retries: int
    retry_backoff_s: float
    ack_timeout_s: float
    interlocks: tuple[Interlock, ...]
    write: Mapping[str, Any]  # raw: the executing node's adapter validates it
    key: str  # "actuators[3]", for errors
    correct: CorrectSpec | None = None  # auto-correction of a divergence from desired (None: never)

    @property
    def label(self) -> str:
        return f"{self.twin} {self.action}"

    def check_value(self, value: Value | None, path: str = "value") -> Value | None:
        """The command's value as this actuator takes it; an InvalidValueError naming what is wrong."""
        where = f"{path}: actuator {self.label!r}"
        if self.value == "none":
            if value is not None:
                raise InvalidValueError(f"{where} is an action without a value (pass args instead)")
            return None
        if value is None:
            raise InvalidValueError(f"{where} needs a {self.value} value")
        if self.value == "bool":
            if not isinstance(value, bool):
                raise InvalidValueError(f"{where} takes true or false, got {value!r}")
            return value
        if self.value == "text":
            if not isinstance(value, str):
                raise InvalidValueError(f"{where} takes text, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidValueError(f"{where} takes a number, got {value!r}")
        if not math.isfinite(value):
            raise InvalidValueError(f"{where}: {value} is not a finite number")
        if self.min is not None and value < self.min:
            raise InvalidValueError(f"{where}: {value:g} is below its minimum {self.min:g}")
        if self.max is not None and value > self.max:
            raise InvalidValueError(f"{where}: {value:g} is above its maximum {self.max:g}")
        return value


class Actuators:
    """The actuator table of a config, looked up by (twin, action) and by (twin, field)."""

    def __init__(self, specs: Iterable[ActuatorSpec] = ()) -> None:
        self.specs = tuple(specs)
        self._by_action = {(s.twin, s.action): s for s in self.specs}
        self._by_field = {(s.twin, s.field): s for s in self.specs if s.field and s.desired}
        self.twins = frozenset(s.twin for s in self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def get(self, twin: str, action: str) -> ActuatorSpec:
        spec = self._by_action.get((twin, action))
        if spec is None:
            known = sorted(a for t, a in self._by_action if t == twin)
            hint = f" (its actions: {', '.join(known)})" if known else " (it has no actuators in this config)"
            raise UnknownTwinError(f"no actuator {action!r} for twin {twin!r}{hint}")
        return spec

    def for_desired(self, twin: str, field_name: str) -> ActuatorSpec | None:
        """The actuator whose desired values of ``field_name`` become commands."""
        return self._by_field.get((twin, field_name))

    def executed_by(self, node: str) -> tuple[ActuatorSpec, ...]:
        return tuple(s for s in self.specs if s.node == node)


def _parse_interlock(t: Table, twin: str) -> Interlock:
    lock = Interlock(
        twin=t.get_str("twin", twin),
        field=t.get_str("field"),
        min_quality=t.get_float("min_quality", 0.5, lo=0.0, hi=1.0),
        max_age_s=t.opt_float("max_age_s", lo=0.0, lo_exclusive=True),
        policy=t.choice("policy", ("hold", "refuse"), "hold"),
    )
    t.done()
    return lock


def _parse_one(t: Table) -> ActuatorSpec:
    twin = t.get_str("twin")
    field_name = t.get_str("field", "", allow_empty=True)
    action = t.get_str("action") if t.has("action") or not field_name else field_name
    value = t.choice("value", VALUE_KINDS, "number" if field_name else "none")
    desired = t.get_bool("desired", bool(field_name))
    if desired and not field_name:
        raise t.error("desired", "needs a field: desired values of that field become commands")
    if desired and value == "none":
        raise t.error("value", "a field driven by desired values carries a value (number, bool or text)")
    lo, hi = t.opt_float("min"), t.opt_float("max")
    if lo is not None and hi is not None and lo > hi:
        raise t.error("min", f"is above max ({hi:g})")
    if (lo is not None or hi is not None) and value != "number":
        raise t.error("min" if lo is not None else "max", "limits are for numeric actuators")
    write = t.table("write", required=True)
    assert write is not None
    correct_table = t.table("correct")
    correct = None
    if correct_table is not None:
        if not desired or value != "number":
            raise t.error("correct", "auto-correction is for a numeric field driven by desired values")
        correct = parse_correct(correct_table)
    spec = ActuatorSpec(
        twin=twin,
        action=action,
        field=field_name,
        node=t.get_str("node"),
        adapter=t.get_str("adapter"),
        value=value,
        desired=desired,
        tolerance=t.opt_float("tolerance", lo=0.0),
        min=lo,
        max=hi,
        max_step=t.opt_float("max_step", lo=0.0, lo_exclusive=True),
        min_interval_s=t.get_float("min_interval_s", 0.0, lo=0.0),
        deadline_s=t.opt_float("deadline_s", lo=0.0, lo_exclusive=True),
        retries=t.get_int("retries", 2, lo=0, hi=100),
        retry_backoff_s=t.get_float("retry_backoff_s", 0.2, lo=0.0),
        ack_timeout_s=t.get_float("ack_timeout_s", 5.0, lo=0.0, lo_exclusive=True),
        interlocks=tuple(_parse_interlock(i, twin) for i in t.tables("interlocks")),
        write=MappingProxyType(dict(write.raw)),
        key=t.key,
        correct=correct,
    )
    t.done()
    return spec


def parse_actuators(raw: Sequence[Mapping[str, Any]], key: str = "actuators") -> Actuators:
    """Validates the ``[[actuators]]`` tables (not their ``write`` targets: the executing node's adapter
    does, see :meth:`drsdtp.actions.executor.Executor`)."""
    specs: list[ActuatorSpec] = []
    seen: dict[tuple[str, str], str] = {}
    fields: dict[tuple[str, str], str] = {}
    for i, table in enumerate(raw):
        spec = _parse_one(Table(table, f"{key}[{i}]"))
        if (spec.twin, spec.action) in seen:
            raise ConfigError(
                f"{spec.key}.action", f"{spec.label!r} is already {seen[spec.twin, spec.action]}"
            )
        seen[spec.twin, spec.action] = spec.key
        if spec.desired:
            other = fields.get((spec.twin, spec.field))
            if other is not None:
                raise ConfigError(
                    f"{spec.key}.field",
                    f"desired values of {spec.twin}/{spec.field} already drive {other} (one actuator each)",
                )
            fields[spec.twin, spec.field] = spec.key
        specs.append(spec)
    return Actuators(specs)
