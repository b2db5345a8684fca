"""Validate twin intelligence against the simulated plant with injected faults of known type and onset.

Run: ``python benches/validate_intelligence.py [--rooms-per-kind N] [--seed S]``. Prints, per fault kind, the
detection rate within 10 samples and within the observation window, the median and worst delay; the false
alarms on clean data; model drift (plant change) detection and how it is told apart from sensor drift; and
the 15-minute forecast MAE of the linear and model forecasts against a naive last-value forecast.
Goals (issue 6): >= 95 % of faults detected within 10 samples, <= 1 % false alarms, MAE <= 50 % of naive.
Then the labelled check of the sensor / process / model verdict (``drsdtp.sim.verdicts``, issue 10 item 3):
per plant and label, how each unit's event was called and the accuracy (``--verdict-units 0`` skips it).
"""

from __future__ import annotations

import argparse
import math
import time

from drsdtp.sim.campaign import CampaignConfig, KindResult, drift_bound, run_campaign
from drsdtp.sim.verdicts import VerdictConfig, run_verdicts


def drift_bounds(cfg: CampaignConfig, kinds: tuple[KindResult, ...]) -> None:
    print("  drifts against the CUSUM bound (goal: caught within 2x):")
    for k in kinds:
        bound = drift_bound(cfg, k.label)
        if bound is None or not k.delays:
            continue
        print(
            f"    {k.label:<16} bound {bound:5.1f} samples; median {k.median_delay / bound:.2f}x, "
            f"worst {max(k.delays) / bound:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms-per-kind", type=int, default=20)
    parser.add_argument("--clean-rooms", type=int, default=20)
    parser.add_argument("--model-drift-rooms", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1800, help="plant samples before the faults' onsets")
    parser.add_argument("--observe", type=int, default=360, help="plant samples judged after the warm-up")
    parser.add_argument("--verdict-units", type=int, default=9, help="units per label in the verdict check")
    parser.add_argument("--verdict-warmup", type=int, default=1800, help="samples before the verdict events")
    parser.add_argument("--verdict-observe", type=int, default=360, help="samples judged after them")
    args = parser.parse_args()
    cfg = CampaignConfig(
        rooms_per_plan=args.rooms_per_kind,
        clean_rooms=args.clean_rooms,
        model_drift_rooms=args.model_drift_rooms,
        warmup_steps=args.warmup,
        observe_steps=args.observe,
        seed=args.seed,
    )
    start = time.perf_counter()
    res = run_campaign(cfg)
    elapsed = time.perf_counter() - start
    steps = cfg.warmup_steps + cfg.observe_steps + cfg.observe_steps // 4
    print(
        f"plant: {cfg.rooms_per_plan * len(cfg.plans) + cfg.clean_rooms + cfg.model_drift_rooms} rooms x "
        f"{steps} steps of {cfg.dt_s:g} s (warm-up {cfg.warmup_steps}), seed {cfg.seed}, {elapsed:.1f} s"
    )
    print()
    print(
        f"{'fault':<16}{'n':>4}{'within ' + str(cfg.within):>14}{'detected':>10}"
        f"{'median delay':>14}{'max delay':>11}"
    )
    for k in res.kinds:
        worst = max(k.delays) if k.delays else math.nan
        print(
            f"{k.label:<16}{k.injected:>4}{k.rate_within:>14.0%}{k.rate:>10.0%}{k.median_delay:>14.1f}{worst:>11}"
        )
    m = res.model_drift
    print(
        f"{'model drift':<16}{m.injected:>4}{'':>14}{m.rate:>10.0%}{m.median_delay:>14.1f}"
        f"{max(m.delays) if m.delays else math.nan:>11}"
    )
    print(
        "  (delay = samples from onset to the first pass that names the fault; 0 = the onset sample itself."
        " Drift magnitudes: 'drift' 12 C/h, 'drift_slow' 2 C/h, 'drift_humidity' 30 %RH/h, model only.)"
    )
    drift_bounds(cfg, res.kinds)
    print()
    print(
        f"false alarms on clean data: {res.false_alarm_rate:.3%} of {res.clean_evaluations} evaluations; "
        f"{res.clean_fields_alarmed:.1%} of clean fields ever alarmed"
    )
    print(f"clean twins with any divergence (model) alert: {res.clean_divergence_alarmed:.0%}")
    print(
        f"plant change called sensor fault at some point: {res.model_drift_as_sensor_fault:.0%}; "
        f"sensor drift called model drift at some point: {res.sensor_drift_as_model_drift:.0%}"
    )
    print()
    print(
        f"forecast MAE at 15 min over {res.forecasts} forecasts (clean rooms, against the true temperature):"
    )
    for method, mae in res.mae.items():
        ratio = res.mae_ratio.get(method, 1.0)
        print(f"  {method:<8} {mae:.3f} C   ratio to naive {ratio:.2f}")
    if args.verdict_units > 0:
        verdicts(
            VerdictConfig(
                units_per_case=args.verdict_units,
                warmup_steps=max(args.verdict_warmup, 100),
                observe_steps=max(args.verdict_observe, 4),
                seed=args.seed,
            )
        )


def verdicts(cfg: VerdictConfig) -> None:
    start = time.perf_counter()
    results = run_verdicts(cfg)
    print()
    print(
        f"sensor / process / model verdict, {cfg.units_per_case} units per label, "
        f"{time.perf_counter() - start:.1f} s (the first verdict after the onset):"
    )
    print(f"  {'plant':<9}{'label':<9}{'accuracy':>9}{'first after':>13}   verdicts")
    for r in results:
        calls = ", ".join(f"{k or 'none'} {v}" for k, v in r.verdicts.most_common())
        print(f"  {r.plant:<9}{r.label:<9}{r.accuracy:>9.0%}{r.median_delay:>13.1f}   {calls}")
    print(
        "  (room/hum: a drifting humidity sensor, its only evidence the kernel residual and the fan it"
        " depends on; first after: median samples from the onset to the first verdict)"
    )


if __name__ == "__main__":
    main()
