"""The linear-trend kernel: every variable continues at its current rate; the interval widens with time."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import TYPE_CHECKING

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.protocol import FloatArray, Prediction, Scenario, TwinState

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["LinearTrendKernel", "extrapolate"]


class LinearTrendKernel:
    """``value(t) = value + rate * t``; a scenario input pins that variable to the given value."""

    name = "linear.trend"

    def __init__(self, z: float = 1.96) -> None:
        self.z = z

    @property
    def variables(self) -> tuple[str, ...]:
        return ()  # whatever the state carries

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        return extrapolate(self.name, state, scenario, horizon_s, self.z)


def extrapolate(kernel: str, state: TwinState, scenario: Scenario, horizon_s: float, z: float) -> Prediction:
    """Straight-line trajectories; ``sd(t) = sqrt(value_std^2 + (rate_std t)^2)``."""
    if not (horizon_s > 0 and math.isfinite(horizon_s)):
        raise InvalidValueError(f"horizon_s must be positive, got {horizon_s}")
    steps = max(1, math.ceil(horizon_s / scenario.step_s))
    offsets = np.minimum(np.arange(steps + 1) * scenario.step_s, horizon_s)
    mean: dict[str, FloatArray] = {}
    lower: dict[str, FloatArray] = {}
    upper: dict[str, FloatArray] = {}
    for var, value in state.values.items():
        pinned = var in scenario.inputs
        start = scenario.inputs[var] if pinned else value
        rate = 0.0 if pinned else state.rates.get(var, 0.0)
        m = start + rate * offsets
        sd = np.sqrt(state.value_std.get(var, 0.0) ** 2 + (state.rate_std.get(var, 0.0) * offsets) ** 2)
        if pinned:
            sd = np.zeros_like(offsets)
        mean[var], lower[var], upper[var] = m, m - z * sd, m + z * sd
    return Prediction(
        kernel=kernel,
        t0_s=state.t_s,
        offsets_s=offsets,
        mean=MappingProxyType(mean),
        lower=MappingProxyType(lower),
        upper=MappingProxyType(upper),
    )
