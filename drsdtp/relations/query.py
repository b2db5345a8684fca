"""Queries over related twins: where in the tree, related how, with which values and health.

A query picks candidates by position (``under`` a twin: its descendants; ``above`` one: its ancestors;
``related`` to one: its neighbours by ``relation``, either direction; none of these: every twin), keeps
those with an outgoing ``relation`` edge when ``relation`` is given without ``related``, then filters by
field conditions (``temp > 40``, ``mode == auto``; all must hold) and by health status. Everything is read
locally: the relation index, the store and the last intelligence pass.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from drsdtp.errors import InvalidValueError
from drsdtp.relations.edges import Edge
from drsdtp.relations.index import RelationIndex

__all__ = ["Condition", "QueryHit", "QuerySpec", "parse_condition", "run_query"]

MAX_LIMIT: Final = 10_000
HEALTH_STATUSES: Final = ("HEALTHY", "DEGRADED", "FAILED")
_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
_CONDITION_RE: Final = re.compile(r"\s*([^\s<>=!]+)\s*(>=|<=|==|!=|>|<|=)\s*(\S.*?)\s*")


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str
    value: float | str | bool

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}"

    def holds(self, actual: object) -> bool:
        if actual is None or isinstance(actual, frozenset | tuple | bytes):
            return False
        compare = _OPS[self.op]
        if isinstance(self.value, bool) or isinstance(actual, bool):
            return self.op in ("==", "=", "!=") and compare(actual, self.value)
        if isinstance(self.value, float):
            if not isinstance(actual, int | float):
                return False
            return math.isfinite(float(actual)) and compare(float(actual), self.value)
        return isinstance(actual, str) and compare(actual, self.value)


def parse_condition(text: str) -> Condition:
    """``"temp > 40"``, ``"mode == auto"``, ``"running = true"``; InvalidValueError naming the mistake."""
    m = _CONDITION_RE.fullmatch(text)
    if m is None:
        raise InvalidValueError(
            f"where {text!r}: expected '<field> <op> <value>' with op one of >, >=, <, <=, ==, != "
            '(e.g. "temp > 40")'
        )
    name, op, raw = m.groups()
    value: float | str | bool
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = float(raw)
        except ValueError:
            value = raw.strip("\"'")
        else:
            if not math.isfinite(value):
                raise InvalidValueError(f"where {text!r}: the value must be a finite number or a string")
    if isinstance(value, str) and op in (">", ">=", "<", "<="):
        raise InvalidValueError(f"where {text!r}: {op} needs a number")
    return Condition(name, "==" if op == "=" else op, value)


@dataclass(frozen=True, slots=True)
class QuerySpec:
    under: str = ""
    above: str = ""
    related: str = ""
    relation: str = ""
    where: tuple[Condition, ...] = ()
    health: tuple[str, ...] = ()  # HEALTHY, DEGRADED, FAILED (any of them)
    limit: int = 1000
    within: Callable[[str], bool] | None = None  # only twins it holds for (the API caller's scopes)

    def __post_init__(self) -> None:
        if sum(bool(x) for x in (self.under, self.above, self.related)) > 1:
            raise InvalidValueError("query: give at most one of under, above, related")
        bad = [h for h in self.health if h not in HEALTH_STATUSES]
        if bad:
            raise InvalidValueError(
                f"query: health {', '.join(map(repr, bad))} is not one of {', '.join(HEALTH_STATUSES)}"
            )
        if not 0 < self.limit <= MAX_LIMIT:
            raise InvalidValueError(f"query: limit must be between 1 and {MAX_LIMIT}, got {self.limit}")


@dataclass(frozen=True, slots=True)
class QueryHit:
    twin: str
    model: str
    health: str  # "" when the twin's health is not judged on this node
    values: dict[str, object] = field(default_factory=dict)  # the fields the conditions name
    edges: tuple[Edge, ...] = ()  # outgoing


def run_query(
    spec: QuerySpec,
    index: RelationIndex,
    read: Callable[[str, str], object],
    every_twin: Callable[[], Iterable[str]],
    health_of: Callable[[Sequence[str]], dict[str, tuple[str, str]]],
) -> tuple[list[QueryHit], int]:
    """The matching twins (at most ``spec.limit``, in candidate order) and how many matched in all.

    ``read(twin, field)`` reads a value; ``every_twin()`` lists the visible twins; ``health_of(twins)``
    gives ``{twin: (model, status)}`` for the judged ones."""
    index.refresh()
    if spec.under:
        candidates = index.descendants(spec.under)
    elif spec.above:
        candidates = index.ancestors(spec.above)
    elif spec.related:
        candidates = index.neighbours(spec.related, spec.relation or None)
    else:
        candidates = sorted(every_twin())
    if spec.relation and not spec.related:
        candidates = [t for t in candidates if index.outgoing(t, spec.relation)]
    if spec.within is not None:
        candidates = [t for t in candidates if spec.within(t)]
    matched: list[tuple[str, dict[str, object]]] = []
    for twin in candidates:
        values = {c.field: read(twin, c.field) for c in spec.where}
        if all(c.holds(values[c.field]) for c in spec.where):
            matched.append((twin, values))
    judged = health_of([t for t, _ in matched])
    if spec.health:
        matched = [(t, v) for t, v in matched if t in judged and judged[t][1] in spec.health]
    hits = [
        QueryHit(
            twin,
            judged.get(twin, ("", ""))[0] or str(read(twin, "_model") or ""),
            judged.get(twin, ("", ""))[1],
            {k: _plain(v) for k, v in values.items()},
            tuple(index.outgoing(twin)),
        )
        for twin, values in matched[: spec.limit]
    ]
    return hits, len(matched)


def _plain(value: object) -> object:
    if isinstance(value, frozenset):
        return sorted(value)
    return value
