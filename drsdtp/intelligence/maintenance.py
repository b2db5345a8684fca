"""Remaining useful life from degradation: an exponentially weighted line through an indicator, per row.

The indicator of a sensor is the size of its offset against its peers (or the model); its limit is the
field's ``calibration_tolerance``. When the offset grows significantly (slope above three standard errors,
over at least ``min_span_s`` of history), the time left until it reaches the tolerance is the calibration's
remaining useful life. The indicator is a smoothed (autocorrelated) series, so it is sampled only every
``sample_every_s``: closer samples would make the standard error look smaller than it is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from drsdtp.intelligence.linefit import FloatArray

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["DegradationTracker"]


class DegradationTracker:
    """Weighted least-squares line per row with weights ``exp(-age / memory_s)``."""

    def __init__(
        self, memory_s: float = 6 * 3600.0, sample_every_s: float = 300.0, min_span_s: float = 2 * 3600.0
    ) -> None:
        self.memory_s, self.sample_every_s, self.min_span_s = memory_s, sample_every_s, min_span_s
        self.t0 = math.nan
        self._sums = np.zeros((6, 0))  # w, wt, wy, wtt, wty, wyy
        self.last_t = np.zeros(0)
        self.first_t = np.zeros(0)

    def resize(self, rows: int) -> None:
        extra = rows - self.last_t.shape[0]
        if extra > 0:
            self._sums = np.concatenate([self._sums, np.zeros((6, extra))], axis=1)
            self.last_t = np.r_[self.last_t, np.full(extra, np.nan)]
            self.first_t = np.r_[self.first_t, np.full(extra, np.nan)]

    def update(self, valid: npt.NDArray[np.bool_], t_s: float, y: FloatArray) -> None:
        self.resize(valid.shape[0])
        n = valid.shape[0]
        due = ~(t_s - self.last_t[:n] < self.sample_every_s)  # NaN (never sampled) counts as due
        idx = np.flatnonzero(valid & np.isfinite(y) & due)
        if idx.size == 0:
            return
        if math.isnan(self.t0):
            self.t0 = t_s
        t = t_s - self.t0
        last = self.last_t[idx]
        decay = np.where(np.isnan(last), 1.0, np.exp(-np.maximum(t_s - last, 0.0) / self.memory_s))
        yy = y[idx]
        self._sums[:, idx] *= decay
        self._sums[:, idx] += np.vstack(
            [np.ones(idx.size), np.full(idx.size, t), yy, np.full(idx.size, t * t), t * yy, yy * yy]
        )
        self.last_t[idx] = t_s
        self.first_t[idx] = np.where(np.isnan(self.first_t[idx]), t_s, self.first_t[idx])

    def slope(self, rows: int) -> tuple[FloatArray, FloatArray]:
        """Slope per second and its standard error, for the first ``rows`` rows."""
        self.resize(rows)
        w, wt, wy, wtt, wty, wyy = self._sums[:, :rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            stt = wtt - wt * wt / w
            sty = wty - wt * wy / w
            syy = wyy - wy * wy / w
            slope = sty / stt
            resid = np.maximum(syy - slope * sty, 0.0) / np.maximum(w - 2.0, 1.0)
            stderr = np.sqrt(resid / stt)
        span = self.last_t[:rows] - self.first_t[:rows]
        ok = (w > 3.0) & (stt > 0) & (span >= self.min_span_s)
        return np.where(ok, slope, np.nan), np.where(ok, stderr, np.nan)

    def remaining_s(self, current: FloatArray, limit: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Seconds until ``|indicator|`` reaches ``limit`` (NaN: no significant degradation), and the rate."""
        n = current.shape[0]
        slope, stderr = self.slope(n)
        growth = slope * np.sign(current)  # rate at which |indicator| grows
        with np.errstate(invalid="ignore", divide="ignore"):
            left = (limit - np.abs(current)) / growth
        significant = (growth > 3.0 * stderr) & (growth > 0)
        remaining = np.where(np.abs(current) >= limit, 0.0, np.where(significant, left, np.nan))
        return remaining, growth
