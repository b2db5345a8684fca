"""Least-squares lines for many fields at once, from running sums (no pass over the samples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["FloatArray", "LineFit", "RunningSums"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"


@dataclass(slots=True)
class RunningSums:
    """Per-field sums over a window: n, Σt, Σv, Σt², Σtv, Σv² (t and v relative to reference points)."""

    n: FloatArray
    t: FloatArray
    v: FloatArray
    tt: FloatArray
    tv: FloatArray
    vv: FloatArray

    @classmethod
    def zeros(cls, rows: int) -> RunningSums:
        return cls(*(np.zeros(rows) for _ in range(6)))

    def resize(self, rows: int) -> None:
        for name in ("n", "t", "v", "tt", "tv", "vv"):
            old = getattr(self, name)
            new = np.zeros(rows)
            keep = min(rows, old.shape[0])
            new[:keep] = old[:keep]
            setattr(self, name, new)

    def add(self, rows: npt.NDArray[np.intp], t: FloatArray, v: FloatArray, sign: float) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) one sample per row; rows must be unique."""
        self.n[rows] += sign
        self.t[rows] += sign * t
        self.v[rows] += sign * v
        self.tt[rows] += sign * t * t
        self.tv[rows] += sign * t * v
        self.vv[rows] += sign * v * v

    def fit(self, t_ref: float, v_ref: FloatArray) -> LineFit:
        """Fit ``v = level + slope * (t - t_mean)`` for every row (rows with < 2 samples give NaN)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = self.n
            t_mean = self.t / n
            v_mean = self.v / n
            stt = np.maximum(self.tt - self.t * t_mean, 0.0)
            stv = self.tv - self.t * v_mean
            svv = np.maximum(self.vv - self.v * v_mean, 0.0)
            slope = np.where(stt > 0.0, stv / stt, np.where(n >= 1, 0.0, np.nan))
            sse = np.maximum(svv - slope * stv, 0.0)
            dof = np.maximum(n - 2.0, 1.0)
            sigma = np.sqrt(sse / dof)
        return LineFit(
            n=n.copy(),
            t_mean=t_mean + t_ref,
            v_mean=v_mean + v_ref,
            slope=slope,
            stt=stt,
            sigma=np.where(n >= 3, sigma, np.nan),
            spread=np.sqrt(svv / np.maximum(n - 1.0, 1.0)),
        )


@dataclass(frozen=True, slots=True)
class LineFit:
    """Per-field fitted lines: ``value(t) = v_mean + slope * (t - t_mean)`` (times absolute, in seconds)."""

    n: FloatArray
    t_mean: FloatArray
    v_mean: FloatArray
    slope: FloatArray
    stt: FloatArray
    sigma: FloatArray
    spread: FloatArray

    def at(self, t_s: FloatArray | float) -> FloatArray:
        value: FloatArray = self.v_mean + self.slope * (np.asarray(t_s) - self.t_mean)
        return value

    def slope_sigma(self) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = self.sigma / np.sqrt(self.stt)
        return out

    def predictive_sigma(self, t_s: FloatArray | float) -> FloatArray:
        """Standard deviation of a new reading at ``t_s`` (noise plus uncertainty of the fitted line)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            lever = np.asarray(t_s) - self.t_mean
            var = self.sigma**2 * (1.0 + 1.0 / self.n + lever**2 / self.stt)
        out: FloatArray = np.sqrt(var)
        return out
