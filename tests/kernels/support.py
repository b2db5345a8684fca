"""An engine following a simulated machine plant (pumps, motors, meters), as the node would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from drsdtp.intelligence import FieldSpec, ModelSpec, TwinIntelligence
from drsdtp.intelligence.results import DivergenceAlert
from drsdtp.sim.assets import AssetPlant
from drsdtp.sim.machines import MeterPlant, MotorPlant, PumpPlant


def _bound(*names: str) -> MappingProxyType[str, tuple[str, ...]]:
    return MappingProxyType({n: (n,) for n in names})


def pump_spec() -> ModelSpec:
    fields = (
        FieldSpec("speed", unit=" rpm", resolution=1.0, valid_min=0.0, valid_max=4000.0),
        FieldSpec("valve", kind="actuator", valid_min=0.0, valid_max=1.0),
        FieldSpec(
            "flow", unit=" m3/h", resolution=0.1, valid_min=0.0, valid_max=300.0, depends_on=("speed",)
        ),
        FieldSpec("head", unit=" m", resolution=0.01, valid_min=0.0, valid_max=100.0, depends_on=("flow",)),
        FieldSpec("power", unit=" kW", resolution=0.01, valid_min=0.0, valid_max=50.0, depends_on=("flow",)),
    )
    return ModelSpec("pump", fields, "pump.affinity", _bound("speed", "valve", "flow", "head", "power"))


def motor_spec() -> ModelSpec:
    fields = (
        FieldSpec("current", unit=" A", resolution=0.01, valid_min=0.0, valid_max=100.0),
        FieldSpec("ambient_temp", unit=" C", resolution=0.1, valid_min=-40.0, valid_max=80.0),
        FieldSpec("winding_temp", unit=" C", resolution=0.1, valid_min=-40.0, valid_max=250.0),
        FieldSpec("vibration", unit=" mm/s", resolution=0.01, valid_min=0.0, valid_max=50.0),
    )
    return ModelSpec(
        "motor", fields, "motor.thermal", _bound("current", "ambient_temp", "winding_temp", "vibration")
    )


def meter_spec() -> ModelSpec:
    fields = (
        FieldSpec("power", unit=" kW", resolution=0.01, valid_min=0.0, valid_max=1000.0),
        FieldSpec("energy", unit=" kWh", kind="counter", resolution=0.01, valid_min=0.0, valid_max=1e6),
    )
    return ModelSpec("meter", fields, "meter.energy", _bound("power", "energy"))


SPECS: dict[str, tuple[type[AssetPlant], Callable[[], ModelSpec]]] = {
    "pump": (PumpPlant, pump_spec),
    "motor": (MotorPlant, motor_spec),
    "meter": (MeterPlant, meter_spec),
}


@dataclass
class MachineRun:
    plant: AssetPlant
    engine: TwinIntelligence
    rows: npt.NDArray[np.intp]
    first_alert: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def advance(self, steps: int, *, every: int = 2, at: dict[int, Callable[[], None]] | None = None) -> None:
        """Step the plant, one evaluation every ``every`` steps; ``at[k]`` runs before plant step ``k``."""
        for _ in range(steps):
            k = self.plant.steps_done
            if at and k in at:
                at[k]()
            frame = self.plant.step_frame()
            ok = np.isfinite(frame.values)
            self.engine.ingest(self.rows[ok], frame.sensor_t_s[ok], frame.values[ok], frame.seq[ok])
            if k % every == 0:
                self.engine.evaluate(frame.t_s)
                for a in self.engine.divergence():
                    self.first_alert.setdefault((a.twin, str(a.kind), a.variable), frame.t_s)

    def alerts(self, twin: str) -> tuple[DivergenceAlert, ...]:
        return self.engine.divergence(twin)


def machine_run(kind: str, units: int = 3, seed: int = 1) -> MachineRun:
    plant_type, spec = SPECS[kind]
    plant = plant_type(units=units, seed=seed)
    engine = TwinIntelligence()
    engine.add_model(spec())
    for twin in plant.twins:
        engine.add_twin(twin, kind)
    rows = engine.rows([(t, f) for t in plant.twins for f in plant.fields]).reshape(units, len(plant.fields))
    return MachineRun(plant, engine, rows)
