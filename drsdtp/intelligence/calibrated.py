"""Forecasts for any field with calibrated prediction intervals, chosen and sized on the field's own past.

Four predictors, each using only readings up to its origin:

``last``      the newest reading (best on step-like and quantised streams);
``naive``     the level now (median of the 5 newest readings: a spike does not move it);
``trend``     the level plus the least-squares slope of the newest readings (at most 60, spanning at most
              the horizon), damped: never extrapolated further than the span it was fitted on;
``seasonal``  where the history covers at least two days: the reading one day before the target time, moved
              by how much the level now differs from the level one day ago (seasonal naive with level);
``profile``   where the caller passes a learned seasonal baseline (the model-free detector's daily profile
              and weekday offsets, :mod:`drsdtp.intelligence.detect.seasonal`): the level of the newest
              readings less the baseline, plus the baseline at the target time. The baseline was learned
              from the same readings the backtest replays, so its errors there are somewhat optimistic.

Calibration by backtest (split conformal): the predictors are replayed from up to ``origins`` earlier
origins inside the field's window, each target an actual (interpolated) reading. Per horizon, the predictor
with the lowest mean absolute error is chosen and its interval is the empirical ``nominal`` quantile of its
absolute errors (the ``ceil((m + 1) * nominal)``-th smallest of ``m``): on a stream whose errors are
exchangeable with its past, the interval covers the reading with probability at least ``nominal``. Measured
on the corpus: ``benches/validate_forecast.py``. With fewer than :data:`MIN_ORIGINS` usable origins a
horizon gets no interval.

Time to threshold: the chosen forecast on a one-minute grid up to the longest horizon; the first minute its
mean reaches a declared limit, and the first minute its interval does (the earliest it may).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["DAY_S", "METHODS", "CalibratedForecast", "Crossing", "forecast_series"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
Baseline = Callable[[FloatArray], FloatArray]  # times -> a learned seasonal baseline there
DAY_S: Final = 86_400.0
METHODS: Final = ("last", "naive", "trend", "seasonal", "profile")
MIN_ORIGINS: Final = 8
LEVEL_K: Final = 5
TREND_MAX: Final = 60


@dataclass(frozen=True, slots=True)
class Crossing:
    limit: float
    direction: str  # "above" or "below"
    eta_s: float | None  # the mean reaches it (None: not within the look-ahead)
    earliest_s: float | None  # the interval reaches it


@dataclass(frozen=True, slots=True)
class CalibratedForecast:
    t_s: float
    level: float
    horizons_s: tuple[float, ...]
    method: tuple[str, ...]  # per horizon
    mean: tuple[float, ...]
    lower: tuple[float, ...]  # NaN: not enough history to calibrate
    upper: tuple[float, ...]
    errors: tuple[FloatArray, ...]  # backtest absolute errors of the chosen method, per horizon
    seasonal: bool  # a daily seasonal predictor (or a learned baseline) was available
    crossings: tuple[Crossing, ...]


class _History:
    def __init__(self, t: FloatArray, v: FloatArray, baseline: Baseline | None = None) -> None:
        self.t, self.v = t, v
        self.baseline = baseline
        self.resid = v - baseline(t) if baseline is not None else v
        self.ct = np.concatenate([[0.0], np.cumsum(t - t[0])])
        self.cv = np.concatenate([[0.0], np.cumsum(v)])
        self.ctt = np.concatenate([[0.0], np.cumsum((t - t[0]) ** 2)])
        self.ctv = np.concatenate([[0.0], np.cumsum((t - t[0]) * v)])
        self.gap = float(np.median(np.diff(t))) if t.size > 1 else 0.0

    def end(self, origins: FloatArray) -> npt.NDArray[np.intp]:
        """Index one past the last reading at or before each origin."""
        return np.searchsorted(self.t, origins, side="right")

    def level(self, end: npt.NDArray[np.intp], resid: bool = False) -> FloatArray:
        k = np.minimum(end, LEVEL_K)
        idx = end[:, None] - 1 - np.arange(LEVEL_K)[None, :]
        src = self.resid if resid else self.v
        vals = np.where(np.arange(LEVEL_K)[None, :] < k[:, None], src[np.maximum(idx, 0)], np.nan)
        out: FloatArray = np.nanmedian(vals, axis=1)
        return out

    def slope(self, end: npt.NDArray[np.intp], span_s: float) -> tuple[FloatArray, FloatArray]:
        """Least-squares slope of the newest readings (at most TREND_MAX, within span_s) and that span."""
        start = np.maximum(end - TREND_MAX, 0)
        start = np.maximum(start, np.searchsorted(self.t, self.t[np.maximum(end - 1, 0)] - span_s))
        n = (end - start).astype(np.float64)
        st, sv = self.ct[end] - self.ct[start], self.cv[end] - self.cv[start]
        stt, stv = self.ctt[end] - self.ctt[start], self.ctv[end] - self.ctv[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = stt - st * st / n
            slope = np.where((n >= 3) & (var > 0), (stv - st * sv / n) / var, 0.0)
        fitted = self.t[np.maximum(end - 1, 0)] - self.t[np.minimum(start, len(self.t) - 1)]
        return np.nan_to_num(slope), fitted

    def at(self, times: FloatArray) -> FloatArray:
        out: FloatArray = np.interp(times, self.t, self.v)
        return out


def _predict(h: _History, method: str, origins: FloatArray, horizon_s: float) -> FloatArray:
    end = h.end(origins)
    if method == "last":
        out_last: FloatArray = h.v[np.maximum(end - 1, 0)]
        return out_last
    if method == "profile" and h.baseline is not None:
        out_profile: FloatArray = h.level(end, resid=True) + h.baseline(origins + horizon_s)
        return out_profile
    level = h.level(end)
    if method == "naive":
        return level
    if method == "trend":
        slope, fitted = h.slope(end, max(horizon_s, 1.0))
        out: FloatArray = level + slope * np.minimum(horizon_s, fitted)
        return out
    # seasonal: one day back, moved by the level change since (then: the level one day before the origin)
    then = np.median(np.stack([h.at(origins - DAY_S - k * h.gap) for k in range(LEVEL_K)]), axis=0)
    before = h.at(origins + horizon_s - DAY_S)
    seasonal: FloatArray = before + (level - then)
    return seasonal


def forecast_series(
    t_s: npt.ArrayLike,
    values: npt.ArrayLike,
    now_s: float,
    horizons_s: Sequence[float],
    *,
    nominal: float = 0.9,
    origins: int = 48,
    low_limit: float = math.nan,
    high_limit: float = math.nan,
    baseline: Baseline | None = None,
) -> CalibratedForecast | None:
    """The calibrated forecast of one field from its readings (any order; NaNs ignored); None with fewer
    than 10 readings. ``baseline``: the field's learned seasonal baseline at given times (the ``profile``
    predictor), if it has one."""
    t_all, v_all = np.asarray(t_s, np.float64).ravel(), np.asarray(values, np.float64).ravel()
    ok = np.isfinite(t_all) & np.isfinite(v_all) & (t_all <= now_s)
    t, v = t_all[ok], v_all[ok]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if t.size < 10:
        return None
    hist = _History(t, v, baseline)
    span = float(t[-1] - t[0])
    seasonal = span >= 2 * DAY_S
    methods = [
        m for m in METHODS if (m != "seasonal" or seasonal) and (m != "profile" or baseline is not None)
    ]
    now = np.array([now_s])
    chosen: list[str] = []
    means: list[float] = []
    lowers: list[float] = []
    uppers: list[float] = []
    errors: list[FloatArray] = []
    for horizon in horizons_s:
        # origins from the second half of the window (seasonal: after the first day), each target inside it
        first = t[0] + (DAY_S if seasonal else 0.0) + 0.25 * max(0.0, span - (DAY_S if seasonal else 0.0))
        last = t[-1] - horizon
        best = ("naive", math.inf, np.zeros(0))
        if last > first:
            origin = np.linspace(first, last, origins)
            actual = hist.at(origin + horizon)
            for method in methods:
                err = np.abs(actual - _predict(hist, method, origin, horizon))
                err = err[np.isfinite(err)]
                mae = float(err.mean()) if err.size else math.inf
                if mae < best[1]:
                    best = (method, mae, err)
        method, _, err = best
        mean = float(_predict(hist, method, now, horizon)[0])
        q = _conformal(err, nominal)
        chosen.append(method)
        means.append(mean)
        lowers.append(mean - q)
        uppers.append(mean + q)
        errors.append(np.sort(err))
    level = float(hist.level(hist.end(now))[0])
    crossings = _crossings(hist, now_s, horizons_s, chosen, lowers, uppers, level, low_limit, high_limit)
    return CalibratedForecast(
        t_s=now_s,
        level=level,
        horizons_s=tuple(float(h) for h in horizons_s),
        method=tuple(chosen),
        mean=tuple(means),
        lower=tuple(lowers),
        upper=tuple(uppers),
        errors=tuple(errors),
        seasonal=seasonal or baseline is not None,
        crossings=crossings,
    )


def _conformal(err: FloatArray, nominal: float) -> float:
    m = err.size
    if m < MIN_ORIGINS:
        return math.nan
    k = math.ceil((m + 1) * nominal)
    return float(np.sort(err)[min(k, m) - 1])


def _crossings(
    hist: _History,
    now_s: float,
    horizons_s: Sequence[float],
    methods: list[str],
    lowers: list[float],
    uppers: list[float],
    level: float,
    low: float,
    high: float,
) -> tuple[Crossing, ...]:
    if not horizons_s or (math.isnan(low) and math.isnan(high)):
        return ()
    longest = max(horizons_s)
    grid = np.arange(60.0, longest + 1.0, 60.0)
    hs = np.asarray(horizons_s)
    pick = np.searchsorted(hs, grid, side="left").clip(0, len(hs) - 1)  # the declared horizon at or after
    now = np.array([now_s])
    path = np.array([_predict(hist, methods[i], now, float(g))[0] for g, i in zip(grid, pick, strict=True)])
    half = np.array([(uppers[i] - lowers[i]) / 2.0 for i in pick])
    out: list[Crossing] = []
    for limit, direction in ((high, "above"), (low, "below")):
        if math.isnan(limit):
            continue
        sign = 1.0 if direction == "above" else -1.0
        reached = sign * (path - limit) >= 0
        maybe = sign * (path + sign * np.nan_to_num(half, nan=0.0) - limit) >= 0
        already = sign * (level - limit) >= 0 and math.isfinite(level)
        eta = 0.0 if already else (float(grid[np.argmax(reached)]) if reached.any() else None)
        earliest = 0.0 if already else (float(grid[np.argmax(maybe)]) if maybe.any() else None)
        out.append(Crossing(limit, direction, eta, earliest))
    return tuple(out)
