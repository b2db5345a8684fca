"""Linear-in-parameters models ``y = x . theta`` per twin, with committed and candidate parameters.

The asset kernels (pump curves, motor vibration, meter scale) predict a variable from measured inputs through
a few parameters. Per twin (slot) this keeps:

* the *committed* parameters, which predictions use, with their covariance (at first the declared prior);
* the *candidate* parameters, estimated online by recursive least squares with forgetting
  (:class:`~drsdtp.kernels.rls.BatchRLS`);
* a typical regressor (running mean of ``|x|``), so "settled" means: the candidate predicts the usual
  operating point to within ``max_rel_std`` (one sigma), whatever the scale of each parameter.

A prediction's variance is ``x' P x`` with ``P`` the committed covariance: a fresh model is as uncertain as
its prior says, a committed one as its estimate was, so divergence is judged against what is really known.
That part of the error does not average out (a curve a little off stays off at the same operating point for
as long as the asset stays there), while the drift and divergence CUSUMs expect independent residuals; so
:meth:`LinearEstimate.predict` reports it at ``BIAS_SIGMAS`` standard deviations: an error the estimate
allows for never accumulates into an alarm on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.protocol import FloatArray
from drsdtp.kernels.rls import BatchRLS

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["BIAS_SIGMAS", "LinearEstimate"]

IndexArray: TypeAlias = "npt.NDArray[np.intp]"
_SAFE_SIGMAS = 4.0  # committed values stay within the prior +- 4 prior sigmas
_TYPICAL_ALPHA = 0.01
BIAS_SIGMAS = 3.0


class LinearEstimate:
    """One linear model for many slots (twins): ``predict``, ``learn``, ``settled``, ``commit``."""

    def __init__(
        self, prior: FloatArray, prior_std: FloatArray, *, max_rel_std: float = 0.03, per_param: bool = False
    ) -> None:
        prior = np.asarray(prior, np.float64)
        prior_std = np.asarray(prior_std, np.float64)
        if prior.ndim != 1 or prior_std.shape != prior.shape or np.any(prior_std <= 0):
            raise InvalidValueError("prior and prior_std: one entry per parameter, std > 0")
        self.dim = prior.shape[0]
        self.prior, self.prior_std = prior, prior_std
        self.max_rel_std, self.per_param = max_rel_std, per_param
        span = 50.0 * prior_std
        self.rls = BatchRLS(prior, prior_std, lower=prior - span, upper=prior + span)
        self.committed = np.zeros((0, self.dim))
        self.committed_cov = np.zeros((0, self.dim, self.dim))
        self.typical = np.zeros((0, self.dim))

    @property
    def slots(self) -> int:
        return int(self.committed.shape[0])

    def resize(self, slots: int) -> None:
        extra = slots - self.slots
        if extra <= 0:
            return
        self.rls.resize(slots)
        self.committed = np.concatenate([self.committed, np.tile(self.prior, (extra, 1))])
        cov = np.diag(self.prior_std**2)
        self.committed_cov = np.concatenate([self.committed_cov, np.tile(cov, (extra, 1, 1))])
        self.typical = np.concatenate([self.typical, np.zeros((extra, self.dim))])

    def predict(self, idx: IndexArray, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean of ``x . theta`` with the committed parameters (one row of ``x`` per slot), and the variance
        of its error, parameter uncertainty counted at ``BIAS_SIGMAS`` (see the module doc)."""
        mean = np.einsum("bi,bi->b", x, self.committed[idx])
        var = np.einsum("bi,bij,bj->b", x, self.committed_cov[idx], x)
        return mean, BIAS_SIGMAS**2 * np.maximum(var, 0.0)

    def learn(
        self, idx: IndexArray, x: FloatArray, y: FloatArray, sigma: FloatArray, forget: FloatArray
    ) -> None:
        """One equation per slot (``idx`` unique); ``sigma`` is the equation's noise."""
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1) & np.isfinite(sigma) & (sigma > 0)
        if not ok.any():
            return
        sel = idx[ok]
        self.rls.update(sel, x[ok], y[ok], sigma[ok], forget[ok])
        self.typical[sel] += _TYPICAL_ALPHA * (np.abs(x[ok]) - self.typical[sel])

    def settled(self, slot: int, *, relaxed: bool = False) -> bool:
        """Whether the candidate predicts the typical operating point within ``max_rel_std`` (``per_param``:
        whether every parameter is known to that relative precision; for rates that sum to about zero)."""
        x = self.typical[slot]
        if not np.any(x > 0):
            return False
        theta, cov = self.rls.theta[slot], self.rls.cov[slot]
        limit = self.max_rel_std * (2.0 if relaxed else 1.0)
        if self.per_param:
            std = np.sqrt(np.maximum(np.diag(cov), 0.0))
            return bool(np.all(std < limit * np.abs(theta)))
        level = abs(float(x @ theta))
        spread = float(np.sqrt(max(float(x @ cov @ x), 0.0)))
        return level > 0 and spread < limit * level

    def commit(self, slot: int) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
        """Adopt the candidate (clipped to the safe range); returns (old, new, clipped)."""
        old = self.committed[slot].copy()
        candidate = self.rls.theta[slot]
        lo = self.prior - _SAFE_SIGMAS * self.prior_std
        hi = self.prior + _SAFE_SIGMAS * self.prior_std
        new = np.clip(candidate, lo, hi)
        self.committed[slot] = new
        self.committed_cov[slot] = self.rls.cov[slot]
        return old, new, new != candidate

    def reopen(self, idx: IndexArray) -> None:
        self.rls.reopen(np.asarray(idx, np.intp), fraction=1.0)

    def candidate(self, slot: int) -> FloatArray:
        out: FloatArray = self.rls.theta[slot].copy()
        return out

    def committed_std(self, slot: int) -> FloatArray:
        out: FloatArray = np.sqrt(np.maximum(np.diag(self.committed_cov[slot]), 0.0))
        return out
