"""Validate model-free anomaly detection on the labelled corpus, against two baselines in the same run.

Run: ``python benches/validate_anomaly.py [--split heldout|tune|fresh] [--per-character N] [--no-engine]
[--no-splits] [--breakdown]``.
Every series (``drsdtp.sim.corpus``: 10 characters, N series each, 1-4 labelled anomalies per series) is
scored online, reading by reading, by

* ``detector``: the model-free detector (``drsdtp.intelligence.detect``) at its default threshold;
* ``zscore``: a trailing z-score (previous 100 readings, |z| > 4);
* ``engine``: the engine's health detectors as they were before the model-free detector (one generic field,
  project defaults, the series' real period, a pass per reading; alarm = any health reason).

Per character: recall of anomaly windows, false alarms per 10k clean readings (alarm onsets; point-wise in
brackets), median detection delay in readings, and the NAB-style windowed score (100 = every window caught
at its start, 0 = nothing caught; false alarms cost 0.11 each). Then which tests raised the false alarms,
and the calibration check: on the clean readings, the share with a score above s against 1 - s. Goals
(issue 10): <= 1 false alarm per 10k clean readings, >= 90 % of windows caught, both baselines beaten on
every character. Then the same detector on every split side by side (``tune``, looked at while designing;
``heldout``; ``fresh``, never looked at while changing the detector): per character recall and false
alarms, so overfitting to one split would show. With ``--breakdown`` (diagnosis; run it on ``tune``
only): where the missing recall and the false alarms are, i.e. missed windows by kind x character and why
each was missed (late, lifted by a habit or by calibration, not armed, or below the threshold), false
alarms by test x character x context (first visit to a level, after a gap, after an anomaly, other), and
the operating curve (recall and false alarms at other score levels).
Last, when statsmodels is installed, alarms on the real series it ships (unlabelled).
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from typing import Any

import numpy as np

from drsdtp.intelligence.detect import TESTS, DetectorConfig
from drsdtp.sim.corpus import CHARACTERS, SPLITS, Series, generate_corpus
from drsdtp.sim.corpus_eval import (
    CharacterScore,
    Miss,
    Trace,
    aggregate,
    detector_run,
    detector_scores,
    detector_trace,
    engine_alarms,
    false_alarm_contexts,
    false_alarms_by_test,
    missed_windows,
    score_series,
    trailing_zscore,
)

LEVELS = (0.9, 0.99, 0.999, 0.9999)
CURVE = (1.0 - 1e-3, 1.0 - 3e-4, 1.0 - 1e-4, 1.0 - 3e-5, 1.0 - 1e-5)


def row(label: str, a: CharacterScore) -> str:
    return (
        f"{label:<10}{a.recall:>7.0%}{a.fa_per_10k:>8.2f} ({a.fa_points_per_10k:>7.1f}){a.median_delay:>7.1f}"
        f"{a.nab:>7.1f}"
    )


def real_series() -> list[Series] | str:
    """Real unlabelled series shipped by statsmodels (optional): weekly Mauna Loa CO2 (trend + yearly
    cycle, its missing weeks dropped), monthly El Nino sea temperatures (real events, so alarms there are
    not all false), yearly sunspots. Returns why not when statsmodels is missing."""
    try:  # optional, untyped: imported by name so type checks pass with or without it
        datasets: Any = importlib.import_module("statsmodels.datasets")
    except ImportError:
        return "statsmodels is not installed (pip install statsmodels to add real series)"
    week, month, year = 7 * 86_400.0, 30.44 * 86_400.0, 365.25 * 86_400.0
    co2 = datasets.co2.load_pandas().data["co2"].to_numpy(dtype=np.float64)
    nino = datasets.elnino.load_pandas().data.iloc[:, 1:].to_numpy(dtype=np.float64).ravel()
    spots = datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    out = []
    for name, values, period in (("co2", co2, week), ("elnino", nino, month), ("sunspots", spots, year)):
        keep = np.isfinite(values)
        t = np.arange(values.size, dtype=np.float64)[keep] * period
        out.append(Series(name, "real", "real", 0, t, values[keep], period, 1.0, ()))
    return out


def real_report(config: DetectorConfig, with_engine: bool) -> None:
    series = real_series()
    print()
    if isinstance(series, str):
        print("real series: skipped,", series)
        return
    _, alarms = detector_scores(series, config)
    runs = {"detector": alarms, "zscore": [trailing_zscore(s.values) for s in series]}
    if with_engine:
        runs["engine"] = engine_alarms(series)
    print("real series (statsmodels datasets, unlabelled): alarm onsets per 10k readings after 200")
    print(f"{'':<10}" + "".join(f"{s.name + f' ({s.values.size})':>18}" for s in series))
    for name, al in runs.items():
        cells = []
        for a in al:
            a = a[200:]
            onsets = int(np.count_nonzero(a & ~np.r_[False, a[:-1]]))
            cells.append(f"{1e4 * onsets / max(a.size, 1):>12.1f} ({onsets:>2})")
        print(f"{name:<10}" + "".join(cells))


def breakdown_report(
    corpus: list[Series],
    scores: list[Any],
    alarms: list[Any],
    tests: list[Any],
    traces: list[Trace],
    threshold: float,
) -> None:
    """Where the missing recall and the false alarms are (see the module's doc)."""
    misses = missed_windows(corpus, alarms, traces, threshold)
    print()
    print(f"breakdown: {len(misses)} missed windows by kind x character, and why")
    print(f"{'kind':<10}{'character':<11}{'missed':>7}  reasons (nearest test: best score)")
    groups: dict[tuple[str, str], list[Miss]] = {}
    for m in misses:
        groups.setdefault((m.kind, m.character), []).append(m)
    for (kind, ch), ms in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        reasons: dict[str, int] = {}
        for m in ms:
            reasons[m.reason] = reasons.get(m.reason, 0) + 1
        why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        near = ", ".join(f"{m.test} {m.score:.3f}" for m in ms)
        print(f"{kind:<10}{ch:<11}{len(ms):>7}  {why} ({near})")
    print(
        "each miss: series, kind, magnitude (units), reason, nearest test, its best score; then the test with"
    )
    print(f"the strongest evidence of its own and its smallest m * p (m = {len(TESTS)} tests; alarm at")
    print(f"{1.0 - threshold:.0e}) from its own model, after the field's habits, after calibration")
    for m in misses:
        print(
            f"  {m.series:<22}{m.kind:<10}{m.magnitude:>7.1f}  {m.reason:<12}{m.test:<11}{m.score:.4f}"
            f"  {m.evidence:<11}{m.own:>9.1e}{m.habit:>9.1e}{m.calibrated:>9.1e}"
        )
    evidence_report(misses)
    contexts = false_alarm_contexts(corpus, alarms, tests)
    print()
    total = sum(contexts.values())
    print(f"breakdown: {total} false-alarm onsets by test x character x context")
    names = ("first visit", "after gap", "after anomaly", "other")
    print(f"{'test':<12}{'character':<11}" + "".join(f"{n:>15}" for n in names))
    keys = sorted(
        {(te, ch) for te, ch, _ in contexts}, key=lambda k: -sum(contexts.get((*k, n), 0) for n in names)
    )
    for te, ch in keys:
        print(f"{te:<12}{ch:<11}" + "".join(f"{contexts.get((te, ch, n), 0):>15}" for n in names))
    by = [sum(v for (_, _, c), v in contexts.items() if c == n) for n in names]
    print(f"{'all':<23}" + "".join(f"{x:>15}" for x in by))
    print()
    print("operating curve (alarm = score >= level, no hysteresis: approximate): a change that only trades")
    print("recall for false alarms moves along this curve; a better model moves the curve")
    print(f"{'level':<12}{'recall':>8}{'FA/10k':>9}{'NAB':>7}")
    for lv in CURVE:
        res = [score_series(s, sc >= lv) for s, sc in zip(corpus, scores, strict=True)]
        a = aggregate(res)
        print(f"{f'1 - {1 - lv:.0e}':<12}{a.recall:>8.0%}{a.fa_per_10k:>9.2f}{a.nab:>7.1f}")


EVIDENCE_BANDS = (1e-4, 1e-2, 1.0)


def evidence_report(misses: list[Miss]) -> None:
    """How strong the missed windows' own evidence was, and how much of it the field's habits erased: the
    part of the missing recall a stronger test could win, and the part a habit of the field hides."""
    print()
    print("missed windows by the strongest own evidence (m * p from the test's own model), and how many of")
    print("them a habit of the field lifted tenfold or more")
    lo = 0.0
    for hi in EVIDENCE_BANDS:
        band = [m for m in misses if lo <= m.own < hi or (hi == 1.0 and m.own >= lo)]
        lifted = sum(1 for m in band if m.habit >= 10.0 * m.own)
        kinds: dict[str, int] = {}
        for m in band:
            kinds[f"{m.character}/{m.kind}"] = kinds.get(f"{m.character}/{m.kind}", 0) + 1
        cells = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
        close = "]" if hi == 1.0 else ")"
        print(f"  own in [{lo:.0e}, {hi:.0e}{close}: {len(band):>3}, lifted {lifted:>3}  ({cells})")
        lo = hi
    unarmed = sum(1 for m in misses if math.isnan(m.own))
    if unarmed:
        print(f"  no expected test armed: {unarmed}")


def split_report(config: DetectorConfig, per_character: int) -> None:
    """Recall and false alarms per character on every split (the detector and the z-score)."""
    print()
    print("by split (train = tune; held out = heldout, fresh): recall / FA per 10k clean readings")
    head = "".join(f"{name:>22}" for name in SPLITS)
    print(f"{'':<10}{'':<9}{head}")
    results: dict[str, dict[str, list[CharacterScore]]] = {}
    for split in SPLITS:
        corpus = generate_corpus(split, per_character)
        _, alarms = detector_scores(corpus, config)
        runs = {"detector": alarms, "zscore": [trailing_zscore(s.values) for s in corpus]}
        for name, al in runs.items():
            scores = [score_series(s, a) for s, a in zip(corpus, al, strict=True)]
            results.setdefault(name, {})[split] = [aggregate(scores, ch) for ch in (*CHARACTERS, "all")]
    for i, ch in enumerate((*CHARACTERS, "all")):
        for name, by_split in results.items():
            cells = "".join(
                f"{by_split[sp][i].recall:>12.0%} {by_split[sp][i].fa_per_10k:>8.2f}" for sp in SPLITS
            )
            print(f"{ch if name == 'detector' else '':<10}{name:<9}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="heldout", choices=tuple(SPLITS))
    parser.add_argument("--per-character", type=int, default=6)
    parser.add_argument("--no-engine", action="store_true", help="skip the (slow) engine baseline")
    parser.add_argument("--no-splits", action="store_true", help="skip the side-by-side run on every split")
    parser.add_argument(
        "--breakdown", action="store_true", help="where the misses and false alarms are (use on tune only)"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    corpus = generate_corpus(args.split, args.per_character)
    readings = sum(s.values.shape[0] for s in corpus)
    windows = sum(len(s.anomalies) for s in corpus)
    print(
        f"corpus '{args.split}': {len(corpus)} series ({args.per_character} per character), "
        f"{readings} readings, {windows} anomaly windows; generated in {time.perf_counter() - start:.1f} s"
    )
    config = DetectorConfig()
    start = time.perf_counter()
    traces: list[Trace] = []
    if args.breakdown:
        scores, alarms, tests, traces = detector_trace(corpus, config)
    else:
        scores, alarms, tests = detector_run(corpus, config)
    det_s = time.perf_counter() - start
    detectors = {"detector": alarms}
    detectors["zscore"] = [trailing_zscore(s.values) for s in corpus]
    eng_s = 0.0
    if not args.no_engine:
        start = time.perf_counter()
        detectors["engine"] = engine_alarms(corpus)
        eng_s = time.perf_counter() - start
    print(f"scored online: detector {det_s:.1f} s, engine baseline {eng_s:.1f} s")
    results = {
        name: [score_series(s, a) for s, a in zip(corpus, alarms, strict=True)]
        for name, alarms in detectors.items()
    }
    print()
    print(f"{'':<10}{'recall':>7}{'FA/10k (points)':>18}{'delay':>7}{'NAB':>7}")
    beaten: list[str] = []
    for ch in (*CHARACTERS, "all"):
        print(f"-- {ch}")
        agg = {name: aggregate(res, ch) for name, res in results.items()}
        for name, a in agg.items():
            extra = f"   missed: {dict(sorted(a.missed.items()))}" if name == "detector" and a.missed else ""
            print(row(name, a) + extra)
        mine = agg["detector"]
        for name, a in agg.items():
            if name != "detector" and not (mine.nab > a.nab and mine.fa_per_10k <= max(a.fa_per_10k, 1.0)):
                beaten.append(f"{ch}: not better than {name}")
    print()
    print(
        "baselines beaten on every character (higher NAB, no more false alarms):",
        "yes" if not beaten else "no",
    )
    for line in beaten:
        print("  ", line)

    print()
    print("detector false alarms by test (alarm onsets on clean readings): which test to calibrate where")
    by_test = false_alarms_by_test(corpus, alarms, tests)
    for ch in CHARACTERS:
        fired = by_test.get(ch, {})
        cells = ", ".join(f"{name} {count}" for name, count in sorted(fired.items(), key=lambda kv: -kv[1]))
        print(f"{ch:<10}{cells or '-'}")

    print()
    print("calibration on clean readings: share with score > s (goal: <= 1 - s)")
    print(f"{'':<10}" + "".join(f"{f's={lv}':>12}" for lv in LEVELS))
    for ch in (*CHARACTERS, "all"):
        clean = [sc[s.labels[1]] for s, sc in zip(corpus, scores, strict=True) if ch in ("all", s.character)]
        pooled = np.concatenate(clean)
        print(f"{ch:<10}" + "".join(f"{np.mean(pooled > lv):>12.2e}" for lv in LEVELS))
    print(f"{'1 - s':<10}" + "".join(f"{1 - lv:>12.2e}" for lv in LEVELS))
    if args.breakdown:
        breakdown_report(corpus, scores, alarms, tests, traces, config.threshold)
    if not args.no_splits:
        split_report(config, args.per_character)
    real_report(config, not args.no_engine)


if __name__ == "__main__":
    main()
