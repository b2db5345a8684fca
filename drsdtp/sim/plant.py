"""A small deterministic physics plant: N rooms with heaters, fans and redundant sensors.

Pure and deterministic: no I/O, no clocks, no asyncio; every random draw comes from numpy Generators seeded
from ``seed``. The state lives in numpy arrays (one entry per room), so thousands of rooms step in one
vectorised call (:meth:`Plant.step_frame`); :meth:`Plant.step` wraps it into :class:`SimReading` objects.

Physics, per room (exact first-order discretisation, stable for any ``dt_s``)::

    dT/dt = -(loss + fan_loss * fan) * (T - T_out) + heater_gain * heater
    dH/dt = -hum_rate * (H - hum_ambient) - fan_hum_rate * fan * (H - hum_dry)

``T_out`` follows a daily sine (minimum at 03:00, maximum at 15:00 plant time; ``t = 0`` is midnight).
``heater`` and ``fan`` are power fractions in [0, 1]. A room with a finite ``setpoint`` runs a bang-bang
thermostat with hysteresis on its true temperature; setting ``heater`` by hand switches the thermostat off.
Room parameters are spread around the nominal ones (``param_spread``) so per-room estimation is meaningful;
:meth:`Plant.set_param` changes them mid-run to emulate plant change (model drift, not a sensor fault).

Fields reported by every room (:data:`FIELDS`): ``temp_1`` and ``temp_2`` (two redundant sensors of the same
air temperature, so a drifting sensor can be told apart from a wrong model), ``humidity`` (%RH),
``outdoor_temp`` (the room controller's reading of the outdoor sensor) and the actuator feedback ``heater``
and ``fan``. Sensor readings carry Gaussian noise and are quantised. Every sensor samples once per step and
its ``seq`` is the step index, so lost readings show up as sequence gaps. Faults: :mod:`drsdtp.sim.faults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.sim.faults import Fault, FaultTable

__all__ = [
    "FIELDS",
    "INPUTS",
    "PARAMS",
    "Fault",
    "Plant",
    "PlantParams",
    "PlantRecording",
    "SimReading",
    "StepFrame",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FIELDS: Final[tuple[str, ...]] = ("temp_1", "temp_2", "humidity", "outdoor_temp", "heater", "fan")
INPUTS: Final[tuple[str, ...]] = ("heater", "fan", "setpoint")
PARAMS: Final[tuple[str, ...]] = ("loss", "fan_loss", "heater_gain")

_COL: Final[dict[str, int]] = {name: i for i, name in enumerate(FIELDS)}
_DAY_S: Final[float] = 86_400.0
_HOUR_S: Final[float] = 3_600.0


@dataclass(frozen=True, slots=True)
class SimReading:
    """One sensor reading as an adapter would receive it (``value is None``: dropout, nothing was sent)."""

    twin: str
    field: str
    value: float | None
    t_s: float
    seq: int


@dataclass(frozen=True, slots=True)
class PlantParams:
    """Nominal plant parameters (per-room values are spread around these)."""

    loss_per_s: float = 1.0 / (3.0 * _HOUR_S)
    fan_loss_per_s: float = 2.0 / (3.0 * _HOUR_S)
    heater_gain_c_per_s: float = 25.0 / (3.0 * _HOUR_S)
    outdoor_mean_c: float = 8.0
    outdoor_amplitude_c: float = 4.0
    humidity_rate_per_s: float = 1.0 / (2.0 * _HOUR_S)
    humidity_ambient_pct: float = 60.0
    fan_humidity_rate_per_s: float = 1.0 / _HOUR_S
    humidity_dry_pct: float = 35.0
    initial_temp_c: float = 20.0
    initial_humidity_pct: float = 50.0
    thermostat_hysteresis_c: float = 0.5
    temp_noise_c: float = 0.05
    humidity_noise_pct: float = 0.3
    outdoor_noise_c: float = 0.1
    temp_process_noise_c: float = 0.002
    humidity_process_noise_pct: float = 0.02
    temp_quantum_c: float = 0.01
    humidity_quantum_pct: float = 0.1


@dataclass(frozen=True, slots=True)
class StepFrame:
    """One step for all rooms: arrays of shape ``(rooms, len(FIELDS))``; ``values`` is NaN where dropped."""

    step: int
    t_s: float
    values: FloatArray
    sensor_t_s: FloatArray
    seq: IntArray


@dataclass(frozen=True, slots=True)
class PlantRecording:
    """Stacked frames from :meth:`Plant.record`: arrays of shape ``(steps, rooms, len(FIELDS))``."""

    t_s: FloatArray
    values: FloatArray
    sensor_t_s: FloatArray
    seq: IntArray
    truth: FloatArray


class Plant:
    """N rooms of first-order thermal and humidity dynamics with injectable sensor faults."""

    def __init__(
        self,
        rooms: int = 3,
        seed: int = 0,
        dt_s: float = 10.0,
        *,
        start_s: float = 0.0,
        params: PlantParams | None = None,
        param_spread: float = 0.15,
        setpoint_c: float | None = None,
    ) -> None:
        if rooms < 1:
            raise InvalidValueError(f"rooms must be >= 1, got {rooms}")
        if not (dt_s > 0.0 and math.isfinite(dt_s)):
            raise InvalidValueError(f"dt_s must be a positive finite number, got {dt_s}")
        if not 0.0 <= param_spread < 1.0:
            raise InvalidValueError(f"param_spread must be in [0, 1), got {param_spread}")
        self.params = params if params is not None else PlantParams()
        self.dt_s = float(dt_s)
        self.twins: tuple[str, ...] = tuple(f"room-{i + 1}" for i in range(rooms))
        self._row = {name: i for i, name in enumerate(self.twins)}
        # Separate streams: injecting a fault must not change the readings of any other sensor.
        setup_seq, noise_seq, fault_seq = np.random.SeedSequence(seed).spawn(3)
        setup_rng = np.random.default_rng(setup_seq)
        self._noise_rng = np.random.default_rng(noise_seq)
        self._fault_rng = np.random.default_rng(fault_seq)

        p = self.params

        def spread(nominal: float) -> FloatArray:
            return nominal * (1.0 + param_spread * setup_rng.uniform(-1.0, 1.0, rooms))

        self.loss: FloatArray = spread(p.loss_per_s)
        self.fan_loss: FloatArray = spread(p.fan_loss_per_s)
        self.heater_gain: FloatArray = spread(p.heater_gain_c_per_s)
        self.temp: FloatArray = np.full(rooms, p.initial_temp_c)
        self.humidity: FloatArray = np.full(rooms, p.initial_humidity_pct)
        self.heater: FloatArray = np.zeros(rooms)
        self.fan: FloatArray = np.zeros(rooms)
        self.setpoint: FloatArray = np.full(rooms, math.nan if setpoint_c is None else setpoint_c)
        self.t_s = float(start_s)
        self.steps_done = 0
        self._last_values: FloatArray = np.full((rooms, len(FIELDS)), math.nan)
        self._last_t_s: FloatArray = np.full((rooms, len(FIELDS)), math.nan)
        self._last_seq: IntArray = np.full((rooms, len(FIELDS)), -1, np.int64)
        self._faults = FaultTable(_COL)
        self._noise_std = np.array(
            [p.temp_noise_c, p.temp_noise_c, p.humidity_noise_pct, p.outdoor_noise_c, 0.0, 0.0]
        )
        self._quantum = np.array([p.temp_quantum_c, p.temp_quantum_c, p.humidity_quantum_pct, 0.0, 0.0, 0.0])

    # -- inputs, parameters, faults -------------------------------------------------------------------------

    @property
    def rooms(self) -> int:
        return len(self.twins)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields every room reports (:data:`FIELDS`), as every simulated asset names its own."""
        return FIELDS

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults.faults)

    def row(self, twin: str) -> int:
        """Index of ``twin`` in the state arrays."""
        try:
            return self._row[twin]
        except KeyError:
            raise UnknownTwinError(twin) from None

    def set_input(self, twin: str, name: str, value: float) -> None:
        """Drive ``heater`` or ``fan`` (fraction 0..1) or the thermostat ``setpoint`` (C; NaN: off).

        Setting ``heater`` by hand switches the room's thermostat off.
        """
        i = self.row(twin)
        value = float(value)
        if name in ("heater", "fan"):
            if not 0.0 <= value <= 1.0:
                raise InvalidValueError(f"{name} must be in [0, 1], got {value}")
            if name == "heater":
                self.heater[i] = value
                self.setpoint[i] = math.nan
            else:
                self.fan[i] = value
        elif name == "setpoint":
            if math.isinf(value):
                raise InvalidValueError(f"setpoint must be finite or NaN, got {value}")
            self.setpoint[i] = value
        else:
            raise InvalidValueError(f"unknown input {name!r}; expected one of {INPUTS}")

    def set_param(self, twin: str, name: str, value: float) -> None:
        """Change a room's physics (``loss``, ``fan_loss``: 1/s; ``heater_gain``: C/s): plant change."""
        i = self.row(twin)
        if not (value >= 0.0 and math.isfinite(value)):
            raise InvalidValueError(f"{name} must be finite and >= 0, got {value}")
        if name == "loss":
            self.loss[i] = value
        elif name == "fan_loss":
            self.fan_loss[i] = value
        elif name == "heater_gain":
            self.heater_gain[i] = value
        else:
            raise InvalidValueError(f"unknown parameter {name!r}; expected one of {PARAMS}")

    def inject(self, fault: Fault) -> None:
        """Schedule a sensor fault (see :mod:`drsdtp.sim.faults` for what each kind looks like)."""
        row = self.row(fault.twin)
        if fault.field not in _COL:
            raise UnknownTwinError(f"{fault.twin}/{fault.field}")
        self._faults.add(fault, row)

    # -- ground truth ---------------------------------------------------------------------------------------

    def outdoor_temp_at(self, t_s: float | FloatArray) -> float | FloatArray:
        p = self.params
        phase = 2.0 * np.pi * (np.asarray(t_s) / _DAY_S - 0.375)  # peak at 15:00, minimum at 03:00
        out = p.outdoor_mean_c + p.outdoor_amplitude_c * np.sin(phase)
        return float(out) if np.ndim(out) == 0 else out

    def truth_frame(self) -> FloatArray:
        """True values of every field now, shape ``(rooms, len(FIELDS))``."""
        t_out = float(self.outdoor_temp_at(self.t_s))
        return np.column_stack(
            [self.temp, self.temp, self.humidity, np.full(self.rooms, t_out), self.heater, self.fan]
        )

    def truth(self, twin: str, field: str) -> float:
        """The true value of ``field`` of ``twin`` now (for validation)."""
        if field not in _COL:
            raise UnknownTwinError(f"{twin}/{field}")
        return float(self.truth_frame()[self.row(twin), _COL[field]])

    # -- stepping -------------------------------------------------------------------------------------------

    def _advance_physics(self) -> None:
        p, dt = self.params, self.dt_s
        thermostat = np.isfinite(self.setpoint)
        half = 0.5 * p.thermostat_hysteresis_c
        self.heater = np.where(thermostat & (self.temp < self.setpoint - half), 1.0, self.heater)
        self.heater = np.where(thermostat & (self.temp > self.setpoint + half), 0.0, self.heater)

        t_out = float(self.outdoor_temp_at(self.t_s + 0.5 * dt))
        rate = self.loss + self.fan_loss * self.fan
        t_eq = t_out + self.heater_gain * self.heater / rate
        self.temp = t_eq + (self.temp - t_eq) * np.exp(-rate * dt)

        hum_rate = p.humidity_rate_per_s + p.fan_humidity_rate_per_s * self.fan
        h_eq = (
            p.humidity_rate_per_s * p.humidity_ambient_pct
            + p.fan_humidity_rate_per_s * self.fan * p.humidity_dry_pct
        ) / hum_rate
        self.humidity = h_eq + (self.humidity - h_eq) * np.exp(-hum_rate * dt)

        scale = math.sqrt(dt / 10.0)
        self.temp = self.temp + self._noise_rng.normal(0.0, p.temp_process_noise_c * scale, self.rooms)
        self.humidity = self.humidity + self._noise_rng.normal(
            0.0, p.humidity_process_noise_pct * scale, self.rooms
        )
        self.humidity = np.clip(self.humidity, 0.0, 100.0)
        self.t_s += dt

    def _measure(self) -> FloatArray:
        truth = self.truth_frame()
        noisy = truth + self._noise_rng.normal(0.0, 1.0, truth.shape) * self._noise_std
        q = self._quantum
        measured: FloatArray = np.where(q > 0, np.round(noisy / np.where(q > 0, q, 1.0)) * q, noisy)
        measured[:, _COL["humidity"]] = np.clip(measured[:, _COL["humidity"]], 0.0, 100.0)
        return measured

    def _apply_faults(self, k: int, values: FloatArray, sensor_t: FloatArray, seq: IntArray) -> None:
        self._faults.apply(
            self._fault_rng,
            k,
            self.dt_s,
            values,
            sensor_t,
            seq,
            self._last_values,
            self._last_t_s,
            self._last_seq,
        )

    def step_frame(self) -> StepFrame:
        """Advance one ``dt_s`` for all rooms and return that step's readings as arrays (vectorised path)."""
        k = self.steps_done
        self._advance_physics()
        values = self._measure()
        sensor_t = np.full(values.shape, self.t_s)
        seq = np.full(values.shape, k, np.int64)
        self._apply_faults(k, values, sensor_t, seq)
        sent = ~np.isnan(values)
        self._last_values = np.where(sent, values, self._last_values)
        self._last_t_s = np.where(sent, sensor_t, self._last_t_s)
        self._last_seq = np.where(sent, seq, self._last_seq)
        self.steps_done = k + 1
        return StepFrame(step=k, t_s=self.t_s, values=values, sensor_t_s=sensor_t, seq=seq)

    def step(self) -> list[SimReading]:
        """Advance one ``dt_s`` and return that step's readings (``value=None`` for a dropped reading)."""
        frame = self.step_frame()
        out: list[SimReading] = []
        for i, twin in enumerate(self.twins):
            for j, name in enumerate(FIELDS):
                v = float(frame.values[i, j])
                out.append(
                    SimReading(
                        twin=twin,
                        field=name,
                        value=None if math.isnan(v) else v,
                        t_s=float(frame.sensor_t_s[i, j]),
                        seq=int(frame.seq[i, j]),
                    )
                )
        return out

    def record(self, steps: int) -> PlantRecording:
        """Run ``steps`` steps and stack the frames, with the ground truth after each step."""
        shape = (steps, self.rooms, len(FIELDS))
        t_s = np.empty(steps)
        values, sensor_t, truth = np.empty(shape), np.empty(shape), np.empty(shape)
        seq = np.empty(shape, np.int64)
        for s in range(steps):
            frame = self.step_frame()
            t_s[s] = frame.t_s
            values[s], sensor_t[s], seq[s] = frame.values, frame.sensor_t_s, frame.seq
            truth[s] = self.truth_frame()
        return PlantRecording(t_s=t_s, values=values, sensor_t_s=sensor_t, seq=seq, truth=truth)
