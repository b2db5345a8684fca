"""Forecast metrics of the Sparkplug edge node: what the intelligence expects of each forecast field.

A field the intelligence forecasts (a field of a modelled twin) gets, beside its value metric
``<twin>/<field>``, the metrics ``<twin>/<field>/forecast/<name>`` (Double; null while the field's quality
is too low to forecast or, for the times, while no limit is reached within the look-ahead):

* ``value``, ``lower``, ``upper``: the linear-trend forecast at the first of ``intelligence.horizons_min``
  (the one ``drsdtp insight TWIN forecast`` gives with ``method: linear``) and its prediction interval;
  the horizon rides on ``value`` as the property ``horizon_s``;
* ``eta_high_s``, ``eta_low_s``: plant seconds until the trend reaches the field's ``high_limit`` /
  ``low_limit`` (0: past it already).

Forecasts move a little at every intelligence pass, so data carries one only when it moved meaningfully
(:func:`moved`): a bound or the value by more than ``forecast_deadband`` times the half-width of the
interval last published, a time by more than that fraction of itself (at least of a minute), or a number
appearing or going null.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple, Protocol

__all__ = ["FORECAST_METRICS", "ForecastSource", "Outlook", "moved", "numbers"]

FORECAST_METRICS: Final = ("value", "lower", "upper", "eta_high_s", "eta_low_s")
ETA_FLOOR_S: Final = 60.0  # a time to threshold near 0 moves by a fraction of a minute, not of itself


class Outlook(NamedTuple):
    """One field's forecast as the intelligence's last pass has it (None: no number, see the module)."""

    horizon_s: float
    value: float | None
    lower: float | None
    upper: float | None
    eta_high_s: float | None
    eta_low_s: float | None


class ForecastSource(Protocol):
    """The node's intelligence, as the publisher reads it."""

    @property
    def passes(self) -> int:
        """Intelligence passes so far (forecasts change only with a pass)."""
        ...

    def outlook(self, twin: str, field: str) -> Outlook | None:
        """The field's forecast at the last pass; None if the intelligence does not forecast it."""
        ...


def numbers(outlook: Outlook) -> dict[str, float | None]:
    """The forecast metrics' values by name (:data:`FORECAST_METRICS`)."""
    return {name: getattr(outlook, name) for name in FORECAST_METRICS}


def moved(
    name: str, old: float | None, new: float | None, last: dict[str, float | None], deadband: float
) -> bool:
    """Whether metric ``name`` moved enough from ``old`` (last published) to ``new`` to be published;
    ``last`` holds the field's published forecast numbers (the interval's width)."""
    if old is None or new is None:
        return (old is None) != (new is None)
    if name.startswith("eta"):
        return abs(new - old) > deadband * max(abs(old), ETA_FLOOR_S)
    lower, upper = last.get("lower"), last.get("upper")
    half = (upper - lower) / 2.0 if lower is not None and upper is not None else 0.0
    scale = half if math.isfinite(half) and half > 0 else max(abs(old), 1.0) * 1e-3
    return abs(new - old) > deadband * scale
