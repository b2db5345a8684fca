"""The simulation-kernel contract: ``simulate(state, scenario, horizon) -> prediction``.

A kernel is a model of one asset type. One instance serves every twin of that type (the registry creates it
once): everything twin-specific, including the parameters estimated online for that twin, travels in the
:class:`TwinState` it is given, so ``simulate`` is a pure function of its arguments and a what-if on a forked
state can never touch the live twin.

Kernels that can also follow a live twin (state estimation and online parameter estimation) implement
:class:`TrackingKernel`: their :class:`StateTracker` holds the per-twin filter and estimator state as arrays,
one slot per twin, stepped for all twins of the type at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from drsdtp.errors import InvalidValueError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "FloatArray",
    "Observation",
    "ParamChange",
    "Prediction",
    "Scenario",
    "SimulationKernel",
    "StateTracker",
    "TrackerStep",
    "TrackingKernel",
    "TwinState",
    "frozen_map",
]

FloatArray: TypeAlias = "npt.NDArray[np.float64]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
IntArray: TypeAlias = "npt.NDArray[np.int64]"


def frozen_map(values: Mapping[str, float] | None = None) -> Mapping[str, float]:
    """A read-only copy (so a forked state shares nothing mutable with its origin)."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, slots=True)
class TwinState:
    """What a kernel knows about one twin at ``t_s``: values of its variables, rates and parameters."""

    twin: str
    t_s: float
    values: Mapping[str, float]
    value_std: Mapping[str, float] = field(default_factory=frozen_map)
    rates: Mapping[str, float] = field(default_factory=frozen_map)
    rate_std: Mapping[str, float] = field(default_factory=frozen_map)
    params: Mapping[str, float] = field(default_factory=frozen_map)
    param_std: Mapping[str, float] = field(default_factory=frozen_map)

    def fork(
        self,
        *,
        values: Mapping[str, float] | None = None,
        params: Mapping[str, float] | None = None,
    ) -> TwinState:
        """A detached copy, with some values or parameters overridden."""
        return TwinState(
            twin=self.twin,
            t_s=self.t_s,
            values=frozen_map({**self.values, **(values or {})}),
            value_std=frozen_map(self.value_std),
            rates=frozen_map(self.rates),
            rate_std=frozen_map(self.rate_std),
            params=frozen_map({**self.params, **(params or {})}),
            param_std=frozen_map(self.param_std),
        )


