"""Scoring online detectors on the labelled corpus (:mod:`drsdtp.sim.corpus`), and the two baselines.

An alarm sequence has one boolean per reading of a series, produced online (a reading's alarm may only use
that reading and earlier ones). Per series and per character:

* recall: share of anomaly windows with an alarm inside the window; delay: readings from the window start
  to the first alarm in it;
* false alarms per 10k clean readings: alarm *onsets* (a run of alarms counts once, as an operator sees it)
  on clean readings, and the point-wise rate (every alarmed clean reading);
* a windowed score after Numenta's NAB (standard profile): a detected window earns ``2 / (1 + e^(5y)) - 1``
  with ``y`` the first alarm's position in the window (-1 at its start, 0 at its end), a missed one costs 1,
  each false alarm onset 0.11; normalised to 100 = every window at its start, 0 = nothing detected.

Baselines: a trailing z-score (mean and standard deviation of the previous 100 readings, alarm at |z| > 4),
and the engine's health detectors as they were before the model-free detector (``legacy_health``: one generic
field per series, project defaults, the series' real sampling period, one pass per reading; alarm = any
reason).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from drsdtp.intelligence import FieldSpec, IntelligenceConfig, ModelSpec, TwinIntelligence
from drsdtp.intelligence.detect import TESTS, DetectorConfig, StreamDetector
from drsdtp.sim.corpus import Series

__all__ = [
    "EXPECTED_TESTS",
    "CharacterScore",
    "Miss",
    "SeriesScore",
    "Trace",
    "aggregate",
    "detector_run",
    "detector_scores",
    "detector_trace",
    "engine_alarms",
    "false_alarm_contexts",
    "false_alarms_by_test",
    "missed_windows",
    "nab_weight",
    "score_series",
    "stack",
    "trailing_zscore",
]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
A_FP = 0.11


def nab_weight(position: float) -> float:
    """NAB's scaled sigmoid: ~0.987 at the window start (-1), 0 at its end (0)."""
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


@dataclass(frozen=True, slots=True)
class SeriesScore:
    name: str
    character: str
    windows: int
    detected: int
    delays: tuple[int, ...]
    kinds_missed: tuple[str, ...]
    clean: int
    false_onsets: int
    false_points: int
    nab_raw: float
    nab_perfect: float

    @property
    def nab_null(self) -> float:
        return -float(self.windows)


def score_series(series: Series, alarms: BoolArray) -> SeriesScore:
    if alarms.shape != series.values.shape:
        raise ValueError(f"{series.name}: {alarms.shape[0]} alarms for {series.values.shape[0]} readings")
    _, clean = series.labels
    onset = alarms & ~np.r_[False, alarms[:-1]]
    false_onsets = int(np.count_nonzero(onset & clean))
    false_points = int(np.count_nonzero(alarms & clean))
    delays: list[int] = []
    missed: list[str] = []
    raw = -A_FP * false_onsets
    perfect = 0.0
    for a in series.anomalies:
        hits = np.flatnonzero(alarms[a.start : a.end + 1])
        length = max(a.end - a.start + 1, 1)
        perfect += nab_weight(-1.0)
        if hits.size:
            first = int(hits[0])
            delays.append(first)
            raw += nab_weight(-1.0 + first / length)
        else:
            missed.append(a.kind)
            raw -= 1.0
    return SeriesScore(
        name=series.name,
        character=series.character,
        windows=len(series.anomalies),
        detected=len(delays),
        delays=tuple(delays),
        kinds_missed=tuple(missed),
        clean=int(np.count_nonzero(clean)),
        false_onsets=false_onsets,
        false_points=false_points,
        nab_raw=raw,
        nab_perfect=perfect,
    )


@dataclass(frozen=True, slots=True)
class CharacterScore:
    character: str
    series: int
    windows: int
    detected: int
    clean: int
    false_onsets: int
    false_points: int
    median_delay: float
    nab: float
    missed: dict[str, int] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.detected / self.windows if self.windows else math.nan

    @property
    def fa_per_10k(self) -> float:
        return 1e4 * self.false_onsets / max(self.clean, 1)

    @property
    def fa_points_per_10k(self) -> float:
        return 1e4 * self.false_points / max(self.clean, 1)


