"""Model-free online anomaly detection for any numeric stream, vectorised over fields.

With no declaration at all, each field learns from its own readings: its sampling period (a running median
of the gaps), its resolution (the smallest non-zero step), a noise unit (the slow mean absolute step,
winsorised at 5 units so legitimate steps do not inflate it, and never below half the resolution: quantised
and integer streams do not get a 1e-6 floor) and, for every test, the tail of the test's own statistic
(:class:`~.tail.TailModel`). The tests, each a non-negative statistic in noise units from the 48 newest
readings:

``spike``       the reading against both the previous one and the median of the 32 before the 4 newest;
``spike_back``  the previous one or two readings against both neighbours, same side (confirmed a reading
                later: a step, unlike a spike or a two-reading glitch, does not come back);
``shift``       the median of the 4 newest readings against the median of the 32 before them (level shift);
``trend``       the median of the 16 newest against the median of the 32 before them (trend change);
``drift``       a fast (8 readings, winsorised) against a slow (128 readings) moving average: slow drifts;
``variance``    the median absolute step over the 16 newest against the noise unit;
``flat``        how many readings in a row repeat the value (within half the resolution): anomalous only
                relative to the completed runs this field has shown;
``gap``         the time since the previous reading, in learned periods (dropout; staleness at a pass);
``level``       the mean of the 32 newest readings against a block mean about 250 readings back, less the
                learned trend, in standard deviations of a local-level model (random walk plus noise, fitted
                to the increments' variance and lag-1 covariance and to consecutive block means). Its null is
                parametric, not a learned tail: the statistic is autocorrelated over hundreds of readings, so
                an empirical tail would learn a slow drift while it grows. Not on streams that mostly repeat
                their value and jump between levels they hold, where it does not hold (there a jump is also
                left to ``spike_back``).

Each statistic becomes a p-value from its field's tail model, raised where this field's own clean
readings show that test's small p-values more often than they claim (:meth:`StreamDetector._calibrate`);
the score is ``1 - min(1, m * min p)`` (Bonferroni over the ``m`` tests), so on clean data a score above
``s`` happens at most about a fraction ``1 - s`` of the readings, on any stream the tail models fit. A
sample a mature tail calls anomalous does not stretch that tail (it would hide the next anomaly).
Statistics start once 48 readings are in; the first ``warmup`` readings of a field are learned, never
scored (score 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from drsdtp.errors import InvalidValueError
from drsdtp.intelligence.detect.seasonal import SeasonalBaseline
from drsdtp.intelligence.detect.tail import TailModel

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["TESTS", "DetectorConfig", "Findings", "ScoreBatch", "StreamDetector"]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
IndexArray: TypeAlias = "npt.NDArray[np.intp]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
TESTS: Final[tuple[str, ...]] = (
    "spike",
    "spike_back",
    "shift",
    "trend",
    "drift",
    "variance",
    "flat",
    "gap",
    "level",
)
_PRIOR_SCALE: Final[dict[str, float]] = {
    "spike": 1.0,
    "spike_back": 1.0,
    "shift": 0.5,
    "trend": 0.5,
    "drift": 0.5,
    "variance": 0.5,
    "flat": 3.0,
    "gap": 1.0,
    "level": 1.0,
}
_W: Final[int] = 48  # readings kept per field
_FLAT: Final[int] = TESTS.index("flat")
_LEVEL: Final[int] = TESTS.index("level")
_BLOCK: Final[int] = 32  # readings per block mean (the long-horizon tests)
_BLOCKS: Final[int] = 8  # block means kept: the level test looks 8 blocks (about 250 readings) back
_BOOK: Final[int] = 6  # completed runs and held jumps kept per field
_Z_MEDIAN: Final[float] = 0.6745  # median of |N(0, 1)|
_F, _I, _B = "f8", "i8", "?"  # dtype codes: numpy is imported on first use
#: per-field state: name -> (initial value, columns (0: a vector), dtype)
_STATE: Final[dict[str, tuple[float, int, str]]] = {
    "ring": (math.nan, _W, _F),
    "ring_t": (math.nan, 2, _F),
    "count": (0, 0, _I),
    "last_t": (math.nan, 0, _F),
    "period": (math.nan, 0, _F),
    "abs_step": (0.0, 0, _F),
    "quantum": (math.inf, 0, _F),
    "run": (0.0, 0, _F),
    "jitter": (0.0, 0, _F),
    "repeat": (0.0, 0, _F),
    "fast": (0.0, 0, _F),
    "slow": (0.0, 0, _F),
    "blocks": (math.nan, _BLOCKS, _F),
    "block_pos": (0, 0, _I),
    "block_sum": (0.0, 0, _F),
    "block_n": (0, 0, _I),
    "inc_mean": (0.0, 0, _F),
    "inc_var": (0.0, 0, _F),
    "inc_cov": (0.0, 0, _F),
    "z_med": (_Z_MEDIAN, 0, _F),
    "z_n": (0.0, 0, _F),
    "block_var": (0.0, 0, _F),
    "block_mu": (0.0, 0, _F),
    "block_k": (0.0, 0, _F),
    "score": (0.0, 0, _F),
    "test": (0, 0, "i1"),
    "magnitude": (0.0, 0, _F),
    "alarm": (False, 0, _B),
    "episode_score": (0.0, 0, _F),
    "episode_test": (0, 0, "i1"),
    "episode_magnitude": (0.0, 0, _F),
    "episode_at": (math.nan, 0, _F),
    "episode_start": (math.nan, 0, _F),
    "last_alarm_t": (math.nan, 0, _F),
    # the longest runs of repeated values the field completed, and when (its reading count)
    "run_top": (0.0, _BOOK, _F),
    "run_at": (-math.inf, _BOOK, _F),
    # modes: levels the field jumped to (or from) and held, how often it entered each, and when last
    "mode_lvl": (math.nan, _BOOK, _F),
    "mode_n": (0.0, _BOOK, _F),
    "mode_at": (-math.inf, _BOOK, _F),
    # jumps that held (signed size in noise units at the time), and when: a setpoint's habitual moves
    "jump_d": (0.0, _BOOK, _F),
    "jump_at": (-math.inf, _BOOK, _F),
    # jumps that came back before they held (glitches), and when; when the latest jump started
    "back_at": (-math.inf, _BOOK, _F),
    "jump_t0": (-math.inf, 0, _F),
    # a jump in progress: the level before it, its size (signed), readings since and their sum
    "pend_base": (math.nan, 0, _F),
    "pend_d": (math.nan, 0, _F),
    "pend_k": (0, 0, _I),
    "pend_sum": (0.0, 0, _F),
    # calibration of each test's p-value on this field (see _calibrate): decayed counts of readings outside
    # alarms, and of those with p below each of the two levels
    "cal_n": (0.0, 0, _F),
    "cal_hits": (0.0, 2 * len(TESTS), _F),  # level 1 for every test, then level 2
    "cal_pend": (0.0, 2 * len(TESTS), _F),  # hits of the episode in progress (booked if it ends clean)
    "cal_bad": (False, 0, _B),  # the episode in progress reached an alarm: not clean
}
_HELD: Final[int] = 16  # readings a jump must hold (never back half way) for its level to be a mode
_JUMP: Final[float] = 6.0  # noise units: a move this large in one reading is a jump (noise rarely is)
_NEAR: Final[float] = 3.0  # noise units: a level this close to a mode is that mode
_CAL: Final[tuple[float, float]] = (1e-2, 1e-3)  # the p-value levels whose clean rates each field measures
_CAL_PRIOR: Final[float] = 2000.0  # readings' worth of belief that the tails are calibrated


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """``threshold``: the default alarm level of the score (1 - 1e-4: about one clean reading in 10k,
    at most); an alarm lasts while the score stays above ``release`` (hysteresis: a statistic wavering
    around the threshold is one event, not many); ``learn_below``: a p-value under this does not stretch
    its test's tail; ``memory``: readings the tails and the noise unit remember (about); an alarm stays
    visible in health for ``max(hold_s, hold_periods x the learned period)`` after its last alarmed
    reading (a spike must not vanish from health before anyone could look)."""

    threshold: float = 1.0 - 1e-4
    release: float = 1.0 - 1e-2
    learn_below: float = 1e-3
    warmup: int = 200
    memory: float = 5000.0
    hold_s: float = 300.0
    hold_periods: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 < self.release <= self.threshold < 1.0:
            raise InvalidValueError(f"detector thresholds need 0 < release <= threshold < 1, got {self}")
        if self.warmup < 2 * _W:
            raise InvalidValueError(f"detector warmup must be >= {2 * _W}, got {self.warmup}")


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """Scores of the readings of one update, aligned with its input (NaN-free; 0 while learning).

    ``test`` indexes :data:`TESTS` (the most significant test), ``magnitude`` is that test's statistic in the
    field's own units (noise units; readings for ``flat``; periods for ``gap``), ``at_s`` the time of the
    reading it is about (the previous one for ``spike_back``)."""

    rows: IndexArray
    t_s: FloatArray
    score: FloatArray
    alarm: BoolArray
    onset: BoolArray  # the reading starts an alarm episode, or turns a spike's episode into another kind
    test: npt.NDArray[np.int8]
    magnitude: FloatArray
    at_s: FloatArray


@dataclass(frozen=True, slots=True)
class Findings:
    """What health shows per field at a pass: the latest alarm episode while it is held (``active``).

    ``alarm`` is whether the field's newest reading is in alarm; ``test``/``magnitude``/``score``/``at_s``
    describe the episode's most significant reading, ``start_s`` its first and ``last_s`` its last alarmed
    reading; ``stale`` is the silence score since the last reading (from the learned gaps) and ``periods``
    that silence in learned periods; ``warm`` whether the field is past its warm-up."""

    active: BoolArray
    alarm: BoolArray
    test: npt.NDArray[np.int8]
    magnitude: FloatArray
    score: FloatArray
    at_s: FloatArray
    start_s: FloatArray
    last_s: FloatArray
    stale: FloatArray
    periods: FloatArray
    period_s: FloatArray
    warm: BoolArray
    latest_spike: BoolArray  # the newest reading itself is a spike
    regular: BoolArray  # readings come on a regular grid (gaps within 5 % of a multiple of the period)
    threshold: float


def _erfc(x: FloatArray) -> FloatArray:
    """Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    out: FloatArray = np.where(x >= 0, t * np.exp(poly), 2.0 - t * np.exp(poly))
    return out


