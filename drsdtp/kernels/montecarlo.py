"""Monte Carlo uncertainty for any kernel: many runs with parameters and start values drawn at random."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.protocol import FloatArray, Prediction, Scenario, SimulationKernel, TwinState

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["EnsembleKernel", "MonteCarloKernel"]


@runtime_checkable
class EnsembleKernel(SimulationKernel, Protocol):
    """A kernel that runs a whole ensemble in one vectorised call."""

    def simulate_ensemble(
        self,
        state: TwinState,
        scenario: Scenario,
        horizon_s: float,
        runs: int,
        rng: np.random.Generator | None,
    ) -> Prediction: ...


class MonteCarloKernel:
    """Wraps a kernel: ``runs`` simulations from states drawn around the given one, summarised by quantiles.

    Values and parameters are drawn from normal distributions with the state's ``value_std`` and
    ``param_std``. Kernels with ``simulate_ensemble`` do it in one call; others are called once per run.
    Seeded, so the same call gives the same answer.
    """

    def __init__(self, base: SimulationKernel, runs: int = 200, seed: int = 0, level: float = 0.95) -> None:
        if runs < 2:
            raise InvalidValueError(f"Monte Carlo needs at least 2 runs, got {runs}")
        if not 0.0 < level < 1.0:
            raise InvalidValueError(f"level must be in (0, 1), got {level}")
        self.base, self.runs, self.seed, self.level = base, runs, seed, level

    @property
    def name(self) -> str:
        return f"montecarlo({self.base.name})"

    @property
    def variables(self) -> tuple[str, ...]:
        return self.base.variables

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        rng = np.random.default_rng(self.seed)
        if isinstance(self.base, EnsembleKernel):
            pred = self.base.simulate_ensemble(state, scenario, horizon_s, self.runs, rng)
            return Prediction(
                pred.kernel, pred.t0_s, pred.offsets_s, pred.mean, pred.lower, pred.upper, self.level
            )
        runs = [self.base.simulate(_draw(state, rng), scenario, horizon_s) for _ in range(self.runs)]
        offsets = runs[0].offsets_s
        lo_q, hi_q = 0.5 * (1.0 - self.level), 1.0 - 0.5 * (1.0 - self.level)
        mean: dict[str, FloatArray] = {}
        lower: dict[str, FloatArray] = {}
        upper: dict[str, FloatArray] = {}
        for var in runs[0].mean:
            stack = np.stack([r.mean[var] for r in runs])
            mean[var] = stack.mean(axis=0)
            lower[var] = np.quantile(stack, lo_q, axis=0)
            upper[var] = np.quantile(stack, hi_q, axis=0)
        return Prediction(
            kernel=self.name,
            t0_s=state.t_s,
            offsets_s=offsets,
            mean=MappingProxyType(mean),
            lower=MappingProxyType(lower),
            upper=MappingProxyType(upper),
            level=self.level,
        )


def _draw(state: TwinState, rng: np.random.Generator) -> TwinState:
    def jitter(values: dict[str, float], std: dict[str, float]) -> dict[str, float]:
        return {
            k: float(rng.normal(v, std[k])) if std.get(k, 0.0) > 0 and math.isfinite(v) else v
            for k, v in values.items()
        }

    return state.fork(
        values=jitter(dict(state.values), dict(state.value_std)),
        params={k: max(v, 0.0) for k, v in jitter(dict(state.params), dict(state.param_std)).items()},
    )
