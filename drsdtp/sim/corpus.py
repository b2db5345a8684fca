"""A labelled evaluation corpus of generic numeric streams, generated from documented processes.

Each *character* is a generative process with wide parameter ranges (drawn per series from its seed), not a
hand-tuned series; every series carries 1-4 injected anomalies sized in its own noise unit ``unit`` and
labelled as windows of reading indices. Three splits use disjoint seeds: ``tune`` (look at it while
designing), ``heldout`` (report it) and ``fresh`` (added after the detector was tuned on the first two, never
looked at while changing it: a gap between it and ``tune`` would show overfitting). Deterministic for
(split, index); a few ms per series.

Characters (all times in seconds from midnight of day 0; ``n`` readings, 3000-6000):

``smooth``      level + slow AR(1) wander (phi 0.99-0.9995) + small Gaussian noise (none in a quarter of the
                series: then the unit is the wander's innovation); period 1-60 s.
``noisy``       level + Student-t noise (3-30 degrees of freedom: heavy tails) + a little wander.
``counts``      Poisson counts around a rate 0.2-40 with a daily modulation (traffic, sales); unit sqrt(rate).
``step``        piecewise constant modes/setpoints (dwell 30-400 readings, values from a small set), optional
                small noise, quantised; unit = noise or the quantum.
``periodic``    daily profile (business-hours plateau or sine) plus a weekly one in half the series; noise
                0-10 % of the amplitude (noiseless in a quarter: unit = typical change per reading); 5-15 min.
``bursty``      log-normal latency with legitimate bursts (a Markov regime: x2-x5 for 5-40 readings).
``trending``    linear or bending trend rising 20-300 units over the series, AR noise.
``flat``        a slow signal read through a coarse quantum (noise well below it): long legitimate flat
                stretches with occasional toggling between neighbouring steps.
``irregular``   smooth signal sampled at exponential inter-arrival times (mean 5-60 s) with rapid bursts.
``quantised``   smooth signal plus noise, quantised at 0.5-3 noise widths (integers when large).

Anomaly kinds (what a user would call a fault or an event), magnitudes in ``unit``:
``spike`` 6-20 (1-2 readings), ``shift`` 3-10 held 40-300 readings then back, ``variance`` noise x4-x8 for
40-200, ``stuck`` the value frozen for 30-200 fresh readings, ``dropout`` 10-60 periods with no reading,
``drift`` a ramp reaching 8-25 over 100-400 readings that stays. Windows start at the onset and end
``slack`` readings after the anomaly; ``grace`` readings after a window are neither anomalous nor clean
(the stream settles, or a drift's new level is learned).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["CHARACTERS", "KINDS", "SPLITS", "Anomaly", "Series", "generate", "generate_corpus"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SPLITS: Final[dict[str, int]] = {"tune": 1_000_003, "heldout": 7_000_019, "fresh": 31_000_037}
KINDS: Final[tuple[str, ...]] = ("spike", "shift", "variance", "stuck", "dropout", "drift")
_DAY: Final[float] = 86_400.0
_SLACK: Final[int] = 10
_WARMUP: Final[int] = 1000  # readings before the first anomaly (a week or more for the periodic ones)


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    start: int  # first reading index of the window
    end: int  # last reading index of the window (inclusive)
    magnitude: float  # in the series' unit (periods for a dropout, readings for stuck)
    grace: int  # readings after ``end`` not counted as clean


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    character: str
    split: str
    seed: int
    t_s: FloatArray
    values: FloatArray
    period_s: float
    unit: float
    anomalies: tuple[Anomaly, ...]

    @property
    def labels(self) -> tuple[BoolArray, BoolArray]:
        """``(anomalous, clean)`` masks over readings (grace readings are in neither)."""
        n = self.values.shape[0]
        anomalous = np.zeros(n, bool)
        excluded = np.zeros(n, bool)
        for a in self.anomalies:
            anomalous[a.start : a.end + 1] = True
            excluded[a.start : a.end + 1 + a.grace] = True
        return anomalous, ~excluded


@dataclass(slots=True)
class _Draft:
    """A clean series on a regular grid before anomalies are injected."""

    t: FloatArray
    clean: FloatArray  # the underlying signal without measurement noise
    noise: FloatArray  # measurement noise, added after anomalies that act on the signal
    unit: float
    kinds: tuple[str, ...]
    quantum: float = 0.0
    integer: bool = False
    positive: bool = False


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _ar1(rng: np.random.Generator, n: int, phi: float, innov: float) -> FloatArray:
    e = rng.normal(0.0, innov, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):  # a few thousand steps per series: fine
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def _grid(rng: np.random.Generator, n: int, period: float) -> FloatArray:
    start = float(rng.integers(0, 7)) * _DAY + float(rng.uniform(0, _DAY))
    out: FloatArray = start + period * np.arange(n, dtype=np.float64)
    return out


def _smooth(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([1.0, 5.0, 10.0, 30.0, 60.0]))
    t = _grid(rng, n, period)
    innov = _loguniform(rng, 0.002, 0.05)
    wander = _ar1(rng, n, 1.0 - _loguniform(rng, 5e-4, 0.01), innov)
    sigma = 0.0 if rng.random() < 0.25 else innov * _loguniform(rng, 1.0, 10.0)
    level = rng.uniform(-20, 80)
    return _Draft(t, level + wander, rng.normal(0, 1, n) * sigma, max(sigma, innov), KINDS)


def _noisy(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([1.0, 10.0, 60.0]))
    t = _grid(rng, n, period)
    sigma = _loguniform(rng, 0.05, 5.0)
    df = float(rng.choice([3.0, 5.0, 10.0, 30.0]))
    noise = rng.standard_t(df, n) * sigma / math.sqrt(df / (df - 2.0))
    wander = _ar1(rng, n, 0.995, sigma * 0.02)
    return _Draft(t, rng.uniform(0, 100) + wander, noise, sigma, KINDS)


def _counts(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([60.0, 300.0, 600.0]))
    t = _grid(rng, n, period)
    rate = _loguniform(rng, 0.2, 40.0)
    depth = rng.uniform(0.0, 0.9)
    lam = rate * (1.0 + depth * np.sin(2 * np.pi * t / _DAY + rng.uniform(0, 6.3)))
    return _Draft(t, lam, np.zeros(n), max(1.0, math.sqrt(rate)), ("spike", "shift", "dropout"), 1.0, True)


def _step(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([1.0, 10.0, 60.0]))
    t = _grid(rng, n, period)
    quantum = float(rng.choice([0.1, 0.5, 1.0]))
    modes = np.round(rng.uniform(0, 100, int(rng.integers(2, 6))) / quantum) * quantum
    clean = np.empty(n)
    i = 0
    while i < n:
        dwell = int(rng.integers(30, 400))
        clean[i : i + dwell] = rng.choice(modes)
        i += dwell
    sigma = 0.0 if rng.random() < 0.5 else quantum * rng.uniform(0.5, 2.0)
    unit = max(sigma, quantum)
    return _Draft(t, clean, rng.normal(0, 1, n) * sigma, unit, ("spike", "variance", "dropout"), quantum)


def _daily_profile(rng: np.random.Generator, t: FloatArray) -> FloatArray:
    phase = 2 * np.pi * t / _DAY + rng.uniform(0, 6.3)
    if rng.random() < 0.5:
        sine: FloatArray = np.sin(phase)
        return sine
    # business hours: a smoothed plateau
    out: FloatArray = np.tanh(4.0 * (np.sin(phase) - 0.2)).astype(np.float64)
    return out


def _periodic(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([300.0, 600.0, 900.0]))
    t = _grid(rng, n, period)
    amp = _loguniform(rng, 1.0, 100.0)
    clean = rng.uniform(0, 100) + amp * _daily_profile(rng, t)
    if rng.random() < 0.5:
        weekday = np.floor(t / _DAY) % 7
        clean = clean - amp * 0.4 * (weekday >= 5)
    rel = 0.0 if rng.random() < 0.25 else rng.uniform(0.01, 0.1)
    sigma = amp * rel
    unit = float(np.median(np.abs(np.diff(clean)))) if sigma == 0.0 else sigma
    return _Draft(t, clean, rng.normal(0, 1, n) * sigma, unit, KINDS)


def _bursty(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([1.0, 10.0, 60.0]))
    t = _grid(rng, n, period)
    median = _loguniform(rng, 5.0, 500.0)
    s = rng.uniform(0.1, 0.5)
    base = median * np.exp(rng.normal(0, s, n))
    factor = np.ones(n)
    i = 0
    while i < n:
        i += int(rng.geometric(_loguniform(rng, 0.002, 0.01)))
        length = int(rng.integers(5, 40))
        factor[i : i + length] = rng.uniform(2.0, 5.0)
        i += length
    values = base * factor
    return _Draft(t, np.zeros(n), values, median * s, ("spike", "shift", "dropout", "stuck"), positive=True)


def _trending(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([10.0, 60.0, 300.0]))
    t = _grid(rng, n, period)
    sigma = _loguniform(rng, 0.01, 2.0)
    rise = rng.uniform(20, 300) * sigma * rng.choice([-1.0, 1.0])
    x = np.linspace(0, 1, n)
    shape = x if rng.random() < 0.5 else x**2
    noise = _ar1(rng, n, rng.uniform(0.0, 0.8), sigma)
    return _Draft(t, rise * shape, noise, sigma, ("spike", "shift", "drift", "dropout", "stuck"))


def _flat(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([10.0, 60.0, 300.0]))
    t = _grid(rng, n, period)
    quantum = float(rng.choice([0.1, 0.5, 1.0]))
    slow = _ar1(rng, n, 0.999, quantum * _loguniform(rng, 0.005, 0.05))
    noise = rng.normal(0, quantum * rng.uniform(0.02, 0.2), n)
    return _Draft(t, 20.0 + slow, noise, quantum, ("spike", "shift", "dropout"), quantum)


def _irregular(rng: np.random.Generator, n: int) -> _Draft:
    mean_gap = _loguniform(rng, 5.0, 60.0)
    gaps = rng.exponential(mean_gap, n)
    burst = rng.random(n) < 0.05
    gaps[burst] = rng.uniform(0.2, 1.0, int(burst.sum()))  # rapid event bursts
    t = float(rng.integers(0, 7)) * _DAY + np.cumsum(gaps)
    innov = _loguniform(rng, 0.005, 0.05) * math.sqrt(mean_gap / 10.0)
    wander = _ar1(rng, n, 0.998, innov)
    sigma = innov * _loguniform(rng, 1.0, 5.0)
    return _Draft(t, rng.uniform(0, 50) + wander, rng.normal(0, sigma, n), sigma, KINDS)


def _quantised(rng: np.random.Generator, n: int) -> _Draft:
    period = float(rng.choice([1.0, 10.0, 60.0]))
    t = _grid(rng, n, period)
    sigma = _loguniform(rng, 0.05, 5.0)
    quantum = sigma * rng.uniform(0.5, 3.0)
    if quantum > 0.7:
        quantum = float(round(quantum)) or 1.0
    wander = _ar1(rng, n, 0.998, sigma * 0.05)
    unit = max(sigma, quantum)
    return _Draft(t, rng.uniform(0, 100) + wander, rng.normal(0, sigma, n), unit, KINDS, quantum)


_GENERATORS: Final[dict[str, Callable[[np.random.Generator, int], _Draft]]] = {
    "smooth": _smooth,
    "noisy": _noisy,
    "counts": _counts,
    "step": _step,
    "periodic": _periodic,
    "bursty": _bursty,
    "trending": _trending,
    "flat": _flat,
    "irregular": _irregular,
    "quantised": _quantised,
}
CHARACTERS: Final[tuple[str, ...]] = tuple(_GENERATORS)


def _inject(rng: np.random.Generator, d: _Draft, n: int) -> tuple[FloatArray, BoolArray, list[Anomaly]]:
    """Add 1-4 anomalies after the warm-up; returns values, a keep mask (dropouts) and the labels."""
    clean, noise = d.clean.copy(), d.noise.copy()
    if d.integer:
        clean = np.maximum(clean, 0.0)
    signal = clean + noise if not d.integer else np.zeros(n)
    keep = np.ones(n, bool)
    labels: list[Anomaly] = []
    count = int(rng.integers(1, 5))
    slots = np.sort(rng.choice(np.arange(_WARMUP, n - 500, 450), size=count, replace=False))
    mult = np.ones(n)  # variance changes and count-rate shifts act through factors
    for onset in slots:
        onset = int(onset + rng.integers(0, 50))
        kind = str(rng.choice(d.kinds))
        sign = -1.0 if (rng.random() < 0.5 and not d.positive and not d.integer) else 1.0
        if kind == "spike":
            mag = _loguniform(rng, 6.0, 20.0)
            width = int(rng.integers(1, 3))
            span = slice(onset, onset + width)
            if d.integer:
                clean[span] = clean[span] + mag * d.unit
            else:
                signal[span] += sign * mag * d.unit
            labels.append(Anomaly(kind, onset, onset + width - 1 + _SLACK, mag, 10))
        elif kind == "shift":
            mag = _loguniform(rng, 3.0, 10.0)
            dur = int(rng.integers(40, 300))
            span = slice(onset, onset + dur)
            if d.integer:
                clean[span] = clean[span] + mag * d.unit
            else:
                signal[span] += sign * mag * d.unit
            labels.append(Anomaly(kind, onset, onset + dur - 1 + _SLACK, mag, 60))
        elif kind == "variance":
            mag = rng.uniform(4.0, 8.0)
            dur = int(rng.integers(40, 200))
            mult[onset : onset + dur] = mag
            labels.append(Anomaly(kind, onset, onset + dur - 1 + _SLACK, mag, 60))
        elif kind == "stuck":
            dur = int(rng.integers(30, 200))
            labels.append(Anomaly(kind, onset, onset + dur - 1 + _SLACK, float(dur), 60))
        elif kind == "dropout":
            dur = int(rng.integers(10, 60))
            keep[onset : onset + dur] = False
            labels.append(Anomaly(kind, onset, onset + dur - 1 + _SLACK, float(dur), 30))
        else:  # drift
            mag = _loguniform(rng, 8.0, 25.0)
            dur = int(rng.integers(100, 400))
            ramp = np.clip((np.arange(n) - onset) / dur, 0.0, 1.0) * sign * mag * d.unit
            if d.integer:
                clean = clean + ramp
            else:
                signal += ramp
            labels.append(Anomaly(kind, onset, onset + dur - 1 + _SLACK, mag, 400))
    values: FloatArray
    if d.integer:
        counts = np.random.default_rng(rng.integers(1 << 62)).poisson(np.maximum(clean, 0.0) * mult**2)
        values = counts.astype(np.float64)
    else:
        values = signal + noise * (mult - 1.0)
        extra = (mult > 1.0) & (noise == 0.0)  # a noiseless series gets noise of its unit
        values[extra] += rng.normal(0, d.unit, int(extra.sum())) * mult[extra]
    for a in labels:
        if a.kind == "stuck":
            values[a.start : a.end + 1 - _SLACK] = values[a.start - 1]
    if d.quantum > 0 and not d.integer:
        values = np.round(values / d.quantum) * d.quantum
    return values, keep, labels


def _reindex(labels: list[Anomaly], keep: BoolArray) -> tuple[Anomaly, ...]:
    """Move window indices from the grid to the kept readings (a dropout's window starts after its gap)."""
    position = np.cumsum(keep) - 1
    n_kept = int(keep.sum())
    out = []
    for a in labels:
        start = int(position[a.start]) + (0 if keep[a.start] else 1)
        end = min(int(position[min(a.end, keep.shape[0] - 1)]), n_kept - 1)
        if a.kind == "dropout":
            end = start + _SLACK
        out.append(Anomaly(a.kind, start, max(end, start), a.magnitude, a.grace))
    return tuple(out)


def generate(character: str, split: str, index: int) -> Series:
    """Series ``index`` of ``character`` in ``split`` (deterministic)."""
    seed = SPLITS[split] + 7919 * CHARACTERS.index(character) + index
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3000, 6000))
    draft = _GENERATORS[character](rng, n)
    values, keep, labels = _inject(rng, draft, n)
    t = draft.t
    period = float(np.median(np.diff(t)))
    return Series(
        name=f"{character}-{split}-{index}",
        character=character,
        split=split,
        seed=seed,
        t_s=t[keep],
        values=values[keep],
        period_s=period,
        unit=float(draft.unit),
        anomalies=_reindex(labels, keep),
    )


def generate_corpus(split: str, per_character: int = 6) -> list[Series]:
    """``per_character`` series of every character (10 characters: 60 series by default)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return [generate(c, split, i) for c in CHARACTERS for i in range(per_character)]
