"""Sensor health for every field at once: detectors, a 0..1 quality score and a status with reasons.

Detectors (all vectorised over fields; ``k`` = ``HealthConfig.recent`` newest samples):

* ``STALE``: no new reading for longer than ``stale_factor x expected_period`` (a replaying gateway counts as
  no new reading: its duplicates are dropped by the windows).
* ``STUCK``: the last ``stuck_run`` readings lie within half a resolution step although the field is known to
  be noisier than that (a flat line).
* ``SPIKE``: one of the ``spike_last`` newest readings (or of all readings since the previous pass, when
  passes are less frequent than readings) has a robust z-score above ``spike_z``: its distance to
  a line through the medians of the preceding samples, in standard deviations (the field's noise is the MAD
  of first differences, smoothed).
  Several outliers in a row with one sign are a level shift (rapid change), not a spike.
* ``DROPOUT``: at least ``dropout_min_missing`` readings missing recently (sequence gaps among the ``k``
  newest, plus the readings a silent sensor should have sent). ``LOSS``: long-run loss ratio above
  ``loss_max``.
* ``DRIFT``: a CUSUM on the residual against redundant peers or against the model (:mod:`.drift`).
* ``OUT_OF_RANGE``: the latest value is physically impossible.
* ``ANOMALY``: a level shift, trend change, slow drift or variance change found by the model-free detector.

Fields without a declared model (not bound to a kernel variable, no redundant peers) take SPIKE, STUCK,
ANOMALY, DROPOUT and, once warm, STALE from the model-free detector (:mod:`.detect`): it learns the field's
own period, resolution, noise and habits, so counts, quantised, step-like, periodic and irregular streams do
not raise the false alarms the fixed tests above do. A declared ``kind`` other than ``analog`` keeps only
its silence checks (DROPOUT, STALE). Modelled fields keep the tests above.
Every finding of SPIKE or ANOMALY stays visible for the hold time (``DetectorConfig.hold_s``, at least
``hold_periods`` periods) after its last alarmed reading, so a spike seen by a pass is still reported later.

Quality multiplies one factor per finding (see :func:`_quality`); below ``HealthConfig.quality_threshold``
data must not be used to decide (forecast, what-if, actuation, estimation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from drsdtp.intelligence.detect import TESTS, Findings
from drsdtp.intelligence.drift import DriftVerdict
from drsdtp.intelligence.linefit import FloatArray
from drsdtp.intelligence.spec import HealthConfig
from drsdtp.intelligence.status import STATUS_CODES, HealthStatus, Reason
from drsdtp.intelligence.table import FieldTable
from drsdtp.intelligence.windows import FieldWindows

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "STATUS_CODES",
    "HealthArrays",
    "HealthMonitor",
    "HealthStatus",
    "Reason",
    "Screen",
    "sorted_median",
]

BoolArray: TypeAlias = "npt.NDArray[np.bool_]"


def sorted_median(sorted_rows: FloatArray, n_valid: npt.NDArray[np.int64]) -> FloatArray:
    """Row medians of an already sorted array whose NaNs sit at the end of each row (n_valid finite each)."""
    rows = np.arange(sorted_rows.shape[0])
    n = np.maximum(n_valid, 1)
    lo = sorted_rows[rows, (n - 1) // 2]
    hi = sorted_rows[rows, n // 2]
    out: FloatArray = np.where(n_valid > 0, 0.5 * (lo + hi), np.nan)
    return out


@dataclass(frozen=True, slots=True)
class Screen:
    """Everything measured from the windows alone, before drift (which needs references)."""

    fresh: BoolArray
    age_s: FloatArray
    noise: FloatArray
    spike_z: FloatArray
    spike_recent: BoolArray
    latest_spike: BoolArray
    level_shift: BoolArray
    stuck: BoolArray
    stale: BoolArray
    replaying: BoolArray
    missing: FloatArray
    dropout: BoolArray
    loss: FloatArray
    out_of_range: BoolArray
    no_data: BoolArray
    prequality: FloatArray
    anomaly: BoolArray
    model_free: BoolArray
    found: Findings | None
    stale_after: FloatArray


@dataclass(frozen=True, slots=True)
class HealthArrays:
    """The result of one health pass, one entry per field row."""

    quality: FloatArray
    status: npt.NDArray[np.int8]
    reasons: npt.NDArray[np.uint16]
    screen: Screen
    drift: DriftVerdict


class HealthMonitor:
    """Keeps the per-field state the detectors need between passes (noise level, last seen count)."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.noise = np.zeros(0)
        self._seen = np.zeros(0, np.int64)
        self._last_spike = np.zeros(0)

    def resize(self, rows: int) -> None:
        if rows > self.noise.shape[0]:
            self.noise = np.r_[self.noise, np.full(rows - self.noise.shape[0], np.nan)]
            self._seen = np.r_[self._seen, np.zeros(rows - self._seen.shape[0], np.int64)]
            self._last_spike = np.r_[self._last_spike, np.full(rows - self._last_spike.shape[0], np.nan)]

    def screen(
        self,
        windows: FieldWindows,
        table: FieldTable,
        now_s: float,
        found: Findings | None = None,
        model_free: BoolArray | None = None,
        hold_s: float = 0.0,
    ) -> Screen:
        """Run every window-only detector over all fields; ``found`` (the model-free detector's findings)
        replaces the fixed tests on ``model_free`` rows; ``hold_s`` keeps a fixed test's spike visible."""
        cfg = self.config
        n = windows.fields
        self.resize(n)
        count = windows.count[:n]
        last_t, last_v = windows.last_t[:n], windows.last_v[:n]
        arrived = count - self._seen[:n]  # readings since the previous pass
        fresh = arrived > 0
        self._seen[:n] = count
        no_data = count == 0

        block = windows.recent_block()
        k = block.values.shape[1]
        full = count >= k
        # Robust noise: MAD of first differences (immune to level, trend and isolated spikes).
        diffs = np.diff(block.values, axis=1)
        n_diff = np.sum(np.isfinite(diffs), axis=1)
        diff_sorted = np.sort(diffs, axis=1)
        diff_med = sorted_median(diff_sorted, n_diff)
        abs_dev = np.sort(np.abs(diffs - diff_med[:, None]), axis=1)
        instant_noise = 1.4826 * sorted_median(abs_dev, n_diff) / np.sqrt(2.0)

        tol = np.maximum(0.5 * table.resolution, 1e-9 * (1.0 + np.abs(last_v)))
        tail = block.values[:, -cfg.stuck_run :]
        missing_tail = np.isnan(tail)
        spread = np.max(np.where(missing_tail, -np.inf, tail), axis=1, initial=-np.inf) - np.min(
            np.where(missing_tail, np.inf, tail), axis=1, initial=np.inf
        )
        flat = spread <= tol
        known_noisy = self.noise[:n] > np.maximum(2.0 * tol, table.noise_floor)
        stuck = table.analog & (count >= cfg.stuck_run) & flat & known_noisy

        sigma = np.maximum(np.nan_to_num(self.noise[:n], nan=0.0), np.maximum(table.noise_floor, tol))
        # Look at the spike_last newest readings, or at every reading since the previous pass when passes
        # run less often than readings arrive (as far back as the recent block allows).
        look = np.clip(arrived, cfg.spike_last, block.values.shape[1] - 12)
        span = int(look.max()) if n else cfg.spike_last
        z = _local_z(block.values, block.t_s, max(span, 3)) / (_LOCAL_Z_SPREAD * sigma[:, None])
        z_tail = np.where(np.arange(span)[None, :] >= span - look[:, None], z[:, -span:], 0.0)
        outlier = np.abs(z_tail) > cfg.spike_z
        shift_tail = z[:, -3:]
        level_shift = np.all(shift_tail > cfg.spike_z, axis=1) | np.all(shift_tail < -cfg.spike_z, axis=1)
        usable = table.analog & full & np.isfinite(self.noise[:n]) & ~stuck
        spike_recent = usable & np.any(outlier, axis=1) & ~level_shift
        latest_spike = usable & outlier[:, -1] & ~level_shift
        abs_tail = np.where(np.isfinite(z_tail), np.abs(z_tail), 0.0)
        spike_z = np.where(usable, np.max(abs_tail, axis=1, initial=0.0), 0.0)

        learn = fresh & full & ~stuck & ~spike_recent & np.isfinite(instant_noise)
        alpha = cfg.noise_alpha
        first = learn & ~np.isfinite(self.noise[:n])
        self.noise[:n] = np.where(first, instant_noise, self.noise[:n])
        smooth = learn & ~first
        self.noise[:n] = np.where(
            smooth, (1 - alpha) * self.noise[:n] + alpha * instant_noise, self.noise[:n]
        )

        age = np.where(no_data, np.inf, now_s - last_t)
        free = np.zeros(n, bool) if model_free is None or found is None else model_free[:n]
        period = table.period
        seq_missing = windows.recent_missing()
        regular = free.copy()
        if found is not None and free.any():
            # model-free rows: the learned period; a regular stream counts missing readings by time too
            learned = free & found.warm & np.isfinite(found.period_s)
            period = np.where(learned, found.period_s, period)
            regular = learned & found.regular
            gaps = np.diff(block.t_s, axis=1) / period[:, None]
            by_time = np.nansum(np.maximum(np.rint(gaps) - 1.0, 0.0), axis=1)
            seq_missing = np.where(regular, np.maximum(seq_missing, by_time), seq_missing)
        stale_after = cfg.stale_factor * period
        stale = ~no_data & (age > stale_after)
        replaying = windows.dups_since_new[:n] > 0
        silent = np.where(replaying | no_data, 0.0, np.maximum(np.floor(age / period - 0.5), 0.0))
        missing = seq_missing + silent
        dropout = ~no_data & (missing >= cfg.dropout_min_missing)
        loss = windows.loss_ratio()
        out_of_range = ~no_data & ((last_v < table.valid_min) | (last_v > table.valid_max))

        # a spike of the fixed test stays visible for the hold time
        self._last_spike[:n] = np.where(spike_recent, now_s, self._last_spike[:n])
        with np.errstate(invalid="ignore"):
            held = (now_s - self._last_spike[:n]) <= np.maximum(hold_s, 10.0 * table.period)
        spike_recent = spike_recent | (held & (hold_s > 0))
        anomaly = np.zeros(n, bool)
        if found is not None and free.any():
            spike_recent, latest_spike, stuck, anomaly, dropout, stale, spike_z = _model_free(
                found,
                free,
                regular,
                windows.recent_missing() >= cfg.dropout_min_missing,  # sequence gaps: exact evidence
                table,
                (spike_recent, latest_spike, stuck, dropout, stale, spike_z),
            )
        screen = Screen(
            fresh=fresh,
            age_s=age,
            noise=sigma,
            spike_z=spike_z,
            spike_recent=spike_recent,
            latest_spike=latest_spike,
            level_shift=level_shift & usable,
            stuck=stuck,
            stale=stale,
            replaying=replaying,
            missing=missing,
            dropout=dropout,
            loss=loss,
            out_of_range=out_of_range,
            no_data=no_data,
            prequality=np.zeros(n),
            anomaly=anomaly,
            model_free=free,
            found=found,
            stale_after=stale_after,
        )
        return dataclasses.replace(screen, prequality=_quality(screen, None, screen.stale_after, cfg))

    def finish(self, screen: Screen, drift: DriftVerdict, table: FieldTable) -> HealthArrays:
        """Combine the screen with the drift verdict into quality, status and reasons."""
        cfg = self.config
        quality = _quality(screen, drift, screen.stale_after, cfg)
        reasons = np.zeros(quality.shape, np.uint16)
        for flag, mask in (
            (Reason.STALE, screen.stale),
            (Reason.STUCK, screen.stuck),
            (Reason.DRIFT, drift.flagged),
            (Reason.SPIKE, screen.spike_recent),
            (Reason.DROPOUT, screen.dropout),
            (Reason.LOSS, screen.loss > cfg.loss_max),
            (Reason.OUT_OF_RANGE, screen.out_of_range),
            (Reason.NO_DATA, screen.no_data),
            (Reason.ANOMALY, screen.anomaly),
        ):
            reasons |= np.where(mask, np.uint16(flag.value), np.uint16(0))
        status = np.where(
            quality < cfg.failed_below, 2, np.where((quality < cfg.degraded_below) | (reasons != 0), 1, 0)
        ).astype(np.int8)
        return HealthArrays(quality=quality, status=status, reasons=reasons, screen=screen, drift=drift)


