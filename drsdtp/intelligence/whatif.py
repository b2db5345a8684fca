"""What-if on a forked twin: run a kernel faster than real time under a scenario, report threshold crossings.

The caller hands over a :class:`~drsdtp.kernels.TwinState` snapshot (a detached copy); nothing here can reach
the live twin. With ``runs >= 2`` the kernel is wrapped in Monte Carlo, so intervals include parameter and
state uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from drsdtp.intelligence.linefit import FloatArray
from drsdtp.intelligence.results import ThresholdCrossing, WhatIfResult
from drsdtp.kernels import MonteCarloKernel, Prediction, Scenario, SimulationKernel, TwinState

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["Limits", "first_crossing", "prediction_crossings", "run_what_if"]

Limits = Mapping[str, tuple[float | None, float | None]]


def first_crossing(
    offsets_s: FloatArray, trajectory: FloatArray, threshold: float, above: bool
) -> float | None:
    """Seconds until ``trajectory`` first reaches ``threshold`` (linear interpolation), or None."""
    hit = trajectory >= threshold if above else trajectory <= threshold
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    if i == 0:
        return 0.0
    a, b = float(trajectory[i - 1]), float(trajectory[i])
    frac = (threshold - a) / (b - a) if b != a else 1.0
    return float(offsets_s[i - 1] + frac * (offsets_s[i] - offsets_s[i - 1]))


def _message(
    name: str, threshold: float, above: bool, eta_s: float | None, horizon_s: float, unit: str
) -> str:
    where = "above" if above else "below"
    if eta_s is None:
        side = "below" if above else "above"
        return f"{name} stays {side} {threshold:g}{unit} for the next {horizon_s / 60:.0f} min"
    if eta_s == 0.0:
        return f"{name} is already {where} {threshold:g}{unit}"
    return f"{name} will reach {threshold:g}{unit} in {eta_s / 60:.0f} min"


def prediction_crossings(
    prediction: Prediction, limits: Limits, units: Mapping[str, str] | None = None
) -> tuple[ThresholdCrossing, ...]:
    out: list[ThresholdCrossing] = []
    horizon = float(prediction.offsets_s[-1])
    for var, (low, high) in limits.items():
        if var not in prediction.mean:
            continue
        unit = (units or {}).get(var, "")
        for threshold, above in ((high, True), (low, False)):
            if threshold is None or not math.isfinite(threshold):
                continue
            eta = first_crossing(prediction.offsets_s, prediction.mean[var], threshold, above)
            out.append(
                ThresholdCrossing(
                    field=var,
                    threshold=threshold,
                    direction="above" if above else "below",
                    eta_min=None if eta is None else eta / 60.0,
                    message=_message(var, threshold, above, eta, horizon, unit),
                )
            )
    return tuple(out)


def run_what_if(
    kernel: SimulationKernel,
    state: TwinState,
    scenario: Scenario,
    horizon_s: float,
    limits: Limits,
    *,
    runs: int = 0,
    seed: int = 0,
    units: Mapping[str, str] | None = None,
) -> WhatIfResult:
    sim = MonteCarloKernel(kernel, runs=runs, seed=seed) if runs >= 2 else kernel
    pred = sim.simulate(state.fork(), scenario, horizon_s)
    return WhatIfResult(
        twin=state.twin,
        scenario=scenario.name,
        description=scenario.description,
        kernel=pred.kernel,
        t0_s=pred.t0_s,
        offsets_min=tuple(float(x) / 60.0 for x in pred.offsets_s),
        trajectories={k: tuple(float(x) for x in v) for k, v in pred.mean.items()},
        lower={k: tuple(float(x) for x in v) for k, v in pred.lower.items()},
        upper={k: tuple(float(x) for x in v) for k, v in pred.upper.items()},
        crossings=prediction_crossings(pred, limits, units),
    )


def refused_what_if(twin: str, scenario: Scenario, kernel: str, t_s: float, reason: str) -> WhatIfResult:
    return WhatIfResult(
        twin=twin,
        scenario=scenario.name,
        description=scenario.description,
        kernel=kernel,
        t0_s=t_s,
        offsets_min=(),
        trajectories={},
        lower={},
        upper={},
        crossings=(),
        refused=reason,
    )
