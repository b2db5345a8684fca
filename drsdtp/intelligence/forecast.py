"""Forecasts for every field at once: linear trend over the short window, with prediction intervals.

``mean(h) = level(now) + slope * h``; the interval is the ordinary-least-squares prediction interval
``z * sigma * sqrt(1 + 1/n + (t - t_mean)^2 / Stt)``. ``confidence`` is the probability, under that model,
that the reading at the horizon lands within the field's ``forecast_tolerance`` of the forecast, times the
field's quality: a number a dashboard can show and a rule can threshold.

Time to threshold uses the same line, only when the slope is significant (more than twice its standard error)
and the crossing is within ``max_time_to_threshold_s``; ``0`` means the field is already past the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from drsdtp.intelligence.linefit import FloatArray, LineFit
from drsdtp.intelligence.mathutil import normal_coverage

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["ForecastArrays", "linear_forecast", "time_to_threshold"]


@dataclass(frozen=True, slots=True)
class ForecastArrays:
    """Per-field forecasts: arrays ``(fields,)`` or ``(fields, horizons)``."""

    horizons_s: FloatArray
    level: FloatArray
    slope: FloatArray
    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    sigma: FloatArray
    confidence: FloatArray
    eta_high_s: FloatArray
    eta_low_s: FloatArray


def linear_forecast(
    fit: LineFit,
    now_s: float,
    horizons_s: FloatArray,
    *,
    z: float,
    quality: FloatArray,
    tolerance: FloatArray,
    low_limit: FloatArray,
    high_limit: FloatArray,
    max_eta_s: float,
) -> ForecastArrays:
    targets = now_s + horizons_s[None, :]
    level = fit.at(now_s)
    slope = np.where(np.isfinite(fit.slope), fit.slope, np.nan)
    mean = level[:, None] + slope[:, None] * horizons_s[None, :]
    sigma = np.column_stack([fit.predictive_sigma(t) for t in targets[0]]) if horizons_s.size else mean
    confidence = quality[:, None] * normal_coverage(tolerance[:, None], sigma)
    eta_high, eta_low = time_to_threshold(level, slope, fit.slope_sigma(), low_limit, high_limit, max_eta_s)
    return ForecastArrays(
        horizons_s=horizons_s,
        level=level,
        slope=slope,
        mean=mean,
        lower=mean - z * sigma,
        upper=mean + z * sigma,
        sigma=sigma,
        confidence=np.where(np.isfinite(mean), confidence, 0.0),
        eta_high_s=eta_high,
        eta_low_s=eta_low,
    )


def time_to_threshold(
    level: FloatArray,
    slope: FloatArray,
    slope_sigma: FloatArray,
    low_limit: FloatArray,
    high_limit: FloatArray,
    max_eta_s: float,
) -> tuple[FloatArray, FloatArray]:
    """Seconds until ``level + slope t`` reaches each limit (NaN: not within ``max_eta_s`` or no trend)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        significant = np.abs(slope) > 2.0 * np.nan_to_num(slope_sigma, nan=np.inf)
        up = np.where(significant & (slope > 0), (high_limit - level) / slope, np.nan)
        down = np.where(significant & (slope < 0), (low_limit - level) / slope, np.nan)
        eta_high = np.where(level >= high_limit, 0.0, up)
        eta_low = np.where(level <= low_limit, 0.0, down)
    eta_high = np.where((eta_high >= 0) & (eta_high <= max_eta_s), eta_high, np.nan)
    eta_low = np.where((eta_low >= 0) & (eta_low <= max_eta_s), eta_low, np.nan)
    return eta_high, eta_low
