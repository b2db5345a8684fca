"""Simulated pumps, motors and energy meters (see :mod:`drsdtp.sim.assets` for the shared machinery).

Each follows the physics its kernel assumes (``pump.affinity``, ``motor.thermal``, ``meter.energy``), with
per-unit parameters spread around the nominal ones, an operating program that moves it (speed set-points,
load changes), sensor noise and quantisation, and plant change through ``set_param`` (impeller wear, a
bearing going, a meter reset).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Final

import numpy as np

from drsdtp.kernels.meter import METER_DEFAULT_PARAMS
from drsdtp.kernels.motor import MOTOR_DEFAULT_PARAMS
from drsdtp.kernels.pump import PUMP_DEFAULT_PARAMS
from drsdtp.sim.assets import AssetPlant, FloatArray

__all__ = ["ASSET_PLANTS", "MeterPlant", "MotorPlant", "PumpPlant"]

Spread = Callable[[float], FloatArray]


class _Program:
    """A unit's operating point: a new random target every ``every_s`` (about) of plant time, approached at
    ``ramp_per_s`` (drives and loads ramp; a jump would look like a sensor spike to the health checks)."""

    def __init__(
        self, plant: AssetPlant, lo: float, hi: float, every_s: float, ramp_per_s: float, manual: bool = True
    ) -> None:
        self.plant, self.lo, self.hi, self.every_s, self.ramp = plant, lo, hi, every_s, ramp_per_s
        self.manual = manual  # whether set_input by hand stops this program
        rng = plant._program_rng
        self.next_s = plant.t_s + rng.uniform(0.2, 1.0, plant.units) * every_s
        self.target = self.initial()

    def initial(self) -> FloatArray:
        return self.plant._program_rng.uniform(self.lo, self.hi, self.plant.units)

    def move(self, current: FloatArray) -> None:
        """Ramp ``current`` in place toward the targets (units driven by hand keep their value)."""
        plant = self.plant
        rng, t = plant._program_rng, plant.t_s
        draws = rng.uniform(self.lo, self.hi, plant.units)
        gaps = rng.uniform(0.5, 1.5, plant.units) * self.every_s
        due = t >= self.next_s
        self.target = np.where(due, draws, self.target)
        self.next_s = np.where(due, t + gaps, self.next_s)
        free = ~plant._manual if self.manual else np.ones(plant.units, bool)
        step = np.clip(self.target - current, -self.ramp * plant.dt_s, self.ramp * plant.dt_s)
        current += np.where(free, step, 0.0)


class PumpPlant(AssetPlant):
    """Centrifugal pumps on variable-speed drives, each in its own piping system."""

    kind = "pump"
    FIELDS: ClassVar[tuple[str, ...]] = ("speed", "valve", "flow", "head", "power")
    INPUTS: ClassVar[tuple[str, ...]] = ("speed", "valve")
    PARAMS: ClassVar[tuple[str, ...]] = ("wear", "system_flow")

    def _setup(self, spread: Spread) -> None:
        p = PUMP_DEFAULT_PARAMS
        self.rated_speed = p["rated_speed_rpm"]
        qr = p["rated_flow_m3h"]
        self.shutoff_head = spread(p["shutoff_head_m"])
        self.head_drop = spread(p["shutoff_head_m"] - p["rated_head_m"]) / qr**2
        self.shutoff_power = spread(p["shutoff_power_kw"])
        self.power_slope = spread(p["rated_power_kw"] - p["shutoff_power_kw"]) / qr
        self.system_flow = spread(p["system_flow_m3h"])
        self.wear = np.zeros(self.units)  # fraction of the head lost (impeller wear)
        self._program = _Program(
            self, 0.6 * self.rated_speed, self.rated_speed, every_s=900.0, ramp_per_s=1.0
        )
        self.speed = self._program.initial()
        # The downstream valve (the system curve): throttled now and then, slowly.
        self._valve_program = _Program(self, 0.6, 1.0, every_s=3600.0, ramp_per_s=0.0005)
        self.valve = self._valve_program.initial()
        self._flow_noise = np.ones(self.units)
        self.noise_std = np.array([3.0, 0.0, 0.4, 0.12, 0.04])
        self.quantum = np.array([1.0, 0.001, 0.1, 0.01, 0.01])

    def _advance(self) -> None:
        self._program.move(self.speed)
        self._valve_program.move(self.valve)
        # Turbulence: a small, slowly wandering flow disturbance (what the model leaves out).
        self._flow_noise = (
            1.0 + 0.9 * (self._flow_noise - 1.0) + self._noise_rng.normal(0.0, 0.001, self.units)
        )

    def truth_frame(self) -> FloatArray:
        r = self.speed / self.rated_speed
        flow = self.system_flow * self.valve * r * self._flow_noise
        head = self.shutoff_head * (1.0 - self.wear) * r**2 - self.head_drop * flow**2
        power = self.shutoff_power * r**3 + self.power_slope * r**2 * flow
        return np.column_stack([self.speed, self.valve, flow, head, power])

    def _clip(self, measured: FloatArray) -> None:
        np.maximum(measured, 0.0, out=measured)


class MotorPlant(AssetPlant):
    """Induction motors under a changing load, in a room whose temperature follows the day."""

    kind = "motor"
    FIELDS: ClassVar[tuple[str, ...]] = ("current", "ambient_temp", "winding_temp", "vibration")
    INPUTS: ClassVar[tuple[str, ...]] = ("current",)
    PARAMS: ClassVar[tuple[str, ...]] = ("bearing_wear", "tau", "rise")

    def _setup(self, spread: Spread) -> None:
        p = MOTOR_DEFAULT_PARAMS
        self.rated_current = p["rated_current_a"]
        self.rise = spread(p["rise_rated_c"])
        self.tau = spread(p["tau_s"])
        self.vib_base = spread(p["vib_base_mm_s"])
        self.vib_load = spread(p["vib_load_mm_s"])
        self.bearing_wear = np.zeros(self.units)  # mm/s added to the vibration
        self._program = _Program(
            self, 0.4 * self.rated_current, 1.05 * self.rated_current, every_s=1200.0, ramp_per_s=0.01
        )
        self.current = self._program.initial()
        ambient = self.daily(25.0, 3.0)
        self.winding = ambient + self.rise * (self.current / self.rated_current) ** 2
        self.noise_std = np.array([0.15, 0.1, 0.15, 0.04])
        self.quantum = np.array([0.01, 0.1, 0.1, 0.01])

    def _advance(self) -> None:
        self._program.move(self.current)
        ambient = self.daily(25.0, 3.0, self.t_s + 0.5 * self.dt_s)
        equilibrium = ambient + self.rise * (self.current / self.rated_current) ** 2
        self.winding = equilibrium + (self.winding - equilibrium) * np.exp(-self.dt_s / self.tau)
        self.winding += self._noise_rng.normal(0.0, 0.01 * math.sqrt(self.dt_s / 10.0), self.units)

    def truth_frame(self) -> FloatArray:
        ambient = np.full(self.units, self.daily(25.0, 3.0))
        vibration = self.vib_base + self.vib_load * self.current / self.rated_current + self.bearing_wear
        return np.column_stack([self.current, ambient, self.winding, vibration])

    def _clip(self, measured: FloatArray) -> None:
        measured[:, 0] = np.maximum(measured[:, 0], 0.0)
        measured[:, 3] = np.maximum(measured[:, 3], 0.0)


class MeterPlant(AssetPlant):
    """Electricity meters on loads that follow the day: a power reading and an energy counter (kWh)."""

    kind = "meter"
    FIELDS: ClassVar[tuple[str, ...]] = ("power", "energy")
    INPUTS: ClassVar[tuple[str, ...]] = ("power",)
    PARAMS: ClassVar[tuple[str, ...]] = ("energy",)  # set the counter: 0 is a reset, near rollover a wrap

    ROLLOVER_KWH: Final = METER_DEFAULT_PARAMS["rollover_kwh"]

    def _setup(self, spread: Spread) -> None:
        self.base_load = spread(40.0)
        self._program = _Program(self, -5.0, 5.0, every_s=600.0, ramp_per_s=0.01, manual=False)
        self.step_load = self._program.initial()
        self.power = self._load()
        self.energy = self._program_rng.uniform(1e4, 5e5, self.units)
        self.noise_std = np.array([0.2, 0.0])
        self.quantum = np.array([0.01, METER_DEFAULT_PARAMS["energy_resolution_kwh"]])

    def _load(self) -> FloatArray:
        return np.maximum(self.base_load + self.daily(0.0, 10.0) + self.step_load, 0.0)

    def _advance(self) -> None:
        self._program.move(self.step_load)
        manual = self._manual
        self.power = np.where(manual, self.power, self._load())
        self.energy = np.mod(self.energy + self.power * self.dt_s / 3600.0, self.ROLLOVER_KWH)

    def truth_frame(self) -> FloatArray:
        return np.column_stack([self.power, self.energy])

    def _clip(self, measured: FloatArray) -> None:
        measured[:, 0] = np.maximum(measured[:, 0], 0.0)


ASSET_PLANTS: Final[dict[str, type[AssetPlant]]] = {
    PumpPlant.kind: PumpPlant,
    MotorPlant.kind: MotorPlant,
    MeterPlant.kind: MeterPlant,
}
