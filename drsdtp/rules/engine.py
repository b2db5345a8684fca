"""Vectorised rule evaluation: every rule over every twin it matches, one numpy pass per rule shape.

A *slot* is one rule applied to one twin. Slots of rules with the same shape (:mod:`drsdtp.rules.expr`)
form a group, evaluated together: the group's inputs are gathered from one read of every field the rules
need (:class:`ReadingSource`, one native call per kind of input), its constants are columns of per-slot
values. Per slot the engine keeps whether the rule is active and since when its condition holds, and turns
them into transitions:

* an inactive slot whose condition held for ``for`` seconds fires (``raise``);
* an active slot clears when ``clear_when`` holds, or (without it) once the condition fails by more than
  the rule's ``deadband`` (hysteresis: no flapping around a threshold).

A group that raises is evaluated again rule by rule, so a faulty rule is found, reported, counted and set
aside for ``ERROR_HOLD_S`` while every other rule goes on; :meth:`RuleEngine.fail` does the same for a
rule whose action failed.
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

from drsdtp.rules.expr import Load, LoadKind, Program
from drsdtp.rules.spec import RuleSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["ERROR_HOLD_S", "Event", "ReadingSource", "RuleEngine", "RuleStatus"]

log = logging.getLogger(__name__)

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
IntArray: TypeAlias = "npt.NDArray[np.intp]"
ERROR_HOLD_S: Final = 30.0  # a rule that failed sits out this long, then is tried again
MAX_ERROR_TEXT: Final = 500
_WILDCARDS: Final = re.compile(r"[*?\[]")


class ReadingSource(Protocol):
    """Where rule inputs come from (the node's store and intelligence: :mod:`drsdtp.rules.inputs`)."""

    def prepare(self, kind: LoadKind, pairs: Sequence[tuple[str, str]]) -> Any:
        """Whatever makes reading these (twin, field) pairs fast, done once per layout."""
        ...

    def read(self, kind: LoadKind, prepared: Any, now_s: float) -> FloatArray:
        """The current inputs of the prepared pairs (NaN: unknown)."""
        ...

    def read_one(self, load: Load, twin: str, now_s: float) -> float:
        """One input (an action's value)."""
        ...


@dataclass(frozen=True, slots=True)
class Event:
    rule: RuleSpec
    twin: str
    kind: Literal["raise", "clear"]
    inputs: dict[Load, float]  # the slot's inputs in this pass (for action values and messages)


@dataclass(slots=True)
class RuleStatus:
    """What ``drsdtp rules`` shows of a rule."""

    spec: RuleSpec
    twins: int = 0
    active: int = 0
    fired: int = 0
    cleared: int = 0
    errors: int = 0
    last_error: str = ""
    held_until: float = 0.0  # monotonic seconds: evaluation suspended until then after an error


@dataclass(slots=True)
class _Group:
    when: Program
    clear: Program | None
    clear_map: tuple[int, ...]  # the clear program's loads as positions in the rules' loads
    rules: list[int] = field(default_factory=list)  # rule index per slot
    twins: list[str] = field(default_factory=list)
    rule_of: IntArray = field(default_factory=lambda: np.zeros(0, np.intp))
    load_rows: list[tuple[LoadKind, IntArray]] = field(default_factory=list)  # per load position
    when_consts: list[FloatArray] = field(default_factory=list)
    clear_consts: list[FloatArray] = field(default_factory=list)
    for_s: FloatArray = field(default_factory=lambda: np.zeros(0))
    deadband: FloatArray = field(default_factory=lambda: np.zeros(0))
    active: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    since: FloatArray = field(default_factory=lambda: np.zeros(0))


def _group_key(rule: RuleSpec) -> tuple[str, str, tuple[int, ...]]:
    loads = rule.loads
    clear = rule.clear_when
    return (
        rule.when.shape,
        clear.shape if clear is not None else "",
        tuple(loads.index(x) for x in clear.loads) if clear is not None else (),
    )


class _TwinIndex:
    """Sorted twin ids; a glob's literal prefix narrows the candidates before ``fnmatch``."""

    def __init__(self, twins: Iterable[str]) -> None:
        self.sorted = sorted(t for t in twins if not t.startswith("_"))

    def match(self, globs: Sequence[str]) -> list[str]:
        out: dict[str, None] = {}
        for glob in globs:
            m = _WILDCARDS.search(glob)
            prefix = glob if m is None else glob[: m.start()]
            lo = bisect.bisect_left(self.sorted, prefix)
            hi = bisect.bisect_left(self.sorted, prefix + "\U0010ffff") if prefix else len(self.sorted)
            if m is None:
                if lo < len(self.sorted) and self.sorted[lo] == glob:
                    out[glob] = None
                continue
            pattern = re.compile(fnmatch.translate(glob))
            for twin in self.sorted[lo:hi]:
                if pattern.match(twin):
                    out[twin] = None
        return list(out)


class RuleEngine:
    """Holds the rules, their slots and state; :meth:`evaluate` is one pass."""

    def __init__(self, rules: Sequence[RuleSpec], source: ReadingSource) -> None:
        self.rules = list(rules)
        self.status = [RuleStatus(r) for r in self.rules]
        self.by_name = {r.name: i for i, r in enumerate(self.rules)}
        self.source = source
        self.groups: list[_Group] = []
        self._prepared: dict[LoadKind, Any] = {}
        self._pairs: dict[LoadKind, dict[tuple[str, str], int]] = {}
        self.passes = 0
        self._held_until = 0.0  # the latest held_until of any rule

    # ----- layout ---------------------------------------------------------------------------------------

    def layout(
        self, twins: Iterable[str], active: Callable[[RuleSpec, str], bool] = lambda r, t: False
    ) -> None:
        """(Re)builds the slots over ``twins``; a slot's state carries over from the previous layout, or
        starts from ``active`` (a rule's alarm that is active in the store: a restart does not re-raise)."""
        old: dict[tuple[int, str], tuple[bool, float]] = {}
        for g in self.groups:
            for s, (r, t) in enumerate(zip(g.rules, g.twins, strict=True)):
                old[r, t] = (bool(g.active[s]), float(g.since[s]))
        index = _TwinIndex(twins)
        matched: dict[tuple[str, ...], list[str]] = {}
        groups: dict[tuple[str, str, tuple[int, ...]], _Group] = {}
        pairs: dict[LoadKind, dict[tuple[str, str], int]] = {}
        for r, rule in enumerate(self.rules):
            if not rule.enabled:
                continue
            twins_of = matched.get(rule.twins)
            if twins_of is None:
                twins_of = matched[rule.twins] = index.match(rule.twins)
            self.status[r].twins = len(twins_of)
            if not twins_of:
                continue
            key = _group_key(rule)
            group = groups.get(key)
            if group is None:
                clear = Program(rule.clear_when) if rule.clear_when is not None else None
                group = groups[key] = _Group(Program(rule.when), clear, key[2])
            group.rules.extend([r] * len(twins_of))
            group.twins.extend(twins_of)
        for group in groups.values():
            self._build(group, pairs, old, active)
        self.groups = list(groups.values())
        self._pairs = pairs
        self._prepared = {kind: self.source.prepare(kind, list(table)) for kind, table in pairs.items()}
        for st in self.status:
            st.active = 0
        for g in self.groups:
            for r in np.asarray(g.rules)[g.active]:
                self.status[r].active += 1

    def _build(
        self,
        g: _Group,
        pairs: dict[LoadKind, dict[tuple[str, str], int]],
        old: dict[tuple[int, str], tuple[bool, float]],
        active: Callable[[RuleSpec, str], bool],
    ) -> None:
        n = len(g.rules)
        g.rule_of = np.asarray(g.rules, np.intp)
        first = self.rules[g.rules[0]]
        g.load_rows = []
        for pos in range(len(first.loads)):
            kind = first.loads[pos].kind
            table = pairs.setdefault(kind, {})
            rows = np.empty(n, np.intp)
            for s, (r, twin) in enumerate(zip(g.rules, g.twins, strict=True)):
                pair = (twin, self.rules[r].loads[pos].field)
                rows[s] = table.setdefault(pair, len(table))
            g.load_rows.append((kind, rows))
        g.when_consts = _constants([self.rules[r].when.constants for r in g.rules], g.when.n_constants)
        if g.clear is not None:
            consts = [self.rules[r].clear_when.constants for r in g.rules]  # type: ignore[union-attr]
            g.clear_consts = _constants(consts, g.clear.n_constants)
        g.for_s = np.array([self.rules[r].for_s for r in g.rules], np.float64)
        g.deadband = np.array([self.rules[r].deadband for r in g.rules], np.float64)
        g.active = np.zeros(n, bool)
        g.since = np.full(n, np.nan)
        for s, (r, twin) in enumerate(zip(g.rules, g.twins, strict=True)):
            prev = old.get((r, twin))
            if prev is not None:
                g.active[s], g.since[s] = prev
            elif self.rules[r].alarm and active(self.rules[r], twin):
                g.active[s] = True

    # ----- evaluation -----------------------------------------------------------------------------------

    def evaluate(self, now_s: float, monotonic_s: float) -> list[Event]:
        """One pass over every slot at plant/wall time ``now_s``; the transitions it found."""
        self.passes += 1
        columns = {kind: self.source.read(kind, prep, now_s) for kind, prep in self._prepared.items()}
        held = None
        if self._held_until > monotonic_s:  # some rule sits out after an error
            held = np.array([st.held_until > monotonic_s for st in self.status], bool)
        events: list[Event] = []
        for g in self.groups:
            skip = held[g.rule_of] if held is not None else None
            try:
                fire, clear = self._step(g, columns, now_s, skip)
            except Exception as exc:  # a bug or bad data in one rule must not stop the others
                fire, clear = self._isolate(g, columns, now_s, monotonic_s, exc)
            events.extend(self._events(g, columns, fire, "raise"))
            events.extend(self._events(g, columns, clear, "clear"))
        return events

    def _inputs(
        self, g: _Group, columns: dict[LoadKind, FloatArray], sel: IntArray | None
    ) -> list[FloatArray]:
        if sel is None:
            return [columns[kind][rows] for kind, rows in g.load_rows]
        return [columns[kind][rows[sel]] for kind, rows in g.load_rows]

    def _step(
        self,
        g: _Group,
        columns: dict[LoadKind, FloatArray],
        now_s: float,
        skip: npt.NDArray[np.bool_] | None,
        sel: IntArray | None = None,
    ) -> tuple[IntArray, IntArray]:
        """Evaluates the group's slots (``sel``: only those), updates their state; (fired, cleared)."""
        loads = self._inputs(g, columns, sel)
        take: Callable[[Any], Any] = (lambda a: a) if sel is None else (lambda a: a[sel])
        wconsts = [take(c) for c in g.when_consts]
        n = len(loads[0]) if loads else (len(g.rules) if sel is None else len(sel))
        zero = np.zeros(n)
        active: BoolArray = take(g.active)
        cond: BoolArray = np.broadcast_to(g.when(loads, wconsts, zero), (n,)).astype(bool)
        if g.clear is not None:
            cloads = [loads[i] for i in g.clear_map]
            cleared = np.broadcast_to(g.clear(cloads, [take(c) for c in g.clear_consts], zero), (n,))
            still: BoolArray = np.logical_not(cleared)
        else:
            deadband: FloatArray = take(g.deadband)
            relaxed = g.when(loads, wconsts, deadband) if deadband.any() else cond
            still = np.broadcast_to(relaxed, (n,)).astype(bool)
        inactive = np.logical_not(active)
        previous: FloatArray = take(g.since)
        since = np.where(cond & inactive, np.where(np.isnan(previous), now_s, previous), np.nan)
        fire: BoolArray = inactive & cond & (now_s - since >= take(g.for_s))
        clear: BoolArray = active & np.logical_not(still)
        if skip is not None:
            keep: BoolArray = take(skip)
            fire &= np.logical_not(keep)
            clear &= np.logical_not(keep)
            since = np.where(keep, previous, since)
        new_active = (active | fire) & np.logical_not(clear)
        if sel is None:
            g.active, g.since = new_active, since
            return np.flatnonzero(fire), np.flatnonzero(clear)
        g.active[sel], g.since[sel] = new_active, since
        return sel[fire], sel[clear]

    def _isolate(
        self, g: _Group, columns: dict[LoadKind, FloatArray], now_s: float, mono: float, first: Exception
    ) -> tuple[IntArray, IntArray]:
        fired: list[IntArray] = []
        cleared: list[IntArray] = []
        for r in np.unique(g.rule_of):
            if self.status[r].held_until > mono:
                continue
            sel = np.flatnonzero(g.rule_of == r)
            try:
                f, c = self._step(g, columns, now_s, None, sel)
            except Exception as exc:
                self.fail(int(r), f"evaluation failed: {type(exc).__name__}: {exc}", mono)
                continue
            fired.append(f)
            cleared.append(c)
        if not fired:
            log.debug("rule group %s failed as a whole: %s", g.when.shape, first)
        empty = np.zeros(0, np.intp)
        return (np.concatenate(fired) if fired else empty, np.concatenate(cleared) if cleared else empty)

    def _events(
        self, g: _Group, columns: dict[LoadKind, FloatArray], slots: IntArray, kind: Literal["raise", "clear"]
    ) -> list[Event]:
        if not len(slots):
            return []
        gathered = [columns[k][rows[slots]].tolist() for k, rows in g.load_rows]
        out = []
        for i, s in enumerate(slots.tolist()):
            r = g.rules[s]
            rule = self.rules[r]
            status = self.status[r]
            if kind == "raise":
                status.fired += 1
                status.active += 1
            else:
                status.cleared += 1
                status.active = max(0, status.active - 1)
            values = {load: column[i] for load, column in zip(rule.loads, gathered, strict=True)}
            out.append(Event(rule, g.twins[s], kind, values))
        return out

    def fail(self, rule: int, error: str, monotonic_s: float) -> None:
        """Reports a rule's failure (its evaluation or an action): counted, and the rule sits out a while."""
        st = self.status[rule]
        st.errors += 1
        st.last_error = error[:MAX_ERROR_TEXT]
        st.held_until = monotonic_s + ERROR_HOLD_S
        self._held_until = max(self._held_until, st.held_until)
        log.warning("rule %s failed (%s); suspended for %gs", st.spec.name, error, ERROR_HOLD_S)

    @property
    def slots(self) -> int:
        return sum(len(g.rules) for g in self.groups)


def _constants(per_rule: list[tuple[float, ...]], n: int) -> list[FloatArray]:
    if not per_rule or n == 0:
        return [np.zeros(len(per_rule)) for _ in range(n)]
    matrix = np.array(per_rule, np.float64).reshape(len(per_rule), n)
    return [np.ascontiguousarray(matrix[:, k]) for k in range(n)]
