"""Rule inputs from the node: field values, ages and quality scores from the store (one native read of every
pair per pass), anomaly flags and time to threshold from the intelligence engine's last pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from drsdtp._core import Store
from drsdtp.rules.expr import Load, LoadKind

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["Insights", "StoreSource"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
QUALITY_SUFFIX = ".q"  # the quality the ingesting node writes back (drsdtp.node.insight)


class Insights(Protocol):
    """What rules read of the intelligence engine (``drsdtp.node.insight`` provides it)."""

    def rows(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.intp]:
        """The engine's row of each (twin, field); -1 where the engine has none."""
        ...

    def anomaly(self, rows: npt.NDArray[np.intp]) -> FloatArray:
        """1.0 where the last pass flags an anomaly, 0.0 where not, NaN where unknown (row -1)."""
        ...

    def time_to_threshold(self, rows: npt.NDArray[np.intp]) -> FloatArray:
        """Seconds until the forecast crosses a limit; +inf where none is forecast or known."""
        ...


@dataclass(slots=True)
class _Ids:
    twins: npt.NDArray[np.uint32]
    fields: npt.NDArray[np.uint32]


class StoreSource:
    """A :class:`drsdtp.rules.engine.ReadingSource` over a store (and optionally the intelligence)."""

    def __init__(self, store: Store, insights: Insights | None = None, time_scale: float = 1.0) -> None:
        self.store = store
        self.insights = insights
        self.time_scale = time_scale
        self._twin_ids: dict[str, int] = {}
        self._field_ids: dict[str, int] = {}

    def _ids(self, pairs: Sequence[tuple[str, str]], suffix: str = "") -> _Ids:
        twins = np.fromiter((self._twin(t) for t, _ in pairs), np.uint32, len(pairs))
        fields = np.fromiter((self._field(f + suffix) for _, f in pairs), np.uint32, len(pairs))
        return _Ids(twins, fields)

    def _twin(self, name: str) -> int:
        got = self._twin_ids.get(name)
        return got if got is not None else self._twin_ids.setdefault(name, self.store.intern_twin(name))

    def _field(self, name: str) -> int:
        got = self._field_ids.get(name)
        return got if got is not None else self._field_ids.setdefault(name, self.store.intern_field(name))

    def prepare(self, kind: LoadKind, pairs: Sequence[tuple[str, str]]) -> Any:
        if kind in ("anomaly", "tte"):
            if self.insights is None:
                return np.full(len(pairs), -1, np.intp)
            return self.insights.rows(pairs)
        return self._ids(pairs, QUALITY_SUFFIX if kind == "quality" else "")

    def read(self, kind: LoadKind, prepared: Any, now_s: float) -> FloatArray:
        if kind == "anomaly":
            return self._insight(prepared, lambda i, r: i.anomaly(r), math.nan)
        if kind == "tte":
            return self._insight(prepared, lambda i, r: i.time_to_threshold(r), math.inf)
        ids: _Ids = prepared
        values, stamps = self.store.read_numeric(ids.twins, ids.fields)
        if kind == "value":
            return values
        if kind == "quality":
            return np.where(np.isnan(values), 1.0, values)  # no score yet: nothing known against it
        written_s = (stamps >> np.uint64(16)).astype(np.float64) / 1000.0 * self.time_scale
        return np.where(stamps == 0, np.inf, now_s - written_s)

    def read_one(self, load: Load, twin: str, now_s: float) -> float:
        prepared = self.prepare(load.kind, [(twin, load.field)])
        return float(self.read(load.kind, prepared, now_s)[0])

    def _insight(
        self,
        rows: npt.NDArray[np.intp],
        fn: Callable[[Insights, npt.NDArray[np.intp]], FloatArray],
        missing: float,
    ) -> FloatArray:
        if self.insights is None or not len(rows):
            return np.full(len(rows), missing)
        return fn(self.insights, rows)
