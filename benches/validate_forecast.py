"""Forecast validation on the evaluation corpus: interval coverage and MASE per series character.

Run: ``python benches/validate_forecast.py [--split heldout] [--per-character 6] [--origins 20]``.
For every series (``drsdtp.sim.corpus``), origins are spread over its second half; at each, the calibrated
forecaster (:mod:`drsdtp.intelligence.calibrated`) sees the newest 1000 readings (the engine's window) and
forecasts 5, 15, 30 and 60 minutes ahead. Origins whose look-ahead touches a labelled anomaly window are
skipped (a forecast is not expected to foresee a fault). Reported per character and horizon: the coverage
of the nominal 90 % interval, and MASE (mean absolute error over the mean absolute one-step change of the
history) of our forecast, of the naive forecast (the last reading) and of the seasonal-naive one (the
reading one day before the target; where the history covers a day).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import numpy as np

from drsdtp.intelligence.calibrated import DAY_S, forecast_series
from drsdtp.sim.corpus import CHARACTERS, generate_corpus

HORIZONS_MIN = (5.0, 15.0, 30.0, 60.0)
WINDOW = 1000
NOMINAL = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="heldout", choices=("tune", "heldout"))
    parser.add_argument("--per-character", type=int, default=6)
    parser.add_argument("--origins", type=int, default=20)
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = generate_corpus(args.split, args.per_character)
    horizons = np.asarray(HORIZONS_MIN) * 60.0
    # per (character, horizon): hits, our errors, naive errors, seasonal-naive errors, scales
    hits: dict[tuple[str, int], list[bool]] = defaultdict(list)
    ours: dict[tuple[str, int], list[float]] = defaultdict(list)
    naive: dict[tuple[str, int], list[float]] = defaultdict(list)
    snaive: dict[tuple[str, int], list[float]] = defaultdict(list)
    snaive_ours: dict[tuple[str, int], list[float]] = defaultdict(list)
    methods: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    forecasts = 0
    for series in corpus:
        t, v = series.t_s, series.values
        bad = np.zeros(t.size, bool)
        for a in series.anomalies:
            bad[a.start : a.end + a.grace + 1] = True
        for origin_i in np.linspace(t.size // 2, t.size - 2, args.origins).astype(int):
            lo = max(0, origin_i + 1 - WINDOW)
            ht, hv = t[lo : origin_i + 1], v[lo : origin_i + 1]
            ok = np.isfinite(hv)
            if ok.sum() < 50 or bad[lo : origin_i + 1][-50:].any():
                continue
            now = float(t[origin_i])
            steps = np.abs(np.diff(hv[ok]))
            scale = float(steps.mean()) if steps.size else math.nan
            if not scale > 0:
                continue
            fc = forecast_series(ht, hv, now, tuple(horizons), nominal=NOMINAL)
            if fc is None:
                continue
            forecasts += 1
            last = float(hv[ok][-1])
            for k, h in enumerate(horizons):
                target_i = int(np.searchsorted(t, now + h))
                if target_i >= t.size or bad[origin_i : target_i + 1].any():
                    continue
                actual = float(np.interp(now + h, t, np.nan_to_num(v, nan=last)))
                if not math.isfinite(actual):
                    continue
                key = (series.character, k)
                methods[series.character][fc.method[k]] += 1
                if math.isfinite(fc.lower[k]):
                    hits[key].append(fc.lower[k] <= actual <= fc.upper[k])
                ours[key].append(abs(actual - fc.mean[k]) / scale)
                naive[key].append(abs(actual - last) / scale)
                if now + h - DAY_S >= ht[0]:
                    day_ago = float(np.interp(now + h - DAY_S, ht[ok], hv[ok]))
                    snaive[key].append(abs(actual - day_ago) / scale)
                    snaive_ours[key].append(abs(actual - fc.mean[k]) / scale)
    elapsed = time.perf_counter() - start
    print(
        f"corpus {args.split}: {len(corpus)} series, {forecasts} forecast origins, horizons "
        f"{', '.join(f'{h:g}' for h in HORIZONS_MIN)} min; nominal interval {NOMINAL:.0%}; {elapsed:.1f} s"
    )
    header = (
        f"{'character':<10} {'h min':>5} {'n':>5} {'coverage':>8} {'MASE ours':>9} {'naive':>7} "
        f"{'s-naive':>8}"
    )
    print(header + "  (s-naive: MASE of ours | seasonal-naive on the origins with a day of history)")
    all_hits: list[bool] = []
    beat = 0
    rows = 0
    for character in CHARACTERS:
        for k, hmin in enumerate(HORIZONS_MIN):
            key = (character, k)
            if not ours[key]:
                continue
            cover = float(np.mean(hits[key])) if hits[key] else math.nan
            all_hits += hits[key]
            m_ours, m_naive = float(np.mean(ours[key])), float(np.mean(naive[key]))
            rows += 1
            beat += m_ours <= m_naive * 1.0001
            sn = f"{np.mean(snaive_ours[key]):.2f}|{np.mean(snaive[key]):.2f}" if snaive[key] else "-"
            print(
                f"{character:<10} {hmin:>5g} {len(ours[key]):>5} {cover:>8.1%} {m_ours:>9.2f} "
                f"{m_naive:>7.2f} {sn:>8}"
            )
    print(
        f"overall coverage of the {NOMINAL:.0%} interval: {np.mean(all_hits):.1%} "
        f"over {len(all_hits)} forecasts"
    )
    print(f"ours at or below the naive MASE in {beat} of {rows} character x horizon cells")
    for character, counts in methods.items():
        print(f"  {character:<10} chosen: {', '.join(f'{m} {n}' for m, n in sorted(counts.items()))}")


if __name__ == "__main__":
    main()