def _decimal_step(a: FloatArray, b: FloatArray) -> FloatArray:
    """The place of the last decimal ``a`` and ``b`` are written with (1.0 for integers, 0.1 for 20.1),
    down to 1e-6 (finer: no decimal step, 0)."""
    out = np.zeros(a.size)
    open_ = np.ones(a.size, bool)
    for k in range(7):
        place = 10.0**-k
        exact = open_
        for x in (a, b):
            scaled = np.abs(x) / place
            exact = exact & (np.abs(scaled - np.rint(scaled)) <= 1e-6 * np.maximum(scaled, 1.0))
        out = np.where(exact, place, out)
        open_ &= ~exact
    return out


def _book(
    top: FloatArray, at: FloatArray, rows: IndexArray, size: FloatArray, now: FloatArray, memory: float
) -> None:
    """Enter ``size`` into each row's book of the largest recent entries (a stale or the smallest slot)."""
    if rows.size == 0:
        return
    stale = (now[:, None] - at[rows]) > memory
    slot = np.argmin(np.where(stale, -np.inf, top[rows]), axis=1)
    take = (size > top[rows, slot]) | stale[np.arange(rows.size), slot]
    top[rows[take], slot[take]] = size[take]
    at[rows[take], slot[take]] = now[take]


class StreamDetector:
    """Per-field online state; :meth:`update` scores a batch of readings (rows may repeat, in time order)."""

    def __init__(self, config: DetectorConfig | None = None, fields: int = 0) -> None:
        self.config = config if config is not None else DetectorConfig()
        self.fields = 0
        self.ring = np.zeros((0, _W))
        self.ring_t = np.zeros((0, 2))  # times of the two newest readings (for spike_back)
        self.count = np.zeros(0, np.int64)
        self.last_t = np.zeros(0)
        self.period = np.zeros(0)
        self.abs_step = np.zeros(0)
        self.quantum = np.zeros(0)
        self.run = np.zeros(0)
        self.jitter = np.zeros(0)  # mean |gap / period - 1|
        self.repeat = np.zeros(0)  # share of readings that repeat the previous value
        self.fast = np.zeros(0)  # moving averages of the value (drift test)
        self.slow = np.zeros(0)
        self.blocks = np.zeros((0, _BLOCKS))  # ring of block means, oldest at ``block_pos``
        self.block_pos = np.zeros(0, np.int64)
        self.block_sum = np.zeros(0)
        self.block_n = np.zeros(0, np.int64)
        # the local-level model of the level test: mean, variance and lag-1 covariance of the increments,
        # and the running median of the test's |z| (inflates z where the model does not fit)
        self.inc_mean = np.zeros(0)
        self.inc_var = np.zeros(0)
        self.inc_cov = np.zeros(0)
        self.z_med = np.zeros(0)
        self.z_n = np.zeros(0)
        self.block_var = np.zeros(0)  # mean square of the detrended difference of consecutive block means
        self.block_mu = np.zeros(0)  # the trend: mean difference of consecutive block means, per reading
        self.block_k = np.zeros(0)  # block differences learned
        self.tails = {
            name: TailModel(prior_scale=_PRIOR_SCALE[name], memory=self.config.memory) for name in TESTS
        }
        # latest outcome per field
        self.score = np.zeros(0)
        self.test = np.zeros(0, np.int8)
        self.magnitude = np.zeros(0)
        self.alarm = np.zeros(0, bool)
        # the latest alarm episode per field: its most significant reading, when it started and last alarmed
        self.episode_score = np.zeros(0)
        self.episode_test = np.zeros(0, np.int8)
        self.episode_magnitude = np.zeros(0)
        self.episode_at = np.zeros(0)
        self.episode_start = np.zeros(0)
        self.last_alarm_t = np.zeros(0)
        # the field's own habits of duration and size (see _habits)
        self.run_top = np.zeros((0, _BOOK))
        self.run_at = np.zeros((0, _BOOK))
        self.mode_lvl = np.zeros((0, _BOOK))
        self.mode_n = np.zeros((0, _BOOK))
        self.mode_at = np.zeros((0, _BOOK))
        self.jump_d = np.zeros((0, _BOOK))
        self.jump_at = np.zeros((0, _BOOK))
        self.back_at = np.zeros((0, _BOOK))
        self.jump_t0 = np.zeros(0)
        self.pend_base = np.zeros(0)
        self.pend_d = np.zeros(0)
        self.pend_k = np.zeros(0, np.int64)
        self.pend_sum = np.zeros(0)
        self.cal_n = np.zeros(0)
        self.cal_hits = np.zeros((0, 2 * len(TESTS)))
        self.cal_pend = np.zeros((0, 2 * len(TESTS)))
        self.cal_bad = np.zeros(0, bool)
        self.seasonal = SeasonalBaseline()
        #: set to a list to record, per scored step, ``(rows, p from each test's own model, p after the
        #: field's habits, p after calibration)`` (arrays ``(tests, rows)``; NaN: the test is not armed).
        #: For diagnosis (``benches/validate_anomaly.py --breakdown``); None on the hot path.
        self.trace: list[tuple[IndexArray, FloatArray, FloatArray, FloatArray]] | None = None
        self.resize(fields)

    # -- shape ----------------------------------------------------------------------------------------------

    def resize(self, fields: int) -> None:
        extra = fields - self.fields
        if extra <= 0:
            return
        for name, (fill, width, dtype) in _STATE.items():
            shape = (extra,) if width == 0 else (extra, width)
            setattr(self, name, np.r_[getattr(self, name), np.full(shape, fill, dtype)])
        for tail in self.tails.values():
            tail.resize(fields)
        self.seasonal.resize(fields)
        self.fields = fields

    def _restart(self, rows: IndexArray) -> None:
        """Forget what ``rows`` learned about their stream (not their sampling period, resolution or
        seasonal baseline): a seasonal baseline turned on, and every statistic of the raw stream is wrong."""
        keep = ("period", "jitter", "quantum", "last_t", "ring_t")
        for name, (fill, _, _) in _STATE.items():
            if name not in keep and not name.startswith("episode") and name != "last_alarm_t":
                getattr(self, name)[rows] = fill
        for tail in self.tails.values():
            tail.restart(rows)

    @property
    def noise(self) -> FloatArray:
        """The noise unit of every field (NaN before two readings)."""
        return self._unit(np.arange(self.fields))

    def _unit(self, r: IndexArray) -> FloatArray:
        q = np.where(np.isfinite(self.quantum[r]), self.quantum[r], 0.0)
        level = np.abs(self.ring[r, -1])
        floor = np.maximum(0.5 * q, 1e-9 * (1.0 + np.nan_to_num(level)))
        # against a seasonal baseline the residual of a noiseless stream is the profile's own fitting error:
        # no yardstick below a small share of the cycle it removes
        floor = np.maximum(floor, self.seasonal.resolution(r))
        unit: FloatArray = np.where(self.count[r] >= 2, np.maximum(0.886 * self.abs_step[r], floor), np.nan)
        return unit

    # -- hot path -------------------------------------------------------------------------------------------

    def update(self, rows: npt.ArrayLike, t_s: npt.ArrayLike, values: npt.ArrayLike) -> ScoreBatch:
        """Score and learn one reading per entry; non-finite readings must be filtered out by the caller."""
        r = np.asarray(rows, dtype=np.intp).ravel()
        t = np.asarray(t_s, dtype=np.float64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        if not (r.shape == t.shape == v.shape):
            raise InvalidValueError("rows, t_s and values must have the same length")
        out_score = np.zeros(r.size)
        out_test = np.zeros(r.size, np.int8)
        out_mag = np.zeros(r.size)
        out_at = t.copy()
        if r.size == 0:
            none = np.zeros(0, bool)
            return ScoreBatch(r, t, out_score, none, none, out_test, out_mag, out_at)
        if r.min() < 0 or r.max() >= self.fields:
            raise InvalidValueError(f"row out of range [0, {self.fields})")
        if np.unique(r).size == r.size:
            rounds = [np.arange(r.size)]
        else:  # the k-th reading of every row in round k, keeping each row's order
            order = np.argsort(r, kind="stable")
            sr = r[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sr)) + 1]
            rank = np.arange(r.size) - np.repeat(starts, np.diff(np.r_[starts, r.size]))
            occurrence = np.empty(r.size, np.int64)
            occurrence[order] = rank
            rounds = [np.flatnonzero(occurrence == k) for k in range(int(occurrence.max()) + 1)]
        for idx in rounds:
            s, m, te, at = self._step(r[idx], t[idx], v[idx])
            out_score[idx], out_mag[idx], out_test[idx], out_at[idx] = s, m, te, at
        out_alarm = np.zeros(r.size, bool)
        out_onset = np.zeros(r.size, bool)
        for idx in rounds:  # hysteresis and episodes, in each row's order
            rows = r[idx]
            was = self.alarm[rows]
            sc = out_score[idx]
            on = (sc >= self.config.threshold) | (was & (sc >= self.config.release))
            onset = on & ~was
            # a spike comes back: an alarm that goes on through another test is that test's episode
            spiky = self.episode_test[rows] <= 1
            relabel = on & ~onset & spiky & (out_test[idx] > 1) & (sc >= self.config.threshold)
            flat_now = (out_test[idx] == _FLAT) & (self.episode_test[rows] != _FLAT)
            relabel |= on & ~onset & flat_now & (sc >= self.config.threshold)
            peak = on & (onset | relabel | (sc > self.episode_score[rows]))
            hit = rows[peak]
            self.episode_score[hit] = sc[peak]
            self.episode_test[hit] = out_test[idx][peak]
            self.episode_magnitude[hit] = out_mag[idx][peak]
            self.episode_at[hit] = out_at[idx][peak]
            self.episode_start[rows[onset]] = t[idx][onset]
            self.last_alarm_t[rows[on]] = t[idx][on]
            self.alarm[rows] = on
            out_alarm[idx], out_onset[idx] = on, onset | relabel
        return ScoreBatch(r, t, out_score, out_alarm, out_onset, out_test, out_mag, out_at)

    def _step(
        self, r: IndexArray, t: FloatArray, v: FloatArray
    ) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int8], FloatArray]:
        cfg = self.config
        new = t > np.nan_to_num(self.last_t[r], nan=-np.inf)  # out-of-order or repeated times: skipped
        r, t, v = r[new], t[new], v[new]
        full = np.zeros(new.shape[0])
        full_mag = np.zeros(new.shape[0])
        full_test = np.zeros(new.shape[0], np.int8)
        full_at = np.zeros(new.shape[0])
        if r.size == 0:
            return full, full_mag, full_test, full_at
        score = np.zeros(r.size)
        mag = np.zeros(r.size)
        test = np.zeros(r.size, np.int8)
        raw = v
        if self.seasonal.active[r].any():  # scored against the seasonal baseline, on the field's lattice
            base = self.seasonal.baseline(r, t)
            q = self.quantum[r]
            lattice = np.isfinite(q) & (q > 0)
            q = np.where(lattice, q, 1.0)
            v = v - np.where(lattice, np.rint(base / q) * q, base)
        count = self.count[r]
        prev = self.ring[r, -1]
        has_prev = count >= 1
        dt = t - self.last_t[r]
        d = v - prev
        absd = np.abs(d)
        tol = 1e-9 * (1.0 + np.abs(v))
        q = self.quantum[r]
        flat_tol = np.maximum(tol, np.where(np.isfinite(q), 0.5 * q, 0.0))
        same = has_prev & (absd <= flat_tol)
        run = np.where(same, self.run[r] + 1.0, 0.0)

        # shift the ring (values oldest first) and compute the statistics on it
        window = np.empty((r.size, _W))
        window[:, :-1] = self.ring[r, 1:]
        window[:, -1] = v
        unit = self._unit_for(r, absd, has_prev)
        # statistics (and their tails) from a full ring on; scores only once the tails have seen enough
        ready = (count + 1 >= _W) & np.isfinite(unit) & (unit > 0)
        scored = count + 1 >= cfg.warmup
        # winsorised at 5 units: one spike moves the fast average by well under a unit
        lim = 5.0 * np.nan_to_num(unit, nan=np.inf)
        fast = np.where(count == 0, v, self.fast[r] + np.clip(v - self.fast[r], -lim, lim) / 8.0)
        slow = np.where(count == 0, v, self.slow[r] + (v - self.slow[r]) / np.minimum(count + 1.0, 128.0))
        stats = np.zeros((len(TESTS), r.size))
        level_p_ok = np.ones(0, bool)
        ref_all = np.full(r.size, math.nan)  # the level before the 4 newest readings (median of 32)
        if ready.any():
            w = window[ready]
            u = unit[ready]
            # reference medians: the 32 readings before the 4 newest, and the 32 before the 16 newest
            refs = np.sort(np.stack((w[:, 12:44], w[:, 0:32]), axis=1), axis=2)
            med = 0.5 * (refs[:, :, 15] + refs[:, :, 16])
            x, x1, x2 = w[:, -1], w[:, -2], w[:, -3]
            stats[0, ready] = np.minimum(np.abs(x - x1), np.abs(x - med[:, 0])) / u
            # a glitch of one or two readings standing off both neighbours on the same side
            x3 = w[:, -4]
            one = np.maximum(x1 - np.maximum(x2, x), np.minimum(x2, x) - x1)
            lo, hi = np.minimum(x1, x2), np.maximum(x1, x2)
            two = np.maximum(lo - np.maximum(x3, x), np.minimum(x3, x) - hi)
            stats[1, ready] = np.maximum(np.maximum(one, two), 0.0) / u
            # medians of the newest 4 and 16: a single spike does not look like a shift
            new4 = np.sort(w[:, 44:], axis=1)
            new16 = np.sort(w[:, 32:], axis=1)
            stats[2, ready] = np.abs(0.5 * (new4[:, 1] + new4[:, 2]) - med[:, 0]) / u
            stats[3, ready] = np.abs(0.5 * (new16[:, 7] + new16[:, 8]) - med[:, 1]) / u
            steps = np.abs(np.diff(w[:, 31:], axis=1))
            stats[4, ready] = np.abs(fast[ready] - self.slow[r[ready]]) / u
            stats[5, ready] = np.sort(steps, axis=1)[:, 8] / u
            stats[6, ready] = run[ready]
            stats[7, ready] = dt[ready] / self.period[r[ready]]
            rr = r[ready]
            level_z, level_ok, level_dev = self._level_z(rr, w, u)
            stats[_LEVEL, ready] = level_z
            pvals = np.stack([self.tails[name].pvalue(rr, stats[i, ready]) for i, name in enumerate(TESTS)])
            if self.trace is not None:  # the tests' own p-values, before habits and calibration
                tail_p = np.stack(
                    [self.tails[name].pvalue(rr, stats[i, ready], False) for i, name in enumerate(TESTS)]
                )
                tail_p[_LEVEL] = np.where(level_ok, _erfc(level_z / math.sqrt(2.0)), math.nan)
            p_shift = pvals[2].copy()  # before the field's habits: a jump to a mode is a jump all the same
            ref_all[ready] = med[:, 0]
            now = count[ready].astype(np.float64)
            m4 = 0.5 * (new4[:, 1] + new4[:, 2])
            at_mode = self._at_mode(rr, now, m4, u)
            self._habits(rr, now, pvals, run[ready], self._at_mode(rr, now, x, u), at_mode)
            # a level change in the hours after a midnight where the field's weekday offsets (learned, not yet
            # trusted) change the same way is that habit (a weekend, a closing day), not a shift
            turn = self.seasonal.day_turn(rr, t[ready], self.period[rr]) / u
            signs = (
                np.sign(x - med[:, 0]),
                np.sign(m4 - med[:, 0]),
                np.sign(0.5 * (new16[:, 7] + new16[:, 8]) - med[:, 1]),
                np.sign(fast[ready] - self.slow[rr]),
            )
            for i, sign in zip((0, 2, 3, 4), signs, strict=True):
                habit = (np.abs(turn) >= _NEAR) & (sign == np.sign(turn))
                pvals[i] = np.where(habit, np.maximum(pvals[i], 0.1), pvals[i])
            day_habit = np.abs(turn) >= _NEAR
            # on a field that jumps and holds as a habit (three held jumps or more within memory: a
            # setpoint's or an operating state's moves; one held shift and its return are two), a move like
            # one of them (same direction, within a factor 3 in size) is not news while it holds. A spike
            # that comes back is still a spike_back; a move of another size or direction still is news.
            live_jump = (now[:, None] - self.jump_at[rr]) <= cfg.memory
            jd = np.where(live_jump, self.jump_d[rr], 0.0)
            held = np.count_nonzero(jd != 0.0, axis=1)
            jumper = held >= 3
            # on such a field whose jumps hold more often than they come back (fewer glitches booked than
            # half its held jumps), a jump is told from a glitch by its duration: the spike test does not
            # judge a jump's first reading (spike_back judges it a reading or two later, if it comes back),
            # and shift and trend do not judge the ring's worth of readings (48) that follow it, while their
            # reference medians straddle it: a jump that holds is this field's habit, a new level or not.
            # A lone field's first new levels are still news (three held jumps first).
            backs = np.count_nonzero((now[:, None] - self.back_at[rr]) <= cfg.memory, axis=1)
            holder = jumper & (2 * backs < held)
            jumping = np.abs(x - x1) >= _JUMP * u
            pvals[0] = np.where(holder & jumping, np.maximum(pvals[0], 0.1), pvals[0])
            settling = holder & (jumping | ((now - self.jump_t0[rr]) <= _W))
            for i in (2, 3):
                pvals[i] = np.where(settling, np.maximum(pvals[i], 0.1), pvals[i])
            for i, sign in zip((0, 2, 3, 4), signs, strict=True):
                move = (sign * stats[i, ready] * u)[:, None]
                ratio = np.abs(jd) / np.maximum(np.abs(move), 1e-300)
                alike = (jd * move > 0) & (ratio <= 3.0) & (ratio >= 1.0 / 3.0)
                habit = jumper & alike.any(axis=1)
                pvals[i] = np.where(habit, np.maximum(pvals[i], 0.1), pvals[i])
            # a move of one resolution step is the finest motion the sensor can show, never news by itself;
            # a field that never moved has shown no step yet: there, one step of the last decimal its two
            # newest readings are written with (20.0 -> 20.1 is one step; 2.0 -> 5.0 three)
            step1 = self.quantum[rr].copy()
            never = ~np.isfinite(step1)
            if never.any():
                step1[never] = _decimal_step(x[never], x1[never])
            step1 *= 1.0 + 1e-6
            for i in (0, 2, 5):
                pvals[i] = np.where(stats[i, ready] * u <= step1, np.maximum(pvals[i], 0.1), pvals[i])
            # runs cluster (a slow quantised signal repeats in streaks), so a run is never rarer than the
            # memoryless law of the field's own repeat rate says: P(run >= R) >= repeat ** R
            pvals[_FLAT] = np.maximum(pvals[_FLAT], np.power(self.repeat[rr], run[ready]))
            # the level test's null is parametric (its statistic is autocorrelated over hundreds of
            # readings: an empirical tail would learn a slow drift while it grows)
            # ... but a change this field makes as a habit (a step series' modes) is not an alarm
            p_level = np.where(level_ok, _erfc(level_z / math.sqrt(2.0)), 1.0)
            low = p_level < 0.1
            if low.any():
                p_level[low] = np.where(self.tails["level"].habit(rr[low], level_z[low]), 0.1, p_level[low])
            pvals[_LEVEL] = np.where(at_mode | day_habit, np.maximum(p_level, 0.1), p_level)
            # a stream that mostly repeats its value and jumps between levels it holds (modes, setpoints) is
            # not described by the local-level model (Gaussian, continuous). One that mostly repeats but never
            # jumped and held (a slow signal read through a coarse quantum, sparse counts) is: there the
            # level test stays (on the tune split it found a held shift at p 1e-11 that this rule erased,
            # with no new false alarm), except for a level move within one resolution step: its increments
            # are mostly zero, so the model's variance is too small to judge the finest motion the sensor
            # can show (a field that never moved, then toggles one step). One that holds its value nine
            # readings in ten moves in jumps: a jump is a mode change until the next reading shows it came
            # back (spike_back). A field that never moved has no modes: its first move is news.
            repeating = self.repeat[rr] > 0.5
            pvals[_LEVEL] = np.where(repeating & ((held >= 1) | (level_dev <= step1)), 1.0, pvals[_LEVEL])
            moded = (self.repeat[rr] > 0.9) & np.isfinite(self.quantum[rr])
            pvals[0] = np.where(moded, np.maximum(pvals[0], 0.1), pvals[0])
            level_p_ok = pvals[_LEVEL] >= cfg.learn_below
            raw_p = pvals
            pvals = self._calibrate(rr, raw_p, scored[ready] & ~self.alarm[rr])
            if self.trace is not None:
                self.trace.append((rr, tail_p, raw_p, pvals))
            best = np.argmin(pvals, axis=0)
            # when several tests alarm, name the most specific: a confirmed spike, then a spike
            alarming = pvals * len(TESTS) <= 1.0 - cfg.threshold
            best = np.where(alarming[0], 0, best)
            best = np.where(alarming[1], 1, best)
            # a flat line is reported as such even while the frozen value also drifts off the trend
            best = np.where(pvals[_FLAT] * len(TESTS) <= 1.0 - cfg.threshold, _FLAT, best)
            p_min = pvals[best, np.arange(best.size)]
            sc = 1.0 - np.minimum(1.0, len(TESTS) * p_min)
            keep = scored[ready]
            score[ready] = np.where(keep, sc, 0.0)
            test[ready] = best.astype(np.int8)
            mag[ready] = np.where(keep, stats[best, np.flatnonzero(ready)], 0.0)
            for i, name in enumerate(TESTS):
                tail = self.tails[name]
                suspect = (raw_p[i] < cfg.learn_below) & scored[ready]
                if i == _FLAT:
                    # flat runs teach their tail once, when they end (a run in progress would teach it
                    # every reading that it is getting longer)
                    ended = ~same[ready]
                    prev_run = self.run[rr]
                    done = (
                        np.maximum(tail.pvalue(rr, prev_run), np.power(self.repeat[rr], prev_run))
                        < cfg.learn_below
                    )
                    tail.update(rr[ended], prev_run[ended], (done & scored[ready])[ended])
                elif i == _LEVEL:
                    self._learn_level(rr, level_z, level_ok, suspect)
                    tail.update(rr[level_ok], level_z[level_ok], suspect[level_ok])
                else:
                    tail.update(rr, stats[i, ready], suspect)
        at = np.where(test == 1, self.ring_t[r, 1], t)
        at = np.where(np.isfinite(at), at, t)

        # learn the stream's own scales (the noise unit always, slowly, so a lasting change is adopted)
        n = count.astype(np.float64)
        lr = np.maximum(1.0 / np.maximum(n, 1.0), 1.0 / cfg.memory * 10.0)
        # winsorised at 5 units: legitimate steps and spikes do not inflate the yardstick
        step = np.minimum(absd, 5.0 * np.nan_to_num(unit, nan=np.inf))
        self.abs_step[r] = np.where(
            count == 1, absd, np.where(has_prev, self.abs_step[r] + lr * (step - self.abs_step[r]), 0.0)
        )
        # after a step the short shift test sees more than the drift test: the step is not a slow drift, so
        # the slow average catches up instead of keeping the drift test high for hundreds of readings
        jump = np.zeros(r.size, bool)
        if ready.any():
            jump[ready] = (stats[2, ready] > stats[4, ready]) & (p_shift < 0.01)
        slow = np.where(jump, slow + 0.25 * (fast - slow), slow)
        self.fast[r], self.slow[r] = fast, slow
        # increments learn while the level test does not call the reading anomalous (a drift is not taught)
        inc_ok = (count >= 2) & np.isfinite(unit)
        inc_ok[ready] &= level_p_ok
        level_p_all = np.ones(r.size, bool)
        level_p_all[ready] = level_p_ok
        lr_inc = np.maximum(1.0 / np.maximum(n - 1.0, 1.0), 2.0 / cfg.memory)
        self._learn_increments(r, d, self.ring[r, -1] - self.ring[r, -2], inc_ok, unit, lr_inc)
        nonzero = has_prev & (absd > tol)
        self.quantum[r] = np.where(nonzero, np.minimum(q, absd), q)
        gap_ok = has_prev & (dt > 0)
        per = self.period[r]
        per = np.where(gap_ok & ~np.isfinite(per), dt, per)
        per = np.where(gap_ok & np.isfinite(per), per * np.exp(0.05 * np.sign(dt - per)), per)
        ratio = dt / np.where(np.isfinite(per), per, 1.0)
        jit = np.where(gap_ok & np.isfinite(per), np.abs(ratio - np.maximum(np.rint(ratio), 1.0)), 0.0)
        self.jitter[r] = np.where(gap_ok, self.jitter[r] + 0.05 * (jit - self.jitter[r]), self.jitter[r])
        self.period[r] = per
        self._learn_habits(r, count.astype(np.float64), v, prev, same, ready, ref_all, unit)
        self.run[r] = run
        self.repeat[r] = np.where(has_prev, self.repeat[r] + lr * (same - self.repeat[r]), self.repeat[r])
        self.ring[r] = window
        # block means for the long-horizon tests (a full block replaces the oldest)
        bsum, bn = self.block_sum[r] + v, self.block_n[r] + 1
        full_block = bn >= _BLOCK
        if full_block.any():
            fr = r[full_block]
            mean = bsum[full_block] / _BLOCK
            last = self.blocks[fr, (self.block_pos[fr] - 1) % _BLOCKS]
            diff = mean - last
            mu = self.block_mu[fr]
            step = diff - mu * _BLOCK
            good = np.isfinite(step)
            if not level_p_all.all():
                good &= level_p_all[full_block]
            k = self.block_k[fr]
            lr_b = np.maximum(1.0 / (k + 1.0), _BLOCK / cfg.memory)
            self.block_var[fr] = np.where(
                good,
                self.block_var[fr] + lr_b * (np.nan_to_num(step) ** 2 - self.block_var[fr]),
                self.block_var[fr],
            )
            self.block_mu[fr] = np.where(good, mu + lr_b * np.nan_to_num(step) / _BLOCK, mu)
            self.block_k[fr] = k + good
            self.blocks[fr, self.block_pos[fr] % _BLOCKS] = bsum[full_block] / _BLOCK
            self.block_pos[fr] += 1
        self.block_sum[r] = np.where(full_block, 0.0, bsum)
        self.block_n[r] = np.where(full_block, 0, bn)
        self.ring_t[r, 0] = self.ring_t[r, 1]
        self.ring_t[r, 1] = t
        self.last_t[r] = t
        self.count[r] = count + 1
        self.score[r], self.test[r], self.magnitude[r] = score, test, mag
        # a baseline that just turned on changes what every statistic means: the field learns again
        restart = self.seasonal.learn(r, t, raw, self.period[r], score < cfg.release)
        if restart.any():
            self._restart(r[restart])
        full[new], full_mag[new], full_test[new], full_at[new] = score, mag, test, at
        return full, full_mag, full_test, full_at

    def _calibrate(self, rr: IndexArray, pvals: FloatArray, learn: BoolArray) -> FloatArray:
        """Each test's p-value as this field's clean readings say it should be (then they learn from it).

        A tail model is a fit: where a field's statistic has a heavier tail than the fit (a mixture, a
        clustered habit), its p-values are too small, and a score of s is exceeded more often than 1 - s.
        Each field therefore counts, over clean readings (about ``memory`` of them; a run of small
        p-values counts once it ended without reaching an alarm), how often each test's p fell below
        1e-2 and 1e-3: rates ``rho1``, ``rho2``, shrunk towards calibrated with ``_CAL_PRIOR``
        readings' worth of belief. The p-value is mapped through the survival curve that passes log-log
        through (1, 1), (1e-2, rho1) and (1e-3, rho2), and below 1e-3 is multiplied by rho2 / 1e-3.
        Extrapolating the slope between the two levels instead (down to half the calibrated one) cut
        held-out false alarms further but lost 7 points of recall: a few thousand clean readings are
        no evidence about the far tail. Only ever raised (a test that is conservative on this field
        stays so: "or better"); the tails still learn from the raw p-values."""
        a1, a2 = _CAL
        k = len(TESTS)
        n = self.cal_n[rr]
        hits = self.cal_hits[rr]
        la1, la2 = math.log(a1), math.log(a2)
        rho1 = np.maximum((hits[:, :k] + a1 * _CAL_PRIOR) / (n[:, None] + _CAL_PRIOR), a1).T
        rho2 = np.minimum(np.maximum((hits[:, k:] + a2 * _CAL_PRIOR) / (n[:, None] + _CAL_PRIOR), a2).T, rho1)
        lr1, lr2 = np.log(rho1), np.log(rho2)
        lp = np.log(np.maximum(pvals, 1e-300))
        lg = np.where(
            lp >= la1,
            lr1 * lp / la1,
            np.where(lp >= la2, lr1 + (lp - la1) * (lr2 - lr1) / (la2 - la1), lr2 + lp - la2),
        )
        out: FloatArray = np.maximum(pvals, np.exp(lg))
        # an episode of small p-values is booked only once it ended without an alarm: an anomaly that
        # builds up (a flat run, a drift) must not teach the calibration before it reaches the threshold
        bad = self.cal_bad[rr] | (out.min(axis=0) * k <= 1.0 - self.config.threshold) | ~learn
        decay = 1.0 - 1.0 / self.config.memory
        pend = self.cal_pend[rr] * decay + np.concatenate((pvals < a1, pvals < a2)).T
        quiet: BoolArray = np.all(pvals >= a1, axis=0)
        book = quiet & ~bad
        self.cal_n[rr] = np.where(learn, n * decay + 1.0, n)
        self.cal_hits[rr] = hits * np.where(learn, decay, 1.0)[:, None] + np.where(book[:, None], pend, 0.0)
        self.cal_pend[rr] = np.where(quiet[:, None], 0.0, pend)
        self.cal_bad[rr] = bad & ~quiet
        return out

    def _at_mode(self, rr: IndexArray, now: FloatArray, x: FloatArray, u: FloatArray) -> BoolArray:
        """Whether ``x`` is within ``_NEAR`` units of a mode the field entered twice or more within memory."""
        live = ((now[:, None] - self.mode_at[rr]) <= self.config.memory) & (self.mode_n[rr] >= 2.0)
        near = np.abs(self.mode_lvl[rr] - x[:, None]) <= _NEAR * u[:, None]
        out: BoolArray = np.any(live & near, axis=1)
        return out

    def _habits(
        self,
        rr: IndexArray,
        now: FloatArray,
        pvals: FloatArray,
        run: FloatArray,
        x_at_mode: BoolArray,
        at_mode: BoolArray,
    ) -> None:
        """Durations and levels the field itself shows as habits are not alarms (``pvals`` at least 0.1):

        * a run of repeated values no longer than twice two runs the field completed within memory (a slow
          quantised signal's flat stretches grow like records; a sensor stuck far longer than any stretch the
          field ever held is still news);
        * a jump to a mode: a level the field jumped to, held and left, twice or more (a setpoint's or an
          operating state's levels). ``spike`` looks at the reading, ``shift``, ``trend``, ``drift`` (and
          ``level``, by the caller) at the median of the 4 newest. A first visit is news, a glitch that comes
          back is still a ``spike_back``, and a held level shift is booked once, so it is news again."""
        memory = self.config.memory
        live = (now[:, None] - self.run_at[rr]) <= memory
        longer = np.count_nonzero(live & (2.0 * self.run_top[rr] >= run[:, None]), axis=1) >= 2
        pvals[_FLAT] = np.where(longer & (run > 0), np.maximum(pvals[_FLAT], 0.1), pvals[_FLAT])
        pvals[0] = np.where(x_at_mode, np.maximum(pvals[0], 0.1), pvals[0])
        for i in (2, 3, 4):
            pvals[i] = np.where(at_mode, np.maximum(pvals[i], 0.1), pvals[i])

    def _learn_habits(
        self,
        r: IndexArray,
        now: FloatArray,
        v: FloatArray,
        prev: FloatArray,
        same: BoolArray,
        ready: BoolArray,
        ref: FloatArray,
        unit: FloatArray,
    ) -> None:
        """Book completed runs; follow jumps of ``_JUMP`` units or more, and when one held ``_HELD``
        readings without coming back half way, book the level it left and the level it holds as modes."""
        memory = self.config.memory
        ended = ~same & (self.run[r] >= 1.0)
        _book(self.run_top, self.run_at, r[ended], self.run[r][ended], now[ended], memory)
        pending = np.isfinite(self.pend_d[r])
        back = pending & (np.abs(v - self.pend_base[r]) < 0.5 * np.abs(self.pend_d[r]))
        k = self.pend_k[r] + 1
        total = self.pend_sum[r] + v
        held = pending & ~back & (k >= _HELD)
        if held.any():
            hr, hu = r[held], unit[held]
            self._book_mode(hr, self.pend_base[hr], now[held], hu, 0.0)
            self._book_mode(hr, total[held] / k[held], now[held], hu, 1.0)
            # the oldest slot gives way: the book keeps the field's latest held jumps, in noise units
            slot = np.argmin(self.jump_at[hr], axis=1)
            self.jump_d[hr, slot] = self.pend_d[hr]
            self.jump_at[hr, slot] = now[held]
        done = back | held
        if back.any():  # a glitch: the oldest slot gives way
            br = r[back]
            slot = np.argmin(self.back_at[br], axis=1)
            self.back_at[br, slot] = now[back]
        start = ready & np.isfinite(ref) & (np.abs(v - prev) >= _JUMP * unit) & (~pending | done)
        self.pend_base[r] = np.where(start, ref, np.where(done, math.nan, self.pend_base[r]))
        self.jump_t0[r] = np.where(start, now, self.jump_t0[r])
        self.pend_d[r] = np.where(start, v - ref, np.where(done, math.nan, self.pend_d[r]))
        self.pend_k[r] = np.where(start | done, 0, k)
        self.pend_sum[r] = np.where(start | done, 0.0, total)

    def _book_mode(
        self, rows: IndexArray, level: FloatArray, now: FloatArray, u: FloatArray, entered: float
    ) -> None:
        """Refresh the nearest live mode within ``_NEAR`` units (an entry counts), or replace the stalest."""
        live = (now[:, None] - self.mode_at[rows]) <= self.config.memory
        dist = np.abs(self.mode_lvl[rows] - level[:, None])
        near = live & (dist <= _NEAR * u[:, None])
        idx = np.arange(rows.size)
        slot = np.where(
            near.any(axis=1),
            np.argmin(np.where(near, dist, np.inf), axis=1),
            np.argmin(self.mode_at[rows], axis=1),
        )
        hit = near[idx, slot]
        n = np.where(hit, self.mode_n[rows, slot], 0.0)
        self.mode_lvl[rows, slot] = np.where(
            hit, self.mode_lvl[rows, slot] + 0.2 * (level - self.mode_lvl[rows, slot]), level
        )
        self.mode_n[rows, slot] = n + np.where(hit, entered, 1.0)
        self.mode_at[rows, slot] = now

    def _level_z(
        self, rr: IndexArray, w: FloatArray, u: FloatArray
    ) -> tuple[FloatArray, BoolArray, FloatArray]:
        """The level test: the mean of the 32 newest readings against the block mean about 250 readings
        back, less the learned trend, in standard deviations of a local-level model (random walk plus
        noise) fitted to the increments: increments have variance ``tau^2 + 2 sigma^2`` and lag-1
        covariance ``-sigma^2``. Divided by the running median of |z| over 0.6745 where that is above one
        (a stream the model does not fit: z is only trusted as far as its own history says). Also returns
        the move itself (the difference less the trend, in the field's units)."""
        pos = self.block_pos[rr]
        old = self.blocks[rr, pos % _BLOCKS]
        ok = np.isfinite(old)
        cur = w[:, _W - _BLOCK :].mean(axis=1)
        lag = (_BLOCKS - 0.5) * _BLOCK + self.block_n[rr] + 0.5  # readings between the two centres
        sigma2 = np.maximum(-self.inc_cov[rr], 0.0)
        noise = 2.0 * sigma2 / _BLOCK
        # the walk's share of the variance, from consecutive block means, grows with the lag
        bv = self.block_var[rr]
        walk = np.maximum(bv - noise, 0.0) * lag / _BLOCK
        # the learned trend is uncertain too: its standard error, carried over the lag
        k_eff = np.maximum(np.minimum(self.block_k[rr], 2.0 * self.config.memory / _BLOCK), 1.0)
        trend_var = (lag / _BLOCK) ** 2 * bv / k_eff
        var = walk + noise + trend_var + (0.05 * u) ** 2
        ok &= self.block_k[rr] >= 16  # about 500 readings: the walk and the noise are known
        move = np.abs(cur - old - self.block_mu[rr] * lag)
        z = move / np.sqrt(var)
        z = np.where(ok, z / np.maximum(1.0, self.z_med[rr] / _Z_MEDIAN), 0.0)
        return z, ok, move

    def _learn_level(self, rr: IndexArray, z: FloatArray, ok: BoolArray, suspect: BoolArray) -> None:
        """The running median of |z| (raw, before the inflation), not taught by suspect readings."""
        learn = ok & ~suspect
        raw = z * np.maximum(1.0, self.z_med[rr] / _Z_MEDIAN)
        n = self.z_n[rr]
        rate = np.maximum(np.minimum(0.05, 4.0 / (n + 1.0)), 2.0 / self.config.memory)
        step = rate * np.maximum(self.z_med[rr], 0.5) * np.sign(raw - self.z_med[rr])
        self.z_med[rr] = np.where(learn, np.maximum(self.z_med[rr] + step, 0.0), self.z_med[rr])
        self.z_n[rr] = n + learn

    def _learn_increments(
        self,
        r: IndexArray,
        d: FloatArray,
        prev_d: FloatArray,
        ok: BoolArray,
        unit: FloatArray,
        lr: FloatArray,
    ) -> None:
        """Mean, variance and lag-1 covariance of the increments (winsorised at 5 units around the mean:
        a spike does not inflate the random walk)."""
        lim = 5.0 * np.nan_to_num(unit, nan=np.inf)
        m = self.inc_mean[r]
        e = np.clip(d - m, -lim, lim)
        e1 = np.clip(prev_d - m, -lim, lim)
        self.inc_mean[r] = np.where(ok, m + lr * e, m)
        self.inc_var[r] = np.where(ok, self.inc_var[r] + lr * (e * e - self.inc_var[r]), self.inc_var[r])
        self.inc_cov[r] = np.where(ok, self.inc_cov[r] + lr * (e * e1 - self.inc_cov[r]), self.inc_cov[r])

    def _unit_for(self, r: IndexArray, absd: FloatArray, has_prev: BoolArray) -> FloatArray:
        """The noise unit before this reading teaches it (a spike must not widen its own yardstick)."""
        return self._unit(r)

    # -- pass-time checks -----------------------------------------------------------------------------------

    def findings(self, now_s: float, fields: int | None = None) -> Findings:
        """The held alarm episodes and the silence of the first ``fields`` fields (all by default)."""
        n = self.fields if fields is None else fields
        rows = np.arange(n)
        cfg = self.config
        hold = np.maximum(cfg.hold_s, cfg.hold_periods * np.nan_to_num(self.period[:n], nan=0.0))
        with np.errstate(invalid="ignore"):
            active = (now_s - self.last_alarm_t[:n]) <= hold
        stale, periods = self.staleness(rows, now_s)
        return Findings(
            active=active,
            alarm=self.alarm[:n].copy(),
            test=self.episode_test[:n].copy(),
            magnitude=self.episode_magnitude[:n].copy(),
            score=self.episode_score[:n].copy(),
            at_s=self.episode_at[:n].copy(),
            start_s=self.episode_start[:n].copy(),
            last_s=self.last_alarm_t[:n].copy(),
            stale=stale,
            periods=periods,
            period_s=self.period[:n].copy(),
            warm=self.count[:n] >= cfg.warmup,
            latest_spike=(self.score[:n] >= cfg.threshold) & (self.test[:n] == 0),
            regular=self.jitter[:n] < 0.05,
            threshold=cfg.threshold,
        )

    def staleness(self, rows: IndexArray, now_s: float) -> tuple[FloatArray, FloatArray]:
        """``(score, periods)``: how unusual the silence since each field's last reading is."""
        periods = (now_s - self.last_t[rows]) / self.period[rows]
        ok = np.isfinite(periods) & (self.count[rows] >= self.config.warmup)
        p = self.tails["gap"].pvalue(rows, np.where(ok, periods, 0.0))
        score: FloatArray = np.where(ok, 1.0 - np.minimum(1.0, len(TESTS) * p), 0.0)
        return score, np.where(ok, periods, math.nan)
