"""Small vectorised numeric helpers numpy lacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drsdtp.intelligence.linefit import FloatArray

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["erf", "normal_coverage"]


def erf(x: FloatArray) -> FloatArray:
    """Error function (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: FloatArray = sign * (1.0 - poly * np.exp(-a * a))
    return out


def normal_coverage(half_width: FloatArray, sigma: FloatArray) -> FloatArray:
    """P(|X| <= half_width) for X ~ N(0, sigma^2); 0 where sigma is unknown."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = half_width / (np.sqrt(2.0) * sigma)
    out: FloatArray = np.where(np.isfinite(ratio), erf(np.where(np.isfinite(ratio), ratio, 0.0)), 0.0)
    exact: FloatArray = np.where(sigma == 0.0, 1.0, out)
    return exact