def aggregate(scores: Iterable[SeriesScore], character: str = "all") -> CharacterScore:
    chosen = [s for s in scores if character in ("all", s.character)]
    windows = sum(s.windows for s in chosen)
    raw = sum(s.nab_raw for s in chosen)
    perfect = sum(s.nab_perfect for s in chosen)
    null = -float(windows)
    delays = [d for s in chosen for d in s.delays]
    missed: dict[str, int] = {}
    for s in chosen:
        for k in s.kinds_missed:
            missed[k] = missed.get(k, 0) + 1
    return CharacterScore(
        character=character,
        series=len(chosen),
        windows=windows,
        detected=sum(s.detected for s in chosen),
        clean=sum(s.clean for s in chosen),
        false_onsets=sum(s.false_onsets for s in chosen),
        false_points=sum(s.false_points for s in chosen),
        median_delay=float(np.median(delays)) if delays else math.nan,
        nab=100.0 * (raw - null) / (perfect - null) if perfect > null else math.nan,
        missed=missed,
    )


def trailing_zscore(values: FloatArray, window: int = 100, z: float = 4.0) -> BoolArray:
    """Alarm where a reading is over ``z`` standard deviations from the mean of the previous ``window``."""
    n = values.shape[0]
    csum = np.r_[0.0, np.cumsum(values)]
    csq = np.r_[0.0, np.cumsum(values * values)]
    idx = np.arange(n)
    lo = np.maximum(idx - window, 0)
    count = idx - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (csum[idx] - csum[lo]) / count
        var = (csq[idx] - csq[lo]) / count - mean**2
        score = np.abs(values - mean) / np.sqrt(np.maximum(var, 0.0))
    out: BoolArray = (count >= 20) & np.isfinite(score) & (score > z)
    # a flat history has zero spread: any change is infinitely many deviations away
    out |= (count >= 20) & (var <= 0.0) & (values != mean)
    return out


