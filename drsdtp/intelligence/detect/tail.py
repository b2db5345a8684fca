"""Online tail calibration of a non-negative statistic, one model per field (vectorised): value -> p-value.

This is what makes every test's score mean the same thing on any stream. For each field the model learns,
from the statistic's own recent history (about ``memory`` readings):

* a running median ``med`` (stochastic approximation: moves a fraction of the statistic's running mean
  towards each sample), and the threshold ``u = ratio * med``;
* the share ``phi`` of samples above ``u`` (decayed counts, with a conservative prior);
* a generalised Pareto tail for the excesses ``S - u`` by the method of moments on decayed sums, shape
  clipped to [0, 0.4] (never lighter than exponential; moments are undefined past 0.5), shrunk towards an
  exponential prior of mean ``prior_scale`` while few excesses have been seen.

Mixtures (a step series: tiny noise and, now and then, a legitimate jump a thousand noise widths high) do
not fit one tail, so the model also keeps a book of the ``book`` largest recent *episodes* (runs above ``u``,
each entered once with its peak): a value this field has reached in two episodes or more within ``memory``
readings gets ``p >= 0.1`` (a habit, never an alarm): anomalous only relative to the field's own history.

``p(S) = phi * (1 + xi (S - u) / beta) ** (-1 / xi)`` above ``u`` (Pickands-Balkema-de Haan, as in SPOT,
Siffer et al. KDD 2017, here with decayed moments instead of a stored peak set); below ``u`` the survival
is interpolated in log space through ``(0, 1)``, ``(med, 0.5)``, ``(u, phi)``. ``p`` estimates how often
clean data of this field exceeds ``S``: a calibrated score by construction, as far as the tail model fits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["TailModel"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
IndexArray: TypeAlias = "npt.NDArray[np.intp]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"


class TailModel:
    """Per-field tail of one statistic; arrays grow with :meth:`resize`."""

    def __init__(
        self,
        *,
        prior_scale: float,
        memory: float = 5000.0,
        ratio: float = 3.0,
        prior_count: float = 8.0,
        book: int = 16,
    ) -> None:
        self.prior_scale, self.ratio, self.prior_count = prior_scale, ratio, prior_count
        self.memory = memory
        self.decay = 1.0 - 1.0 / memory
        self.book = np.zeros((0, book))
        self.book_at = np.zeros((0, book))
        self.episode = np.zeros(0)
        self.med = np.zeros(0)
        self.mean = np.zeros(0)
        self.n = np.zeros(0)
        self.total = np.zeros(0)  # decayed count of samples
        self.above = np.zeros(0)  # decayed count of samples above u
        self.s1 = np.zeros(0)  # decayed sums of the excesses and their squares
        self.s2 = np.zeros(0)

    def resize(self, rows: int) -> None:
        extra = rows - self.med.shape[0]
        if extra > 0:
            for name in ("med", "mean", "n", "total", "above", "s1", "s2", "episode"):
                setattr(self, name, np.r_[getattr(self, name), np.zeros(extra)])
            self.book = np.r_[self.book, np.zeros((extra, self.book.shape[1]))]
            self.book_at = np.r_[self.book_at, np.full((extra, self.book.shape[1]), -np.inf)]

    def restart(self, rows: IndexArray) -> None:
        """Forget what ``rows`` learned (their stream changed meaning)."""
        for name in ("med", "mean", "n", "total", "above", "s1", "s2", "episode", "book"):
            getattr(self, name)[rows] = 0.0
        self.book_at[rows] = -np.inf

    def threshold(self, r: IndexArray) -> FloatArray:
        out: FloatArray = self.ratio * self.med[r]
        return out

    def pvalue(self, r: IndexArray, s: FloatArray, habits: bool = True) -> FloatArray:
        """Estimated probability that a clean sample of row ``r``'s statistic is >= ``s`` (with ``habits``
        False, from the fitted tail alone: for diagnosis)."""
        med, u = self.med[r], self.threshold(r)
        # prior: phi starts at 0.1 (conservative) and follows the observed share of excesses
        phi = (self.above[r] + 0.1 * self.prior_count) / (self.total[r] + self.prior_count)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            # body: log-linear survival through (0, 1), (med, 0.5), (u, phi)
            low = np.exp(np.log(0.5) * s / np.maximum(med, 1e-300))
            mid = 0.5 * np.exp(np.log(2.0 * phi) * (s - med) / np.maximum(u - med, 1e-300))
        body = np.where(s <= med, low, mid)
        out: FloatArray = np.where(med > 0, np.maximum(body, phi), 1.0)
        hi = np.flatnonzero(s > u)  # the tail, only where it applies (usually a few rows)
        if hi.size:
            m1, xi = self._shape(r[hi])
            beta = np.maximum(m1 * (1.0 - xi), 1e-300)  # GPD mean = beta / (1 - xi)
            y = s[hi] - u[hi]
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                gpd = np.where(
                    xi > 1e-6, np.power(1.0 + xi * y / beta, -1.0 / np.maximum(xi, 1e-6)), np.exp(-y / beta)
                )
            out[hi] = phi[hi] * gpd
        rare = (
            np.flatnonzero(out < 0.1) if habits else np.zeros(0, np.intp)
        )  # a habit of the field (booked twice) is never an alarm
        if rare.size:
            out[rare] = np.where(self.habit(r[rare], s[rare]), 0.1, out[rare])
        p: FloatArray = np.clip(np.nan_to_num(out, nan=1.0), 0.0, 1.0)
        return p

    def habit(self, r: IndexArray, s: FloatArray) -> BoolArray:
        """Whether row ``r``'s statistic reached ``s`` in two booked episodes or more within memory."""
        live = (self.n[r][:, None] - self.book_at[r]) <= self.memory
        seen: BoolArray = np.count_nonzero(live & (self.book[r] >= s[:, None]), axis=1) >= 2
        return seen

    def mature(self, r: IndexArray) -> BoolArray:
        """Whether the tail rests on enough excesses to be trusted to exclude what it calls anomalous."""
        out: BoolArray = (self.total[r] >= 200.0) & (self.above[r] >= 10.0)
        return out

    def _shape(self, r: IndexArray) -> tuple[FloatArray, FloatArray]:
        """Mean excess and GPD shape by the method of moments, shrunk towards the exponential prior."""
        k0, b0 = self.prior_count, self.prior_scale
        w = self.above[r]
        m1 = (self.s1[r] + k0 * b0) / (w + k0)
        m2 = (self.s2[r] + k0 * 2.0 * b0 * b0) / (w + k0)
        var = np.maximum(m2 - m1 * m1, 1e-300)
        xi: FloatArray = np.clip(0.5 * (1.0 - m1 * m1 / var), 0.0, 0.4)
        return m1, xi

    def update(self, r: IndexArray, s: FloatArray, suspect: BoolArray | None = None) -> None:
        """Learn from samples ``s`` of rows ``r`` (rows unique). A ``suspect`` sample (one the model calls
        anomalous) counts as an excess of the usual size: a lasting change raises ``phi`` and is slowly
        accepted, but one anomaly does not stretch the tail and hide the next one."""
        n = self.n[r]
        first = n == 0
        # episodes above the threshold: book each one's peak when it ends (replacing the smallest or oldest)
        above_u = s > self.ratio * self.med[r]
        peak = self.episode[r]
        ended = ~above_u & (peak > 0)
        if ended.any():
            rows = r[ended]
            stale = (n[ended, None] - self.book_at[rows]) > self.memory
            slot = np.argmin(np.where(stale, -np.inf, self.book[rows]), axis=1)
            replace = peak[ended] > self.book[rows, slot]
            replace |= stale[np.arange(rows.size), slot]
            self.book[rows[replace], slot[replace]] = peak[ended][replace]
            self.book_at[rows[replace], slot[replace]] = n[ended][replace]
        self.episode[r] = np.where(above_u, np.maximum(peak, s), 0.0)
        lr = np.maximum(1.0 / (n + 1.0), 0.01)
        mean = np.where(first, s, self.mean[r] + lr * (s - self.mean[r]))
        med = self.med[r]
        step = 0.02 * np.maximum(mean, 1e-300)
        med = np.where(first, s, med + step * np.sign(s - med))
        med = np.maximum(med, 0.0)
        u = self.ratio * med
        exceed = s > u
        y = np.where(exceed, s - u, 0.0)
        if suspect is not None and suspect.any():
            usual = (self.s1[r] + self.prior_count * self.prior_scale) / (self.above[r] + self.prior_count)
            y = np.where(suspect, usual, y)
            exceed |= suspect
            mean = np.where(suspect, self.mean[r], mean)
            med = np.where(suspect, self.med[r], med)
            u = self.ratio * med
        d = self.decay
        self.total[r] = self.total[r] * d + 1.0
        self.above[r] = self.above[r] * d + exceed
        self.s1[r] = self.s1[r] * d + y
        self.s2[r] = self.s2[r] * d + y * y
        self.mean[r], self.med[r], self.n[r] = mean, med, n + 1.0