_LOCAL_Z_SPREAD = 1.28  # measured: standard deviation of _local_z for unit white noise on a ramp


def _local_z(values: FloatArray, t_s: FloatArray, last: int, half: int = 6) -> FloatArray:
    """Deviation of each of the ``last`` newest samples from a robust local line (not yet scaled).

    For sample ``j`` the ``2 * half`` samples before it are split in two halves; the line through the two
    (median time, median value) points is extrapolated to ``t_j``. Medians ignore outliers among the
    neighbours, and the line follows trend changes within a few samples, so a heater switching on is not a
    spike. For white noise of width 1 the deviation has a spread of 1.28 (:data:`_LOCAL_Z_SPREAD`).
    """
    k = values.shape[1]
    j = np.arange(k - last, k)
    older = j[:, None] - 2 * half + np.arange(half)[None, :]  # (last, half)
    newer = older + half
    mid = half // 2

    def median(a: FloatArray, ordered_already: bool = False) -> FloatArray:
        ordered = a if ordered_already else np.sort(a, axis=2)
        out: FloatArray = (
            0.5 * (ordered[:, :, mid - 1] + ordered[:, :, mid]) if half % 2 == 0 else ordered[:, :, mid]
        )
        return out

    v_old, v_new = median(values[:, older]), median(values[:, newer])
    # Times arrive in order almost always: then their medians need no sort (same result, a third less work).
    span = t_s[:, k - last - 2 * half :]
    in_order = bool(np.all(span[:, 1:] >= span[:, :-1]))  # False with any NaN: those rows sort as before
    t_old, t_new = median(t_s[:, older], in_order), median(t_s[:, newer], in_order)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (v_new - v_old) / (t_new - t_old)
    reference = v_new + np.nan_to_num(rate) * (t_s[:, j] - t_new)
    out: FloatArray = values[:, j] - reference
    return out