def stack(series: Sequence[Series]) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Series as rows of NaN-padded ``(t, values, present)`` arrays, for detectors batched over fields."""
    n = max(s.values.shape[0] for s in series)
    t = np.full((len(series), n), np.nan)
    v = np.full((len(series), n), np.nan)
    for i, s in enumerate(series):
        t[i, : s.t_s.shape[0]] = s.t_s
        v[i, : s.values.shape[0]] = s.values
    return t, v, np.isfinite(v)


def engine_alarms(series: Sequence[Series], config: IntelligenceConfig | None = None) -> list[BoolArray]:
    """The engine's health on one generic field per series (project defaults, the series' period), with a
    pass after every reading; alarm = any health reason after the pass that follows the reading.

    Series on a regular grid share one engine: their time axes are rescaled to a common 10 s period (the
    health detectors only compare times with the expected period, so this changes nothing for them) and one
    pass runs per grid step. Irregular series run alone, a pass at each of their readings.
    """
    regular = [i for i, s in enumerate(series) if _on_grid(s)]
    out: list[BoolArray] = [np.zeros(s.values.shape[0], bool) for s in series]
    if regular:
        grids = [
            np.rint((series[i].t_s - series[i].t_s[0]) / series[i].period_s).astype(np.int64) for i in regular
        ]
        engine = _generic_engine(len(regular), 10.0, config)
        steps = max(int(g[-1]) for g in grids) + 1
        cursor = np.zeros(len(regular), np.int64)
        lengths = np.array([g.shape[0] for g in grids])
        nxt = np.array([g[0] for g in grids])
        for step in range(steps):
            rows = np.flatnonzero((cursor < lengths) & (nxt == step))
            if rows.size:
                vals = np.array([series[regular[r]].values[cursor[r]] for r in rows])
                engine.ingest(rows, np.full(rows.size, step * 10.0), vals)
            reasons = engine.evaluate(step * 10.0).health.reasons
            for r in rows:
                out[regular[r]][cursor[r]] = bool(reasons[r])
                cursor[r] += 1
                if cursor[r] < lengths[r]:
                    nxt[r] = grids[r][cursor[r]]
    for i, s in enumerate(series):
        if i in regular:
            continue
        engine = _generic_engine(1, s.period_s, config)
        row = np.zeros(1, np.intp)
        for k, (t, v) in enumerate(zip(s.t_s.tolist(), s.values.tolist(), strict=True)):
            engine.ingest(row, (t,), (v,))
            out[i][k] = bool(engine.evaluate(t).health.reasons[0])
    return out


def _grid_index(s: Series) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = np.rint((s.t_s - s.t_s[0]) / s.period_s).astype(np.int64)
    return out


def _on_grid(s: Series) -> bool:
    steps = np.diff(s.t_s) / s.period_s
    return bool(np.all(np.abs(steps - np.rint(steps)) < 1e-6))


def _generic_engine(fields: int, period_s: float, config: IntelligenceConfig | None) -> TwinIntelligence:
    engine = TwinIntelligence(config, legacy_health=True)
    engine.add_model(ModelSpec("generic", (FieldSpec("x", expected_period_s=period_s),)))
    for i in range(fields):
        engine.add_twin(f"s{i}", "generic")
    return engine


def detector_scores(
    series: Sequence[Series], config: DetectorConfig | None = None
) -> tuple[list[FloatArray], list[BoolArray]]:
    """Scores and alarms of the model-free detector, every series a field of one detector, fed reading by
    reading."""
    scores, alarms, _ = detector_run(series, config)
    return scores, alarms


def detector_run(
    series: Sequence[Series], config: DetectorConfig | None = None
) -> tuple[list[FloatArray], list[BoolArray], list[npt.NDArray[np.int8]]]:
    """:func:`detector_scores` and, per reading, the test that scored it (an index into ``TESTS``)."""
    t, v, present = stack(series)
    det = StreamDetector(config, fields=len(series))
    scores = np.zeros(v.shape)
    alarms = np.zeros(v.shape, bool)
    tests = np.zeros(v.shape, np.int8)
    for k in range(v.shape[1]):
        rows = np.flatnonzero(present[:, k])
        batch = det.update(rows, t[rows, k], v[rows, k])
        scores[rows, k] = batch.score
        alarms[rows, k] = batch.alarm
        tests[rows, k] = batch.test
    n = [s.values.shape[0] for s in series]
    return (
        [scores[i, : n[i]] for i in range(len(n))],
        [alarms[i, : n[i]] for i in range(len(n))],
        [tests[i, : n[i]] for i in range(len(n))],
    )


def false_alarms_by_test(
    series: Sequence[Series], alarms: Sequence[BoolArray], tests: Sequence[npt.NDArray[np.int8]]
) -> dict[str, dict[str, int]]:
    """Per character, how many false-alarm onsets (alarm onsets on clean readings) each test raised."""
    out: dict[str, dict[str, int]] = {}
    for s, a, te in zip(series, alarms, tests, strict=True):
        _, clean = s.labels
        onset = a & ~np.r_[False, a[:-1]] & clean
        book = out.setdefault(s.character, {})
        for i in np.flatnonzero(onset):
            name = TESTS[int(te[i])]
            book[name] = book.get(name, 0) + 1
    return out


#: the tests meant to catch each anomaly kind (a miss is explained by what these did inside the window)
EXPECTED_TESTS: dict[str, tuple[str, ...]] = {
    "spike": ("spike", "spike_back"),
    "shift": ("shift", "trend", "drift", "level"),
    "drift": ("drift", "level", "trend", "shift"),
    "variance": ("variance", "spike", "spike_back"),
    "stuck": ("flat",),
    "dropout": ("gap",),
}
_STAGES = ("own", "habit", "calibrated")


@dataclass(frozen=True, slots=True)
class Trace:
    """Per reading of one series, each test's p-value at three stages (arrays ``(tests, readings)``, NaN
    where the test was not armed or the reading not scored): ``own`` from the test's own model, ``habit``
    after the field's habits lifted it, ``calibrated`` after the field's calibration (what is scored)."""

    own: FloatArray
    habit: FloatArray
    calibrated: FloatArray


def detector_trace(
    series: Sequence[Series], config: DetectorConfig | None = None
) -> tuple[list[FloatArray], list[BoolArray], list[npt.NDArray[np.int8]], list[Trace]]:
    """:func:`detector_run` with each test's p-values recorded at every stage (diagnosis only: slower)."""
    t, v, present = stack(series)
    det = StreamDetector(config, fields=len(series))
    det.trace = []
    shape = (len(TESTS), len(series), v.shape[1])
    stages = [np.full(shape, np.nan, np.float32) for _ in _STAGES]
    scores = np.zeros(v.shape)
    alarms = np.zeros(v.shape, bool)
    tests = np.zeros(v.shape, np.int8)
    for k in range(v.shape[1]):
        rows = np.flatnonzero(present[:, k])
        batch = det.update(rows, t[rows, k], v[rows, k])
        scores[rows, k] = batch.score
        alarms[rows, k] = batch.alarm
        tests[rows, k] = batch.test
        for rr, *ps in det.trace:
            for out, p in zip(stages, ps, strict=True):
                out[:, rr, k] = p
        det.trace.clear()
    n = [s.values.shape[0] for s in series]
    traces = [Trace(*(st[:, i, : n[i]].astype(np.float64) for st in stages)) for i in range(len(n))]
    return (
        [scores[i, : n[i]] for i in range(len(n))],
        [alarms[i, : n[i]] for i in range(len(n))],
        [tests[i, : n[i]] for i in range(len(n))],
        traces,
    )


