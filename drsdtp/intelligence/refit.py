"""How far a parameter commit moved a kernel's prediction of each variable.

After a re-estimation the sensor-vs-model CUSUMs of a variable are forgotten only when the new parameters
predict it differently enough to matter against that sensor's noise: an offset learnt against the old
model would then read as drift against the new one. Forgetting costs the CUSUM its warm-up, and a slow
sensor drift that starts meanwhile is learnt as a calibration offset (the humidity drift was caught at
3.8-13x the CUSUM bound while every commit reset every variable). Parameter changes are no guide: a pump's
five curve coefficients move a few % together and its head prediction moves far more than its sensor noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from drsdtp.kernels import Scenario, SimulationKernel, TwinState
from drsdtp.kernels.protocol import frozen_map

__all__ = ["HORIZON_S", "MATTERS", "prediction_shift"]

MATTERS = 0.5  # a shift of half the sensor noise stays under the CUSUM's slack (k = 0.5 sigma)
HORIZON_S = 600.0  # long enough for a dynamic model's equilibrium to show, short of the next commit


def prediction_shift(
    kernel: SimulationKernel,
    twin: str,
    t_s: float,
    values: Mapping[str, float],
    before: Mapping[str, float],
    after: Mapping[str, float],
    horizon_s: float = HORIZON_S,
) -> dict[str, float]:
    """Per variable: the largest difference between the baseline trajectories under ``before`` and
    ``after`` over ``horizon_s``; infinite when the kernel cannot predict from this state (forget it)."""
    scenario = Scenario.baseline()
    try:
        old, new = (
            kernel.simulate(
                TwinState(twin=twin, t_s=t_s, values=frozen_map(values), params=frozen_map(p)),
                scenario,
                horizon_s,
            )
            for p in (before, after)
        )
    except (ArithmeticError, LookupError, ValueError):  # a third-party kernel's refusal: forget
        return dict.fromkeys(kernel.variables, math.inf)
    out: dict[str, float] = {}
    for var in kernel.variables:
        a, b = old.mean.get(var), new.mean.get(var)
        diff = math.inf if a is None or b is None else float(abs(b - a).max())
        out[var] = diff if math.isfinite(diff) else math.inf
    return out
