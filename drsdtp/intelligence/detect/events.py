"""Anomaly event records from the detector's alarm onsets: twin, field, time, test, magnitude, score."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from drsdtp.intelligence.detect.detector import TESTS, ScoreBatch
from drsdtp.intelligence.results import AnomalyEvent, Severity
from drsdtp.intelligence.table import FieldTable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["KIND_OF_TEST", "describe", "detector_events"]

#: the anomaly kind an operator reads for each test
KIND_OF_TEST: Final[dict[str, str]] = {
    "spike": "spike",
    "spike_back": "spike",
    "shift": "level_shift",
    "trend": "trend_change",
    "drift": "slow_drift",
    "variance": "variance_change",
    "flat": "stuck",
    "gap": "dropout",
    "level": "slow_drift",
}


def describe(test: str, magnitude: float) -> str:
    """What a test's magnitude means, in the field's own units."""
    m = magnitude
    return {
        "spike": f"reading {m:.1f} noise widths from its neighbours",
        "spike_back": f"a reading {m:.1f} noise widths off both its neighbours",
        "shift": f"level shifted by {m:.1f} noise widths",
        "trend": f"trend changed: the last 16 readings sit {m:.1f} noise widths off the 32 before",
        "drift": f"slow drift: the recent average is {m:.1f} noise widths from the long-run average",
        "variance": f"steps {m:.1f} times the usual noise width",
        "flat": f"{m:.0f} identical readings in a row, unusual for this field",
        "gap": f"no reading for {m:.1f} usual periods",
        "level": f"slow drift: the newest 32 readings sit {m:.1f} sd off the trend of 250 readings before",
    }[test]


def _severity(test: str, magnitude: float) -> Severity:
    if test == "flat":
        return Severity.HIGH
    if test == "gap":
        return Severity.MEDIUM
    if magnitude >= 30:
        return Severity.CRITICAL
    return Severity.HIGH if magnitude >= 15 else Severity.MEDIUM


def detector_events(
    batch: ScoreBatch, onset: npt.NDArray[np.bool_], values: npt.NDArray[np.float64], table: FieldTable
) -> list[AnomalyEvent]:
    """One event per alarm onset in ``batch`` (``values`` aligned with it)."""
    out: list[AnomalyEvent] = []
    for i in np.flatnonzero(onset):
        twin, field = table.keys[int(batch.rows[i])]
        test = TESTS[int(batch.test[i])]
        magnitude = float(batch.magnitude[i])
        out.append(
            AnomalyEvent(
                twin=twin,
                field=field,
                kind=KIND_OF_TEST[test],
                severity=_severity(test, magnitude),
                t_s=float(batch.at_s[i]),
                value=float(values[i]),
                detail=describe(test, magnitude),
                test=test,
                magnitude=round(magnitude, 3),
                score=float(batch.score[i]),
            )
        )
    return out