@dataclass(frozen=True, slots=True)
class Miss:
    """A missed anomaly window and why: ``late`` (the alarm came only after the window), ``habit`` (an
    expected test crossed the threshold on its own p-value, but a habit of the field lifted it),
    ``calibration`` (crossed after habits, lifted by the field's calibration), ``not armed`` (no expected
    test was scored in the window), else ``below`` (no expected test got there: the evidence was too weak
    for the model). ``test``/``score`` are the expected test nearest to the threshold and its best score
    at the final stage. ``evidence`` is the expected test with the strongest evidence of its own, and
    ``own``/``habit``/``calibrated`` its smallest ``m * p`` in the window at each stage (``m`` tests,
    Bonferroni: comparable with ``1 - threshold``; each stage only raises p, and a stage's minimum may sit
    at another reading than the one before it). An ``own`` far below 1 with ``habit`` near 1 is evidence a
    habit of the field erased; an ``own`` near 1 is evidence no test had."""

    series: str
    character: str
    kind: str
    magnitude: float
    reason: str
    test: str
    score: float
    evidence: str = ""
    own: float = math.nan
    habit: float = math.nan
    calibrated: float = math.nan


def missed_windows(
    series: Sequence[Series],
    alarms: Sequence[BoolArray],
    traces: Sequence[Trace],
    threshold: float,
) -> list[Miss]:
    out: list[Miss] = []
    m = len(TESTS)
    for s, a, tr in zip(series, alarms, traces, strict=True):
        for w in s.anomalies:
            span = slice(w.start, w.end + 1)
            if a[span].any():
                continue
            idx = [TESTS.index(name) for name in EXPECTED_TESTS[w.kind]]
            best = {st: np.nanmin(getattr(tr, st)[idx, span], axis=1, initial=np.inf) * m for st in _STAGES}
            crossed = {st: bool(np.any(best[st] <= 1.0 - threshold)) for st in _STAGES}
            after = a[w.end + 1 : w.end + 1 + w.grace]
            if after.any():
                reason = "late"
            elif not np.isfinite(best["own"]).any():
                reason = "not armed"
            elif crossed["own"] and not crossed["habit"]:
                reason = "habit"
            elif crossed["habit"] and not crossed["calibrated"]:
                reason = "calibration"
            else:
                reason = "below"
            j = int(np.argmin(best["calibrated"]))
            score = float(1.0 - min(1.0, best["calibrated"][j]))
            e = int(np.argmin(best["own"]))
            own, habit, cal = (
                float(min(1.0, best[st][e])) if np.isfinite(best["own"][e]) else math.nan for st in _STAGES
            )
            evidence = TESTS[idx[e]] if np.isfinite(best["own"][e]) else ""
            miss = Miss(s.name, s.character, w.kind, w.magnitude, reason, TESTS[idx[j]], score)
            out.append(replace(miss, evidence=evidence, own=own, habit=habit, calibrated=cal))
    return out


def false_alarm_contexts(
    series: Sequence[Series], alarms: Sequence[BoolArray], tests: Sequence[npt.NDArray[np.int8]]
) -> dict[tuple[str, str, str], int]:
    """False-alarm onsets counted by ``(test, character, context)``. Context: ``after anomaly`` (within 300
    readings after an anomaly window's grace), ``after gap`` (within 100 readings after a silence of 5
    periods or more), ``first visit`` (the value is over one unit away from every reading older than 50
    readings: a level the field never showed), else ``other``."""
    out: dict[tuple[str, str, str], int] = {}
    for s, a, te in zip(series, alarms, tests, strict=True):
        _, clean = s.labels
        onset = np.flatnonzero(a & ~np.r_[False, a[:-1]] & clean)
        gaps = np.flatnonzero(np.diff(s.t_s) >= 5.0 * s.period_s) + 1
        ends = np.array([w.end + w.grace for w in s.anomalies])
        for i in onset.tolist():
            if ends.size and np.any((i > ends) & (i - ends <= 300)):
                context = "after anomaly"
            elif gaps.size and np.any((i >= gaps) & (i - gaps <= 100)):
                context = "after gap"
            elif i > 50 and np.min(np.abs(s.values[: i - 50] - s.values[i])) > s.unit:
                context = "first visit"
            else:
                context = "other"
            key = (TESTS[int(te[i])], s.character, context)
            out[key] = out.get(key, 0) + 1
    return out