def _quality(
    screen: Screen, drift: DriftVerdict | None, stale_after: FloatArray, cfg: HealthConfig
) -> FloatArray:
    """One multiplicative factor per finding; the constants place each finding in DEGRADED or FAILED."""
    q = np.ones(screen.age_s.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        overdue = np.maximum(screen.age_s - stale_after, 0.0) / (2.0 * stale_after)
        q *= np.where(screen.stale, 0.7 * np.exp(-overdue), 1.0)  # FAILED about 2 stale periods later
    q *= np.where(screen.stuck, 0.2, 1.0)
    q *= np.where(screen.anomaly, 0.6, 1.0)  # DEGRADED, still usable: the process may have changed
    q *= np.where(screen.latest_spike, 0.1, np.where(screen.spike_recent, 0.6, 1.0))
    recent = float(cfg.recent)
    q *= np.where(screen.dropout, np.clip(np.minimum(0.7, 1.0 - screen.missing / recent), 0.0, 1.0), 1.0)
    q *= np.where(screen.loss > cfg.loss_max, 1.0 - screen.loss, 1.0)
    q *= np.where(screen.out_of_range | screen.no_data, 0.0, 1.0)
    if drift is not None:
        q *= np.where(drift.flagged, np.where(drift.severe, 0.2, 0.45), 1.0)
    out: FloatArray = np.clip(q, 0.0, 1.0)
    return out


_SPIKES = (TESTS.index("spike"), TESTS.index("spike_back"))
_FLAT, _GAP = TESTS.index("flat"), TESTS.index("gap")
_Fixed = tuple[BoolArray, BoolArray, BoolArray, BoolArray, BoolArray, FloatArray]


def _model_free(
    found: Findings, free: BoolArray, regular: BoolArray, seq_gap: BoolArray, table: FieldTable, fixed: _Fixed
) -> tuple[BoolArray, BoolArray, BoolArray, BoolArray, BoolArray, BoolArray, FloatArray]:
    """The detector's findings in the shape of the fixed tests' flags, on the model-free rows.

    Silence: a regular stream keeps the fixed rules (stale after ``stale_factor`` periods, dropout at
    ``dropout_min_missing`` missing readings), on its learned period; an irregular one is judged by the tail
    of its own gaps (the gap test), since a fixed multiple of its period would fire on normal gaps."""
    spike_recent, latest_spike, stuck, dropout, stale, spike_z = fixed
    analog = free & table.analog  # a declared step-like kind keeps only the silence checks
    is_spike = np.isin(found.test, _SPIKES)
    d_spike = analog & found.active & is_spike
    d_latest = analog & found.latest_spike
    d_stuck = analog & found.alarm & (found.test == _FLAT)
    d_anomaly = analog & found.active & ~is_spike & (found.test != _FLAT) & (found.test != _GAP)
    d_gap = free & found.active & (found.test == _GAP)
    d_stale = free & found.warm & (found.stale >= found.threshold)
    return (
        np.where(free, d_spike, spike_recent),
        np.where(free, d_latest, latest_spike),
        np.where(free, d_stuck, stuck),
        d_anomaly,
        np.where(regular, dropout | d_gap, np.where(free, d_gap | seq_gap | dropout & ~found.warm, dropout)),
        np.where(regular | (free & ~found.warm), stale, np.where(free, d_stale, stale)),
        np.where(free, np.where(d_spike, found.magnitude, 0.0), spike_z),
    )
