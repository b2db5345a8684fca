"""Recursive least squares with exponential forgetting, for many independent small problems at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.protocol import FloatArray

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["BatchRLS"]

IndexArray: TypeAlias = "npt.NDArray[np.intp]"


class BatchRLS:
    """``y ~ x . theta`` per slot, with forgetting, prior, bounds and a cap on the covariance (anti-windup).

    Each equation is weighted by ``1 / sigma`` so ``P`` is the covariance of ``theta``. Without excitation,
    forgetting would inflate ``P`` without bound; each variance is capped at ``max_var_scale`` x its prior.
    """

    def __init__(
        self,
        prior_mean: FloatArray,
        prior_std: FloatArray,
        lower: FloatArray,
        upper: FloatArray,
        max_var_scale: float = 4.0,
    ) -> None:
        dim = prior_mean.shape[0]
        if not (prior_std.shape == lower.shape == upper.shape == (dim,)) or np.any(prior_std <= 0):
            raise InvalidValueError("prior_mean, prior_std, lower, upper: one entry each, std > 0")
        self.dim = dim
        self.prior_mean, self.prior_var = prior_mean.astype(np.float64), prior_std.astype(np.float64) ** 2
        self.lower, self.upper = lower.astype(np.float64), upper.astype(np.float64)
        self.var_cap = self.prior_var * max_var_scale
        self.theta = np.zeros((0, dim))
        self.cov = np.zeros((0, dim, dim))

    def resize(self, slots: int) -> None:
        extra = slots - self.theta.shape[0]
        if extra > 0:
            self.theta = np.concatenate([self.theta, np.tile(self.prior_mean, (extra, 1))])
            self.cov = np.concatenate([self.cov, np.tile(np.diag(self.prior_var), (extra, 1, 1))])

    def update(
        self, slots: IndexArray, x: FloatArray, y: FloatArray, sigma: FloatArray, forget: FloatArray
    ) -> None:
        """One equation per slot (slots unique): regressors ``x (B, dim)``, target ``y (B,)``."""
        if slots.size == 0:
            return
        xs = x / sigma[:, None]
        ys = y / sigma
        cov, theta = self.cov[slots], self.theta[slots]
        px = np.einsum("bij,bj->bi", cov, xs)
        denom = forget + np.einsum("bi,bi->b", xs, px)
        gain = px / denom[:, None]
        err = ys - np.einsum("bi,bi->b", xs, theta)
        theta = np.clip(theta + gain * err[:, None], self.lower, self.upper)
        cov = (cov - gain[:, :, None] * px[:, None, :]) / forget[:, None, None]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        diag = np.einsum("bii->bi", cov)
        shrink = np.sqrt(np.minimum(1.0, self.var_cap / np.maximum(diag, 1e-300)))
        self.cov[slots] = cov * shrink[:, :, None] * shrink[:, None, :]
        self.theta[slots] = theta

    def reopen(self, slots: IndexArray, fraction: float = 0.25) -> None:
        """Add ``fraction`` of the prior variance back so the estimate moves quickly again."""
        self.cov[slots] += np.diag(self.prior_var * fraction)[None, :, :]

    def std(self, slot: int) -> FloatArray:
        out: FloatArray = np.sqrt(np.maximum(np.diag(self.cov[slot]), 0.0))
        return out
