"""Kalman filters for state estimation, vectorised over many twins or fields.

* :func:`scalar_update` fuses one measurement per slot into a scalar state (used by the thermal tracker to
  fuse redundant sensors with the model's prediction, sensor by sensor).
* :class:`LocalTrendFilter` follows level and slope of many fields (constant-velocity model with a
  random-walk slope); :class:`LocalTrendKernel` extrapolates it, with the filter's covariance as uncertainty.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.linear import extrapolate
from drsdtp.kernels.protocol import BoolArray, FloatArray, Prediction, Scenario, TwinState, frozen_map

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["LocalTrendFilter", "LocalTrendKernel", "scalar_update"]


def scalar_update(
    x: FloatArray, var: FloatArray, z: FloatArray, r: FloatArray, ok: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Kalman update of scalar states ``x`` (variance ``var``) with measurements ``z`` (variance ``r``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(ok, var / (var + r), 0.0)
    innovation = np.where(ok, z - x, 0.0)
    return x + gain * innovation, (1.0 - gain) * var


class LocalTrendFilter:
    """Level and slope per field: ``level' = level + slope dt``, slope a random walk.

    ``q_level`` and ``q_slope`` are process noise densities (variance per second) of level and slope.
    """

    def __init__(self, fields: int, q_level: float, q_slope: float) -> None:
        if fields < 0 or q_level < 0 or q_slope < 0:
            raise InvalidValueError("fields and process noise must be >= 0")
        self.q_level, self.q_slope = q_level, q_slope
        self.level = np.full(fields, np.nan)
        self.slope = np.zeros(fields)
        # Covariance entries [[p00, p01], [p01, p11]] as three arrays.
        self.p00 = np.full(fields, np.inf)
        self.p01 = np.zeros(fields)
        self.p11 = np.full(fields, 1e-4)
        self.t_s = np.full(fields, np.nan)

    def update(self, rows: npt.ArrayLike, t_s: FloatArray, z: FloatArray, r: FloatArray) -> FloatArray:
        """Predict each row to ``t_s`` and fuse reading ``z`` (variance ``r``); returns the innovations."""
        idx = np.asarray(rows, dtype=np.intp)
        first = np.isnan(self.level[idx])
        dt = np.where(first, 0.0, np.maximum(t_s - self.t_s[idx], 0.0))
        level = np.where(first, z, self.level[idx] + self.slope[idx] * dt)
        p00, p01, p11 = self.p00[idx], self.p01[idx], self.p11[idx]
        p00 = np.where(first, r, p00 + 2 * dt * p01 + dt * dt * p11 + self.q_level * dt)
        p01 = np.where(first, 0.0, p01 + dt * p11)
        p11 = p11 + self.q_slope * dt
        innovation = z - level
        s = p00 + r
        k0, k1 = p00 / s, p01 / s
        self.level[idx] = level + np.where(first, 0.0, k0 * innovation)
        self.slope[idx] = self.slope[idx] + np.where(first, 0.0, k1 * innovation)
        self.p00[idx] = np.where(first, p00, (1 - k0) * p00)
        self.p01[idx] = np.where(first, p01, (1 - k0) * p01)
        self.p11[idx] = np.where(first, p11, p11 - k1 * p01)
        self.t_s[idx] = t_s
        out: FloatArray = np.where(first, 0.0, innovation)
        return out

    def state(self, row: int, name: str) -> TwinState:
        """The filter's view of one field as a kernel state (variable ``name``)."""
        return TwinState(
            twin="",
            t_s=float(self.t_s[row]),
            values=frozen_map({name: float(self.level[row])}),
            value_std=frozen_map({name: math.sqrt(max(float(self.p00[row]), 0.0))}),
            rates=frozen_map({name: float(self.slope[row])}),
            rate_std=frozen_map({name: math.sqrt(max(float(self.p11[row]), 0.0))}),
        )


class LocalTrendKernel:
    """Extrapolates every variable's level and slope; knows no physics and ignores scenario inputs."""

    name = "kalman.local_trend"

    def __init__(self, z: float = 1.96) -> None:
        self.z = z

    @property
    def variables(self) -> tuple[str, ...]:
        return ()

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        return extrapolate(self.name, state, scenario, horizon_s, self.z)
