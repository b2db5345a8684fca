"""Traits of every field (stability, drift rate, trend, freshness) and anomaly events with a severity.

* stability: ``exp(-sigma / stability_scale)`` with ``sigma`` the scatter around the short-window line
  (1 = perfectly steady);
* drift rate: slope of the long-window line, per minute;
* trend: the short-window slope when it exceeds both the field's dead band and three standard errors;
* freshness: FRESH within 1.5 expected periods, AGING up to the stale limit, then STALE.

Anomaly kinds: ``spike``, ``stuck``, ``rapid_change`` (a level shift, or a slope above ``max_rate_per_min``),
``out_of_range`` and ``drift``. :class:`AnomalyLog` keeps the onsets (rising edges) in a bounded log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from drsdtp.intelligence.health import HealthArrays
from drsdtp.intelligence.linefit import FloatArray, LineFit
from drsdtp.intelligence.results import AnomalyEvent, Freshness, Severity, Trend
from drsdtp.intelligence.table import FieldTable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["ANOMALY_KINDS", "AnomalyLog", "TraitArrays", "compute_traits"]

BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
ANOMALY_KINDS: tuple[str, ...] = ("spike", "stuck", "rapid_change", "out_of_range", "drift")
TREND_CODES: tuple[Trend, ...] = (Trend.STABLE, Trend.RISING, Trend.FALLING, Trend.UNKNOWN)
FRESHNESS_CODES: tuple[Freshness, ...] = (
    Freshness.FRESH,
    Freshness.AGING,
    Freshness.STALE,
    Freshness.NO_DATA,
)


@dataclass(frozen=True, slots=True)
class TraitArrays:
    stability: FloatArray
    drift_rate_per_s: FloatArray
    trend_rate_per_s: FloatArray
    trend: npt.NDArray[np.int8]
    freshness: npt.NDArray[np.int8]
    anomaly: dict[str, BoolArray]
    severity: dict[str, npt.NDArray[np.int8]]


def compute_traits(
    health: HealthArrays, fit_short: LineFit, fit_long: LineFit, table: FieldTable, stale_factor: float
) -> TraitArrays:
    sc = health.screen
    stability = np.exp(-fit_short.sigma / table.stability_scale)
    slope = fit_short.slope
    threshold = np.maximum(table.deadband_per_s, 3.0 * np.nan_to_num(fit_short.slope_sigma(), nan=np.inf))
    trend = np.where(
        ~np.isfinite(slope) | (fit_short.n < 3),
        3,
        np.where(slope > threshold, 1, np.where(slope < -threshold, 2, 0)),
    ).astype(np.int8)
    age = sc.age_s
    freshness = np.where(
        sc.no_data,
        3,
        np.where(age <= 1.5 * table.period, 0, np.where(age <= stale_factor * table.period, 1, 2)),
    ).astype(np.int8)

    rapid = (sc.level_shift | sc.anomaly | (np.abs(np.nan_to_num(slope)) > table.max_rate_per_s)) & ~sc.stuck
    anomaly = {
        "spike": sc.spike_recent,
        "stuck": sc.stuck,
        "rapid_change": rapid,
        "out_of_range": sc.out_of_range,
        "drift": health.drift.flagged,
    }
    z = sc.spike_z
    spike_sev = np.where(z >= 30, 4, np.where(z >= 15, 3, 2))
    rate_ratio = np.abs(np.nan_to_num(slope)) / table.max_rate_per_s
    severity = {
        "spike": spike_sev.astype(np.int8),
        "stuck": np.full(z.shape, 3, np.int8),
        "rapid_change": np.where(rate_ratio >= 2.0, 3, 2).astype(np.int8),
        "out_of_range": np.full(z.shape, 4, np.int8),
        "drift": np.where(health.drift.severe, 3, 2).astype(np.int8),
    }
    return TraitArrays(
        stability=np.where(np.isfinite(stability), stability, np.nan),
        drift_rate_per_s=fit_long.slope,
        trend_rate_per_s=slope,
        trend=trend,
        freshness=freshness,
        anomaly=anomaly,
        severity=severity,
    )


class AnomalyLog:
    """Onsets of anomalies (a flag turning on), newest last, at most ``maxlen`` kept."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.events: deque[AnomalyEvent] = deque(maxlen=maxlen)
        self._previous: dict[str, BoolArray] = {}
        # called with every batch of new events (the node's durable anomaly log listens here)
        self.listeners: list[Callable[[Sequence[AnomalyEvent]], None]] = []

    def add(self, events: Sequence[AnomalyEvent]) -> None:
        if events:
            self.events.extend(events)
            for listener in self.listeners:
                listener(events)

    def record(
        self,
        traits: TraitArrays,
        table: FieldTable,
        t_s: float,
        values: FloatArray,
        spike_z: FloatArray,
        skip: BoolArray | None = None,
    ) -> list[AnomalyEvent]:
        """Log the onsets of the pass's anomaly flags; ``skip`` rows (whose spikes, flat lines and shifts
        the model-free detector logs itself, reading by reading) log only range and drift findings."""
        new: list[AnomalyEvent] = []
        for kind in ANOMALY_KINDS:
            flag = traits.anomaly[kind]
            if skip is not None and kind in ("spike", "stuck", "rapid_change"):
                flag = flag & ~skip[: flag.shape[0]]
            prev = self._previous.get(kind)
            if prev is None or prev.shape != flag.shape:
                grown = np.zeros(flag.shape, bool)
                if prev is not None:
                    grown[: min(prev.shape[0], flag.shape[0])] = prev[: flag.shape[0]]
                prev = grown
            for row in np.flatnonzero(flag & ~prev):
                twin, field = table.keys[row]
                value = float(values[row])
                new.append(
                    AnomalyEvent(
                        twin=twin,
                        field=field,
                        kind=kind,
                        severity=Severity(int(traits.severity[kind][row])),
                        t_s=t_s,
                        value=value if np.isfinite(value) else None,
                        detail=_detail(kind, float(spike_z[row]), float(traits.trend_rate_per_s[row])),
                    )
                )
            self._previous[kind] = flag.copy()
        self.add(new)
        return new

    def since(self, t_s: float, twins: Iterable[str] | None = None) -> tuple[AnomalyEvent, ...]:
        wanted = None if twins is None else set(twins)
        return tuple(e for e in self.events if e.t_s >= t_s and (wanted is None or e.twin in wanted))


def _detail(kind: str, z: float, rate_per_s: float) -> str:
    if kind == "spike":
        return f"reading {z:.0f} noise widths from its neighbours"
    if kind == "stuck":
        return "flat line: readings identical although the sensor is normally noisy"
    if kind == "rapid_change":
        return f"changing at {rate_per_s * 60:+.3g} per min"
    if kind == "out_of_range":
        return "value outside the physically possible range"
    return "disagrees with its redundant sensors or the model"
