"""What the intelligence layer needs to know about fields and model types, and its tunable thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, get_args

from drsdtp.errors import ConfigError

__all__ = ["FIELD_KINDS", "FieldKind", "FieldSpec", "HealthConfig", "IntelligenceConfig", "ModelSpec"]

#: What a field measures, which decides the checks that make sense for it:
#: ``analog`` a noisy measurement (temperature, flow): every detector applies;
#: ``counter`` a monotonic total (energy, operating hours): it only grows, except for resets and rollovers;
#: ``state`` a mode or discrete status (running, alarm code); ``setpoint`` a commanded target;
#: ``actuator`` feedback of what an actuator does (valve position, heater duty): these three move in steps.
FieldKind = Literal["analog", "counter", "state", "setpoint", "actuator"]
FIELD_KINDS: Final[tuple[FieldKind, ...]] = get_args(FieldKind)

_EMPTY: Mapping[str, float] = MappingProxyType({})


def _positive(key: str, value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ConfigError(key, f"must be a positive finite number, got {value}")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One numeric field of a model type.

    ``expected_period_s`` is how often a reading should arrive (staleness and loss are measured against it);
    ``kind`` is one of :data:`FIELD_KINDS`; ``analog`` is true exactly for ``kind == "analog"`` (noisy
    measurements); others (counters, actuator feedback, modes, setpoints) move in steps or only grow, so
    stuck, spike and drift checks do not apply to them. Give either: ``kind`` wins; ``analog=False`` alone
    means ``kind="state"``;
    ``depends_on`` names fields of the same model this one follows physically (``flow`` depends on
    ``speed``): a change of those explains a change of this one;
    ``resolution`` is the sensor's quantum (a flat line is a run of readings within half of it);
    ``redundancy_group`` names fields that measure the same quantity (``temp_1`` and ``temp_2``), so drift is
    checked against the peers; ``valid_min``/``valid_max`` bound what is physically possible, while
    ``low_limit``/``high_limit`` are operating thresholds for time-to-threshold, what-if and risk.
    """

    name: str
    expected_period_s: float = 10.0
    unit: str = ""
    resolution: float = 0.0
    noise_floor: float = 1e-6
    analog: bool = True
    redundancy_group: str | None = None
    valid_min: float = -math.inf
    valid_max: float = math.inf
    low_limit: float | None = None
    high_limit: float | None = None
    max_rate_per_min: float = math.inf
    trend_deadband_per_min: float = 0.0
    forecast_tolerance: float = 1.0
    stability_scale: float = 1.0
    calibration_tolerance: float = 1.0
    kind: FieldKind | None = None
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or "." in self.name:
            raise ConfigError("field.name", f"must be non-empty and contain no '.', got {self.name!r}")
        if self.kind is None:
            object.__setattr__(self, "kind", "analog" if self.analog else "state")
        elif self.kind not in FIELD_KINDS:
            raise ConfigError(
                f"{self.name}.kind", f"expected one of {', '.join(FIELD_KINDS)}, got {self.kind!r}"
            )
        else:
            object.__setattr__(self, "analog", self.kind == "analog")
        if self.name in self.depends_on:
            raise ConfigError(f"{self.name}.depends_on", "a field cannot depend on itself")
        _positive(f"{self.name}.expected_period_s", self.expected_period_s)
        _positive(f"{self.name}.noise_floor", self.noise_floor)
        _positive(f"{self.name}.forecast_tolerance", self.forecast_tolerance)
        _positive(f"{self.name}.stability_scale", self.stability_scale)
        _positive(f"{self.name}.calibration_tolerance", self.calibration_tolerance)
        if self.resolution < 0.0 or not math.isfinite(self.resolution):
            raise ConfigError(f"{self.name}.resolution", f"must be >= 0, got {self.resolution}")
        if not self.valid_min < self.valid_max:
            raise ConfigError(f"{self.name}.valid_min", "must be below valid_max")
        if self.max_rate_per_min <= 0.0 or self.trend_deadband_per_min < 0.0:
            raise ConfigError(f"{self.name}.max_rate_per_min", "rates must be positive")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model type: its fields and, optionally, the simulation kernel shared by all its twins.

    ``bindings`` maps each kernel variable to the twin fields that measure it, e.g.
    ``{"temp": ("temp_1", "temp_2"), "heater": ("heater",)}``; ``params`` are the kernel's nominal
    parameters (the prior that online estimation refines per twin). ``version`` is the declared version of
    the asset model (``drsdtp.models``), empty for models built in code. Relationships between fields are
    their ``depends_on`` lists (checked here: known fields, no cycles); :meth:`dependents` reads them back.
    """

    name: str
    fields: tuple[FieldSpec, ...]
    kernel: str | None = None
    bindings: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    params: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    version: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if not names:
            raise ConfigError(f"model.{self.name}.fields", "a model needs at least one field")
        if len(set(names)) != len(names):
            raise ConfigError(f"model.{self.name}.fields", "field names must be unique")
        for var, bound in self.bindings.items():
            unknown = [b for b in bound if b not in names]
            if unknown or not bound:
                raise ConfigError(f"model.{self.name}.bindings.{var}", f"unknown or no fields: {unknown}")
        if self.bindings and self.kernel is None:
            raise ConfigError(f"model.{self.name}.bindings", "bindings need a kernel")
        for f in self.fields:
            unknown = [d for d in f.depends_on if d not in names]
            if unknown:
                raise ConfigError(f"model.{self.name}.fields.{f.name}.depends_on", f"no field {unknown[0]!r}")
        cycle = _dependency_cycle({f.name: f.depends_on for f in self.fields})
        if cycle:
            raise ConfigError(f"model.{self.name}.fields", f"dependency cycle: {' -> '.join(cycle)}")

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise ConfigError(f"model.{self.name}.fields", f"no field {name!r}")

    def dependents(self, name: str) -> tuple[str, ...]:
        """Fields that declare ``depends_on`` ``name`` (``speed`` -> ``flow``, ``head``, ``power``)."""
        return tuple(f.name for f in self.fields if name in f.depends_on)


def _dependency_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A cycle in ``field -> depends_on`` as a path that ends where it starts, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return []


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Detector thresholds (defaults keep false alarms well under 1% on clean, noisy data)."""

    stale_factor: float = 3.0
    recent: int = 32
    stuck_run: int = 8
    spike_z: float = 7.0
    spike_last: int = 3
    dropout_min_missing: int = 2
    loss_max: float = 0.05
    cusum_k: float = 0.5
    cusum_h: float = 12.0
    cusum_clip: float = 4.0
    drift_fail_sigma: float = 30.0
    noise_alpha: float = 0.02
    quality_threshold: float = 0.5
    degraded_below: float = 0.8
    failed_below: float = 0.3

    def __post_init__(self) -> None:
        if self.recent < 16 or self.stuck_run < 3 or self.stuck_run > self.recent:
            raise ConfigError("health.recent", "need recent >= 16 and 3 <= stuck_run <= recent")
        if not 1 <= self.spike_last <= 4:
            raise ConfigError("health.spike_last", "must be between 1 and 4")
        for key in ("stale_factor", "spike_z", "cusum_h", "cusum_clip", "drift_fail_sigma"):
            _positive(f"health.{key}", getattr(self, key))
        if not 0.0 < self.noise_alpha <= 1.0:
            raise ConfigError("health.noise_alpha", "must be in (0, 1]")
        if not 0.0 <= self.failed_below <= self.quality_threshold <= self.degraded_below <= 1.0:
            raise ConfigError("health.quality_threshold", "need failed_below <= threshold <= degraded_below")


@dataclass(frozen=True, slots=True)
class IntelligenceConfig:
    """Window sizes, forecast horizons and health thresholds for one node."""

    capacity: int = 1000
    short_window: int = 40
    horizons_min: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0)
    interval_z: float = 1.96
    max_time_to_threshold_s: float = 24 * 3600.0
    health: HealthConfig = field(default_factory=HealthConfig)

    def __post_init__(self) -> None:
        if self.capacity < self.health.recent or self.capacity < 16:
            raise ConfigError("intelligence.capacity", "must be >= 16 and >= health.recent")
        if not 3 <= self.short_window <= self.capacity:
            raise ConfigError("intelligence.short_window", "must be between 3 and capacity")
        if not self.horizons_min or any(not (h > 0 and math.isfinite(h)) for h in self.horizons_min):
            raise ConfigError("intelligence.horizons_min", "need positive finite horizons")
        _positive("intelligence.interval_z", self.interval_z)
        _positive("intelligence.max_time_to_threshold_s", self.max_time_to_threshold_s)
