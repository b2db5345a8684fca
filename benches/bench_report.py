"""The one result format every benchmark emits, so ``benches/run_all.py`` (``make bench``) can gather them.

A bench builds :class:`Row` objects and calls :func:`emit` once at the end::

    emit("bench_x", [Row.of("replication throughput", 4.1e6, "updates/s", Goal(">=", 5e6),
                            baseline=1.2e6, baseline_name="protobuf per reading")])

:func:`emit` prints the rows and, when ``$BENCH_JSON_OUT`` names a file (``run_all.py`` sets it; not a
``DRSDTP_`` name: nodes a bench starts read those as config overrides), appends one JSON line
``{"bench": ..., "rows": [{"measure", "value", "unit", "baseline", "baseline_name", "ratio", "goal",
"met"}, ...]}`` to it. The Rust peers bench writes the same line (``crdt_core/benches/peers``).

A goal is on the value itself or on the ratio to a baseline measured in the same run (the machine's load
moves rates by 30-50 % between runs; ratios much less).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

ENV = "BENCH_JSON_OUT"


@dataclasses.dataclass(frozen=True)
class Goal:
    op: Literal[">=", "<="]
    target: float
    on: Literal["value", "ratio"] = "value"

    def met(self, value: float, ratio: float | None) -> bool | None:
        x = value if self.on == "value" else ratio
        if x is None or math.isnan(x):
            return None
        return x >= self.target if self.op == ">=" else x <= self.target

    def text(self, unit: str, baseline_name: str | None) -> str:
        if self.on == "ratio":
            return f"{self.op} {self.target:g}x {baseline_name or 'baseline'}"
        return f"{self.op} {human(self.target)} {unit}"


@dataclasses.dataclass(frozen=True)
class Row:
    measure: str  # what is measured, the wording where it has one
    value: float
    unit: str
    baseline: float | None  # the peer or bare client measured in the same run, same unit
    baseline_name: str | None
    ratio: float | None  # value / baseline
    goal: str | None
    met: bool | None  # None: no goal, or not measurable this run

    @classmethod
    def of(
        cls,
        measure: str,
        value: float,
        unit: str,
        goal: Goal | None = None,
        *,
        baseline: float | None = None,
        baseline_name: str | None = None,
    ) -> Row:
        ratio = value / baseline if baseline else None
        return cls(
            measure,
            float(value),
            unit,
            None if baseline is None else float(baseline),
            baseline_name,
            ratio,
            goal.text(unit, baseline_name) if goal else None,
            goal.met(value, ratio) if goal else None,
        )

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def human(x: float) -> str:
    """3 significant figures with a k/M/G suffix: 5e6 -> '5M', 1873000 -> '1.87M'."""
    if x != x or x in (math.inf, -math.inf):
        return str(x)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def table(rows: Sequence[Row]) -> str:
    lines = [f"  {'measure':<46} {'value':>14} {'baseline':>24} {'ratio':>7}  {'goal':<22} result"]
    for r in rows:
        base = f"{human(r.baseline)} {r.baseline_name or ''}" if r.baseline is not None else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        lines.append(
            f"  {r.measure[:46]:<46} {human(r.value) + ' ' + r.unit:>14} {base[:24]:>24} {ratio:>7}  "
            f"{(r.goal or '-')[:22]:<22} {verdict(r.met)}"
        )
    return "\n".join(lines)


def emit(bench: str, rows: Sequence[Row]) -> None:
    """Print the rows; append them as one JSON line to ``$BENCH_JSON_OUT`` when it is set."""
    print(f"\n{bench}: results\n{table(rows)}", flush=True)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"bench": bench, "rows": [r.as_json() for r in rows]}) + "\n")


def load(path: str) -> list[dict[str, Any]]:
    """The bench records in a ``$BENCH_JSON_OUT`` file, each checked for the shape :func:`emit` writes."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record.get("bench"), str) or not isinstance(record.get("rows"), list):
                raise ValueError(f"{path}:{number}: not a bench record (bench, rows): {line[:200]}")
            for row in record["rows"]:
                missing = {f.name for f in dataclasses.fields(Row)} - set(row)
                if missing:
                    raise ValueError(f"{path}:{number}: row lacks {sorted(missing)}: {row}")
            records.append(record)
    return records
