"""Rolling a twin back to a snapshot as new writes: the CRDT way (merged state cannot be un-merged).

* registers: the snapshot's value is written again (a fresh HLC stamp, so it wins over what is there now);
* add-wins sets: elements added since are removed, elements removed since are added again;
* PN-counters: incremented by (snapshot value - current value);
* desired (multi-value) fields: the snapshot's one value is desired again (which also resolves a conflict
  there is now), or the field is cleared if the snapshot held none. A snapshot taken during a conflict holds
  several intents and no rule picks one: that field is listed in ``skipped``.

Fields the snapshot does not have are left as they are and listed in ``extra_fields``: the engine has no
delete, and writing some default would invent a value nobody ever reported. A field whose CRDT kind differs
between the snapshot and now cannot be converted and is listed in ``skipped``. Concurrent writes on other
replicas still merge by the usual rules (a later register write or a concurrent add wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drsdtp.core import Store, decode_state, join
from drsdtp.errors import CounterOverflowError, TypeConflictError
from drsdtp.history.values import FieldValue, Value, same_value
from drsdtp.wire.v1 import state_pb2

__all__ = ["Kind", "RollbackPlan", "apply_plan", "field_kinds", "plan_rollback"]

Kind = Literal["register", "set", "counter", "desired"]
_I64_MAX = (1 << 63) - 1


def field_kinds(state: bytes, twin: str) -> dict[str, Kind | None]:
    """The CRDT kind of each field of ``twin`` in canonical state bytes; None where replicas disagreed
    (one wrote a register, another a counter). An int may be a register or a counter: only the encoding
    tells them apart, so this reads the protobuf rather than the decoded values."""
    message = state_pb2.StateDelta.FromString(state)
    seen: dict[str, set[Kind]] = {}
    for twin_state in message.twins:
        if twin_state.twin != twin:
            continue
        for counter in twin_state.counters:
            seen.setdefault(counter.field, set()).add("counter")
        for group in twin_state.writes:
            for name in group.fields:
                seen.setdefault(name, set()).add("register")
        for crdt_set in twin_state.sets:
            seen.setdefault(crdt_set.field, set()).add("set")
        for desired in twin_state.multi_values:
            seen.setdefault(desired.field, set()).add("desired")
    return {name: next(iter(kinds)) if len(kinds) == 1 else None for name, kinds in seen.items()}


@dataclass(slots=True)
class RollbackPlan:
    registers: dict[str, Value] = field(default_factory=dict)
    set_adds: dict[str, list[str]] = field(default_factory=dict)
    set_removes: dict[str, list[str]] = field(default_factory=dict)
    counter_deltas: dict[str, int] = field(default_factory=dict)
    desired: dict[str, Value] = field(default_factory=dict)
    desired_clears: list[str] = field(default_factory=list)
    changes: dict[str, tuple[FieldValue | None, FieldValue]] = field(
        default_factory=dict
    )  # field: (now, then)
    extra_fields: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def plan_rollback(current: bytes, snapshot: bytes, twin: str) -> RollbackPlan:
    """What to write so that ``twin`` in ``current`` state reads as it did in ``snapshot`` state."""
    now_values = decode_state(current).get(twin, {})
    then_values = decode_state(snapshot).get(twin, {})
    now_kinds, then_kinds = field_kinds(current, twin), field_kinds(snapshot, twin)
    plan = RollbackPlan(extra_fields=sorted(set(now_values) - set(then_values)))
    for name, then in sorted(then_values.items()):
        now = now_values.get(name)
        kind = then_kinds.get(name)
        if kind is None:
            plan.skipped[name] = "the snapshot holds conflicting kinds for it"
            continue
        if name in now_values and now_kinds.get(name) != kind:
            plan.skipped[name] = f"was a {kind}, is now {now_kinds.get(name) or 'of conflicting kinds'}"
            continue
        if same_value(now, then):
            continue
        if isinstance(then, frozenset):
            held = now if isinstance(now, frozenset) else frozenset()
            if then - held:
                plan.set_adds[name] = sorted(then - held)
            if held - then:
                plan.set_removes[name] = sorted(held - then)
        elif isinstance(then, tuple):
            if len(then) > 1:
                plan.skipped[name] = f"the snapshot holds {len(then)} conflicting desired values"
                continue
            if then:
                plan.desired[name] = then[0]
            else:
                plan.desired_clears.append(name)
        elif kind == "counter" and isinstance(then, int):
            delta = then - (now if isinstance(now, int) else 0)
            if abs(delta) > _I64_MAX:
                plan.skipped[name] = f"the difference {delta} does not fit a counter increment"
                continue
            plan.counter_deltas[name] = delta
        else:
            plan.registers[name] = then
        plan.changes[name] = (now, then)
    return plan


def apply_plan(store: Store, twin: str, plan: RollbackPlan) -> bytes:
    """Apply ``plan`` to ``store``; returns the joined delta to replicate (b"" if nothing was written).

    A counter whose increment overflows is skipped (recorded in ``plan.skipped``, removed from
    ``plan.changes``); registers are written in one event, so they roll back together.
    """
    deltas: list[bytes] = []
    if plan.registers:
        deltas.append(store.set_many(twin, plan.registers))
    for name, elements in plan.set_adds.items():
        deltas.extend(store.add(twin, name, element) for element in elements)
    for name, elements in plan.set_removes.items():
        deltas.extend(store.remove(twin, name, element) for element in elements)
    for name, value in plan.desired.items():
        deltas.append(store.desire(twin, name, value))
    deltas.extend(store.clear_desired(twin, name) for name in plan.desired_clears)
    for name, delta in plan.counter_deltas.items():
        try:
            deltas.append(store.increment(twin, name, delta))
        except (CounterOverflowError, TypeConflictError) as exc:
            plan.skipped[name] = str(exc)
            plan.changes.pop(name, None)
    return join(deltas) if deltas else b""
