"""Daily and weekly seasonal baselines learned online from the readings' timestamps, vectorised over fields.

A field's baseline is ``S(time of day) + W(day of week)``: ``S`` a daily profile, a uniform cubic B-spline
over ``BINS`` bins (a plateau's edges fit to a small share of the noise), ``W`` one offset per day of the week
(weekends, closing days). Both learn ``v - level - S - W`` against a slow level (running means at first,
then about ``DAYS_S`` days of memory for ``S`` and ``DAYS_W`` weeks for ``W``; what the first day taught is
only a first guess, since the level was still off by the part of the cycle not yet seen),
and both are kept at zero mean (the level belongs to the detector's tests).

Neither is used until it has shown that it predicts: each component is enabled on its own once its
out-of-sample error (the baseline predicted *before* the reading teaches it) explains most of the variance
(``S``: after a day of learning, against ``v - level``; ``W``: after a week, against the error of ``S``
alone). Slow streams with no daily habit never enable anything; a stream with one is scored on
``v - baseline`` (:class:`~.detector.StreamDetector` restarts the field's learning when a component turns on,
since every statistic learned on the raw stream is then wrong). Days are UTC days: a weekly habit that turns
at local midnight blurs over the first hours of the day in other time zones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["BINS", "SeasonalBaseline"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
IndexArray: TypeAlias = "npt.NDArray[np.intp]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
DAY: Final[float] = 86_400.0
BINS: Final[int] = 96  # 15-minute bins
DAYS_S: Final[float] = 4.0  # memory of the daily profile, in days
DAYS_W: Final[float] = 3.0  # memory of the weekday offsets, in weeks
DAYS_LEVEL: Final[float] = 7.0  # the level the components are learned against
EXPLAINED_S: Final[float] = 0.25  # enable S once its error variance is under this share of the variance
EXPLAINED_W: Final[float] = 0.6  # enable W once it cuts the error variance of S alone to this share
RESOLUTION: Final[float] = 2e-3  # the profile's fit, as a share of the spread it explains
MIN_PER_DAY: Final[float] = 24.0  # fewer readings a day than this: no daily profile
# a weekday offset's turn at midnight shows in the tests (windows of up to 64 readings) for hours
TURN_S: Final[float] = 4 * 3600.0
TURN_READINGS: Final[float] = 64.0


class SeasonalBaseline:
    """Per-field daily profile and weekday offsets; arrays grow with :meth:`resize`."""

    def __init__(self, fields: int = 0) -> None:
        self.fields = 0
        self.prof = np.zeros((0, BINS))
        self.prof_n = np.zeros((0, BINS))  # weight each bin has learned from
        self.prof_sum = np.zeros(0)  # sum of ``prof`` (its mean is taken out of every prediction)
        self.week = np.zeros((0, 7))
        self.week_n = np.zeros((0, 7))
        self.week_day = np.zeros((0, 7))  # the day each day of the week was first learned
        self.level = np.zeros(0)
        self.level_n = np.zeros(0)  # readings in the level's running mean (restarted a day in)
        self.n = np.zeros(0)
        self.first_t = np.zeros(0)
        self.var_tot = np.zeros(0)  # out-of-sample: E(v - level)^2
        self.var_s = np.zeros(0)  # E(v - level - S)^2
        self.var_w = np.zeros(0)  # E(v - level - S - W)^2, on days of the week already learned
        self.var_ws = np.zeros(0)  # E(v - level - S)^2 over the same readings
        self.var_d = np.zeros(0)  # E(step of v - level - S)^2: 2 var_s for noise, less for structure
        self.last_e = np.zeros(0)
        self.local_e = np.zeros(0)  # a local mean of the error (8 readings) and the spread around it
        self.var_loc = np.zeros(0)
        self.eval_s = np.zeros(0)  # readings in var_tot / var_s
        self.eval_w = np.zeros(0)
        self.on_s = np.zeros(0, bool)
        self.on_w = np.zeros(0, bool)
        self.resize(fields)

    def resize(self, fields: int) -> None:
        extra = fields - self.fields
        if extra <= 0:
            return
        self.prof = np.r_[self.prof, np.zeros((extra, BINS))]
        self.prof_n = np.r_[self.prof_n, np.zeros((extra, BINS))]
        self.week = np.r_[self.week, np.zeros((extra, 7))]
        self.week_n = np.r_[self.week_n, np.zeros((extra, 7))]
        self.week_day = np.r_[self.week_day, np.full((extra, 7), np.nan)]
        for name in (
            "prof_sum",
            "level",
            "level_n",
            "n",
            "var_tot",
            "var_s",
            "var_w",
            "var_ws",
            "var_d",
            "last_e",
            "local_e",
            "var_loc",
            "eval_s",
            "eval_w",
        ):
            setattr(self, name, np.r_[getattr(self, name), np.zeros(extra)])
        self.first_t = np.r_[self.first_t, np.full(extra, np.nan)]
        self.on_s = np.r_[self.on_s, np.zeros(extra, bool)]
        self.on_w = np.r_[self.on_w, np.zeros(extra, bool)]
        self.fields = fields

    @property
    def active(self) -> BoolArray:
        """Fields scored against a seasonal baseline."""
        out: BoolArray = self.on_s | self.on_w
        return out

    def resolution(self, r: IndexArray) -> FloatArray:
        """The smallest noise unit a residual from the enabled baseline can claim: ``RESOLUTION`` of the
        stream's spread around its level (0 where no baseline is enabled)."""
        out: FloatArray = np.where(self.on_s[r] | self.on_w[r], RESOLUTION * np.sqrt(self.var_tot[r]), 0.0)
        return out

    def _where(self, t: FloatArray) -> tuple[IndexArray, FloatArray, IndexArray, FloatArray]:
        """The four bins of the cubic B-spline at ``t`` and their weights, the day of the week, the day."""
        x = (t % DAY) / DAY * BINS - 0.5
        lo = np.floor(x)
        u = (x - lo)[:, None]
        i = lo.astype(np.intp)[:, None] + np.arange(-1, 3)[None, :]
        w = np.hstack(((1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3)) / 6.0
        day = np.floor(t / DAY)
        return i % BINS, w, day.astype(np.intp) % 7, day

    def _parts(self, r: IndexArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        bins, wt, dow, _ = self._where(t)
        s = (wt * self.prof[r[:, None], bins]).sum(axis=1) - self.prof_sum[r] / BINS
        wk = self.week[r]
        seen = self.week_n[r] > 0
        mean_w = np.where(seen, wk, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)
        w = np.where(seen[np.arange(r.size), dow], wk[np.arange(r.size), dow] - mean_w, 0.0)
        return s, w

    def baseline(self, r: IndexArray, t: FloatArray) -> FloatArray:
        """The enabled part of each field's seasonal baseline at ``t`` (0 where none is enabled)."""
        if not self.active[r].any():
            return np.zeros(r.size)
        s, w = self._parts(r, t)
        out: FloatArray = np.where(self.on_s[r], s, 0.0) + np.where(self.on_w[r], w, 0.0)
        return out

    def forecast(self, r: IndexArray, now_s: float, horizons_s: FloatArray) -> FloatArray:
        """``(rows, horizons)``: the enabled baseline at each horizon less the baseline now (0 without)."""
        out = np.zeros((r.size, horizons_s.size))
        if not self.active[r].any():
            return out
        now = self.baseline(r, np.full(r.size, now_s))
        for j, h in enumerate(horizons_s.tolist()):
            out[:, j] = self.baseline(r, np.full(r.size, now_s + h)) - now
        return out

    def day_turn(self, r: IndexArray, t: FloatArray, period: FloatArray) -> FloatArray:
        """How much the learned weekday offset changed at the last midnight (today's less yesterday's), in
        the first ``TURN_READINGS`` readings (at least ``TURN_S``) of a day, where the offsets are not yet
        part of the baseline and both days were learned on an earlier day; 0 elsewhere."""
        day = np.floor(t / DAY)
        since = t - day * DAY
        per = np.where(np.isfinite(period) & (period > 0), period, DAY)
        dow = day.astype(np.intp) % 7
        today, yesterday = self.week[r, dow], self.week[r, (dow - 1) % 7]
        known = (self.week_day[r, dow] < day) & (self.week_day[r, (dow - 1) % 7] < day - 1)
        known &= (self.week_n[r, dow] > 0) & (self.week_n[r, (dow - 1) % 7] > 0)
        near = since <= np.maximum(TURN_S, TURN_READINGS * per)
        out: FloatArray = np.where(known & near & ~self.on_w[r], today - yesterday, 0.0)
        return out

    def learn(
        self, r: IndexArray, t: FloatArray, v: FloatArray, period: FloatArray, ok: BoolArray
    ) -> BoolArray:
        """Teach the readings (``ok``: not anomalous); returns the rows whose baseline just turned on or grew
        (their detector state must restart). ``period`` is each field's learned sampling period."""
        per_day = DAY / np.where(np.isfinite(period) & (period > 0), period, DAY)
        daily = per_day >= MIN_PER_DAY
        first = ~np.isfinite(self.first_t[r])
        self.first_t[r] = np.where(first, t, self.first_t[r])
        go = ok & daily
        if not go.any():
            return np.zeros(r.size, bool)
        r, t, v, per_day = r[go], t[go], v[go], per_day[go]
        bins, wt, dow, day = self._where(t)
        s, w = self._parts(r, t)
        n = self.n[r]
        level = np.where(n == 0, v - s - w, self.level[r])
        # out-of-sample errors, once a day (S) or that day of the week (W) was learned before
        span = t - self.first_t[r]
        e_tot, e_s, e_w = v - level, v - level - s, v - level - s - w
        lr_eval = np.maximum(1.0 / (self.eval_s[r] + 1.0), 1.0 / per_day)
        eval_s = span >= DAY
        self.var_tot[r] = np.where(eval_s, self.var_tot[r] + lr_eval * (e_tot**2 - self.var_tot[r]), 0.0)
        self.var_s[r] = np.where(eval_s, self.var_s[r] + lr_eval * (e_s**2 - self.var_s[r]), 0.0)
        # noise or structure: steps of the error against its spread around a local mean (8 readings)
        # (of the whole baseline as learned so far: a weekly offset is not the profile's structure)
        step = e_w - self.last_e[r]
        self.var_d[r] = np.where(eval_s, self.var_d[r] + lr_eval * (step**2 - self.var_d[r]), 0.0)
        dev = e_w - self.local_e[r]
        self.var_loc[r] = np.where(eval_s, self.var_loc[r] + lr_eval * (dev**2 - self.var_loc[r]), 0.0)
        self.local_e[r] = np.where(n == 0, e_w, self.local_e[r] + (e_w - self.local_e[r]) / 8.0)
        self.last_e[r] = e_w
        # a day in, the level is the first day's mean; what the profile learned before, against a running
        # mean of part of a day, is only a first guess: the next days overrule it
        second = eval_s & (self.eval_s[r] == 0)
        if second.any():
            self.prof_n[r[second]] = np.minimum(self.prof_n[r[second]], 1.0)
            self.level_n[r[second]] = 0.0
            self.week[r[second]] = 0.0  # learned against a level that was still off by half a cycle
            self.week_n[r[second]] = 0.0
            self.week_day[r[second]] = np.nan
        self.eval_s[r] = np.where(eval_s, self.eval_s[r] + 1.0, 0.0)
        # a day of the week is known once learned for half a day, on an earlier day
        first_day = self.week_day[r, dow]
        self.week_day[r, dow] = np.where(np.isfinite(first_day), first_day, day)
        known = (self.week_n[r, dow] >= 0.5 * per_day) & (day > first_day)
        lr_w = np.maximum(1.0 / (self.eval_w[r] + 1.0), 1.0 / (7.0 * per_day))
        # both sides of W's comparison over the same readings
        self.var_w[r] = np.where(known, self.var_w[r] + lr_w * (e_w**2 - self.var_w[r]), self.var_w[r])
        self.var_ws[r] = np.where(known, self.var_ws[r] + lr_w * (e_s**2 - self.var_ws[r]), self.var_ws[r])
        self.eval_w[r] = self.eval_w[r] + known
        # teach: the level, then the two bins around the reading, then the day of the week
        lr_level = np.maximum(1.0 / (self.level_n[r] + 1.0), 1.0 / (DAYS_LEVEL * per_day))
        self.level_n[r] += 1.0
        self.level[r] = level + lr_level * (v - s - w - level)
        e = v - level - s - w
        rr = r[:, None]
        k = self.prof_n[rr, bins]
        lr = np.maximum(wt / (k + wt + 1e-300), wt / (DAYS_S * np.maximum(per_day / BINS, 1.0))[:, None])
        delta = lr * e[:, None]
        self.prof[rr, bins] += delta
        self.prof_sum[r] += delta.sum(axis=1)
        self.prof_n[rr, bins] = k + wt
        kw = self.week_n[r, dow]
        lr_wk = np.maximum(1.0 / (kw + 1.0), 1.0 / (DAYS_W * per_day))
        self.week[r, dow] += lr_wk * (v - level - s - self.week[r, dow])
        self.week_n[r, dow] = kw + 1.0
        self.n[r] = n + 1.0
        # enable: S after a day of out-of-sample checks; W after a week, if it beats S alone
        was = self.on_s[r] | self.on_w[r]
        # ... and leaves noise, not structure: errors that move slowly (a noiseless cycle the profile cannot
        # follow exactly; their steps are small against their spread around a local mean) would be read as
        # shifts and drifts. Noise steps twice that spread; a weekly offset only moves the local mean
        turn_s = (
            ~self.on_s[r]
            & (self.eval_s[r] >= per_day)
            & (self.var_s[r] < EXPLAINED_S * self.var_tot[r])
            & (self.var_d[r] > self.var_loc[r])
        )
        self.on_s[r] |= turn_s
        turn_w = (
            self.on_s[r]
            & ~self.on_w[r]
            & (self.eval_w[r] >= per_day)
            & (self.var_w[r] < EXPLAINED_W * self.var_ws[r])
        )
        self.on_w[r] |= turn_w
        changed = np.zeros(go.size, bool)
        changed[np.flatnonzero(go)] = turn_s | (turn_w & was)
        return changed