@dataclass(frozen=True, slots=True)
class Scenario:
    """A what-if: inputs held at given values and parameters scaled (``heater_gain: 0`` = heater fails)."""

    name: str = "baseline"
    inputs: Mapping[str, float] = field(default_factory=frozen_map)
    param_scale: Mapping[str, float] = field(default_factory=frozen_map)
    step_s: float = 60.0
    description: str = ""

    def __post_init__(self) -> None:
        if not (self.step_s > 0 and math.isfinite(self.step_s)):
            raise InvalidValueError(f"scenario step_s must be positive, got {self.step_s}")
        for key, value in {**self.inputs, **self.param_scale}.items():
            if not math.isfinite(value):
                raise InvalidValueError(f"scenario {self.name!r}: {key} must be finite, got {value}")
        if any(v < 0 for v in self.param_scale.values()):
            raise InvalidValueError(f"scenario {self.name!r}: parameter scales must be >= 0")

    @staticmethod
    def baseline() -> Scenario:
        return Scenario("baseline", description="inputs held as they are")

    @staticmethod
    def fan_off() -> Scenario:
        return Scenario("fan off", inputs=frozen_map({"fan": 0.0}), description="fan switched off")

    @staticmethod
    def fan_on() -> Scenario:
        return Scenario("fan on", inputs=frozen_map({"fan": 1.0}), description="fan at full speed")

    @staticmethod
    def heater_off() -> Scenario:
        return Scenario(
            "heater off",
            inputs=frozen_map({"heater": 0.0}),
            description="heater off, thermostat overridden",
        )

    @staticmethod
    def setpoint(celsius: float) -> Scenario:
        return Scenario(
            f"setpoint {celsius:g} C",
            inputs=frozen_map({"setpoint": celsius}),
            description=f"thermostat set to {celsius:g} C",
        )

    @staticmethod
    def heater_fails() -> Scenario:
        return Scenario(
            "heater fails",
            param_scale=frozen_map({"heater_gain": 0.0}),
            description="the heater delivers no heat whatever it is asked",
        )

    @staticmethod
    def parse(text: str) -> Scenario:
        """Parse the CLI spelling: ``fan off|on``, ``heater off``, ``heater fails``, ``setpoint 18``, and for
        any kernel ``<input> <value>`` (``speed 2400``: hold that input) or ``<parameter> x<factor>``
        (``system_flow_m3h x0.5``: scale a parameter). Whether the kernel knows the name is its business."""
        words = text.strip().lower().replace("=", " ").split()
        simple = {
            ("baseline",): Scenario.baseline,
            ("fan", "off"): Scenario.fan_off,
            ("fan", "on"): Scenario.fan_on,
            ("heater", "off"): Scenario.heater_off,
            ("heater", "fails"): Scenario.heater_fails,
        }
        if tuple(words) in simple:
            return simple[tuple(words)]()
        if len(words) == 2 and words[0] == "setpoint":
            try:
                return Scenario.setpoint(float(words[1].rstrip("c")))
            except ValueError:
                pass
        if len(words) == 2 and words[0].replace("_", "a").isalnum():
            name, value = words
            try:
                if value.startswith("x"):
                    factor = float(value[1:])
                    return Scenario(f"{name} x{factor:g}", param_scale=frozen_map({name: factor}))
                return Scenario(f"{name} {float(value):g}", inputs=frozen_map({name: float(value)}))
            except ValueError:
                pass
        raise InvalidValueError(
            f"unknown scenario {text!r}; try 'fan off', 'heater fails', 'setpoint 18', '<input> <value>' "
            "(speed 2400) or '<parameter> x<factor>' (system_flow_m3h x0.5)"
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """A trajectory: ``mean[var][i]`` at ``t0_s + offsets_s[i]``, with an interval ``lower``..``upper``."""

    kernel: str
    t0_s: float
    offsets_s: FloatArray
    mean: Mapping[str, FloatArray]
    lower: Mapping[str, FloatArray]
    upper: Mapping[str, FloatArray]
    level: float = 0.95

    def at(self, variable: str, offset_s: float) -> float:
        """Mean of ``variable`` ``offset_s`` seconds after ``t0_s`` (linear interpolation)."""
        return float(np.interp(offset_s, self.offsets_s, self.mean[variable]))


@runtime_checkable
class SimulationKernel(Protocol):
    """A model of one asset type, shared by all its twins."""

    @property
    def name(self) -> str: ...

    @property
    def variables(self) -> tuple[str, ...]:
        """The state variables it predicts."""
        ...

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction: ...


@dataclass(frozen=True, slots=True)
class Observation:
    """Latest readings of the fields bound to one kernel variable: shape ``(slots, members)``.

    ``ok``: the reading may update the state estimate (new, and of good enough quality). ``learn``: it may
    also teach the parameters (``None``: same as ``ok``); a sensor suspected of drift is kept out of learning.
    ``t_s``: when each latest reading was taken (``None``: not known), so a tracker can tell a new reading
    from one it has already seen and integrate over the real interval between readings (energy counters).
    """

    values: FloatArray
    ok: BoolArray
    sigma: FloatArray
    learn: BoolArray | None = None
    t_s: FloatArray | None = None

    def fused(self) -> tuple[FloatArray, BoolArray, FloatArray, FloatArray]:
        """Per slot: mean of the usable members, whether any is usable, the sigma of that mean, and the
        latest reading time among them (NaN where none is usable or times are unknown)."""
        ok = self.ok
        n = ok.sum(axis=1)
        any_ok = n > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(ok, self.values, 0.0).sum(axis=1) / n
            var = np.where(ok, np.nan_to_num(self.sigma, nan=0.0) ** 2, 0.0).sum(axis=1) / n**2
        t = np.full(ok.shape[0], np.nan)
        if self.t_s is not None:
            t = np.where(any_ok, np.where(ok, self.t_s, -np.inf).max(axis=1), np.nan)
        return np.where(any_ok, mean, np.nan), any_ok, np.sqrt(np.where(any_ok, var, np.nan)), t


@dataclass(frozen=True, slots=True)
class ParamChange:
    """One committed parameter change; ``clipped``: the estimate left the safe range and was not followed."""

    name: str
    old: float
    new: float
    estimate: float
    clipped: bool


@dataclass(frozen=True, slots=True)
class TrackerStep:
    """Model predictions made before this step's readings were used (per state variable, per slot)."""

    prior: Mapping[str, FloatArray]
    prior_std: Mapping[str, FloatArray]


class StateTracker(Protocol):
    """Per-twin filter and estimator state for one kernel, stepped for many twins at once."""

    def resize(self, slots: int) -> None: ...

    def step(
        self, slots: IntArray, dt_s: FloatArray, observations: Mapping[str, Observation]
    ) -> TrackerStep: ...

    def state(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        """Current estimates and standard deviations of the state variables of one twin."""
        ...

    def params(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        """Committed parameters (used for prediction) and their standard deviations."""
        ...

    def candidate_params(self, slot: int) -> dict[str, float]:
        """The estimator's current, not yet committed, parameters."""
        ...

    def commit(self, slot: int, *, relaxed: bool = False) -> tuple[ParamChange, ...]:
        """Adopt the settled candidate parameters, clipped to their safe bounds; returns what changed.

        ``relaxed``: the model is known to be wrong (model drift), so less certain estimates are accepted.
        """
        ...

    def reopen(self, slots: IntArray) -> None:
        """Widen the estimator's uncertainty so it re-learns quickly (after model drift)."""
        ...


@runtime_checkable
class TrackingKernel(SimulationKernel, Protocol):
    """A kernel that can also follow live twins."""

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def safe_params(self) -> tuple[str, ...]:
        """Parameters that may be re-estimated automatically (within bounds)."""
        ...

    def tracker(self, prior: Mapping[str, float]) -> StateTracker: ...
