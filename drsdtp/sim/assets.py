"""Simulated industrial assets beside the rooms: the shared machinery of a plant of N identical units.

A subclass declares its fields, sensor noise and quantum, and implements the physics (:meth:`_advance`, one
``dt_s`` for all units at once, vectorised) and the true value of every field (:meth:`truth_frame`). This base
adds what every simulated sensor network has: Gaussian noise, quantisation, injected sensor faults
(:mod:`drsdtp.sim.faults`, the same kinds as the rooms'), per-sensor sequence numbers, and the same
``step_frame`` / ``step`` / ``record`` interface as :class:`~drsdtp.sim.plant.Plant`, so the simulated
adapter and the intelligence harnesses drive any asset alike.

Operating programs (speed set-points, load changes) come from their own random stream, so injecting a fault
never changes what the plant does, only what its sensors report. Plant change (wear) is
:meth:`AssetPlant.set_param`: model drift, not a sensor fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt

from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.sim.faults import Fault, FaultTable
from drsdtp.sim.plant import PlantRecording, SimReading, StepFrame

__all__ = ["AssetPlant"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_DAY_S: Final[float] = 86_400.0


class AssetPlant:
    """N units of one asset type. Subclasses set ``kind``, ``FIELDS``, ``INPUTS``, ``PARAMS``."""

    kind: ClassVar[str] = "asset"
    FIELDS: ClassVar[tuple[str, ...]] = ()
    INPUTS: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        units: int = 3,
        seed: int = 0,
        dt_s: float = 10.0,
        *,
        start_s: float = 0.0,
        param_spread: float = 0.05,
    ) -> None:
        if units < 1:
            raise InvalidValueError(f"units must be >= 1, got {units}")
        if not (dt_s > 0.0 and math.isfinite(dt_s)):
            raise InvalidValueError(f"dt_s must be a positive finite number, got {dt_s}")
        if not 0.0 <= param_spread < 1.0:
            raise InvalidValueError(f"param_spread must be in [0, 1), got {param_spread}")
        self.dt_s = float(dt_s)
        self.twins: tuple[str, ...] = tuple(f"{self.kind}-{i + 1}" for i in range(units))
        self._row = {name: i for i, name in enumerate(self.twins)}
        self._col = {name: i for i, name in enumerate(self.FIELDS)}
        # Separate streams: a fault or a program change must not change any other draw.
        setup_seq, noise_seq, fault_seq, program_seq = np.random.SeedSequence(seed).spawn(4)
        self._noise_rng = np.random.default_rng(noise_seq)
        self._fault_rng = np.random.default_rng(fault_seq)
        self._program_rng = np.random.default_rng(program_seq)
        setup_rng = np.random.default_rng(setup_seq)
        self.param_spread = param_spread

        def spread(nominal: float) -> FloatArray:
            return nominal * (1.0 + param_spread * setup_rng.uniform(-1.0, 1.0, units))

        self.t_s = float(start_s)
        self.steps_done = 0
        shape = (units, len(self.FIELDS))
        self._last_values: FloatArray = np.full(shape, math.nan)
        self._last_t_s: FloatArray = np.full(shape, math.nan)
        self._last_seq: IntArray = np.full(shape, -1, np.int64)
        self._faults = FaultTable(self._col)
        self.noise_std: FloatArray = np.zeros(len(self.FIELDS))
        self.quantum: FloatArray = np.zeros(len(self.FIELDS))
        self._manual: npt.NDArray[np.bool_] = np.zeros(units, bool)  # inputs driven by hand, not the program
        self._setup(spread)

    # -- for subclasses -------------------------------------------------------------------------------------

    def _setup(self, spread: Callable[[float], FloatArray]) -> None:
        """Per-unit parameters (``spread(nominal)`` draws one per unit), noise and quantum."""
        raise NotImplementedError

    def _advance(self) -> None:
        """Step the physics by ``dt_s`` (``self.t_s`` is the start of the step)."""
        raise NotImplementedError

    def truth_frame(self) -> FloatArray:
        """True values of every field now, shape ``(units, len(FIELDS))``."""
        raise NotImplementedError

    def _clip(self, measured: FloatArray) -> None:
        """Bounds a real sensor cannot report past (a flow meter shows no negative flow)."""

    # -- the shared interface -------------------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        return self.FIELDS

    @property
    def units(self) -> int:
        return len(self.twins)

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults.faults)

    def row(self, twin: str) -> int:
        try:
            return self._row[twin]
        except KeyError:
            raise UnknownTwinError(twin) from None

    def inject(self, fault: Fault) -> None:
        """Schedule a sensor fault (see :mod:`drsdtp.sim.faults`)."""
        row = self.row(fault.twin)
        if fault.field not in self._col:
            raise UnknownTwinError(f"{fault.twin}/{fault.field}")
        self._faults.add(fault, row)

    def truth(self, twin: str, field: str) -> float:
        if field not in self._col:
            raise UnknownTwinError(f"{twin}/{field}")
        return float(self.truth_frame()[self.row(twin), self._col[field]])

    def _set_array(self, names: tuple[str, ...], twin: str, name: str, value: float, what: str) -> None:
        if name not in names:
            raise InvalidValueError(f"unknown {what} {name!r}; expected one of {names}")
        if not math.isfinite(value):
            raise InvalidValueError(f"{name} must be finite, got {value}")
        array: FloatArray = getattr(self, name)
        array[self.row(twin)] = float(value)

    def set_input(self, twin: str, name: str, value: float) -> None:
        """Drive one of :attr:`INPUTS` by hand (the unit's operating program leaves it alone afterwards)."""
        self._set_array(self.INPUTS, twin, name, value, "input")
        self._manual[self.row(twin)] = True

    def set_param(self, twin: str, name: str, value: float) -> None:
        """Change one of :attr:`PARAMS` of a unit mid-run: plant change (wear), not a sensor fault."""
        self._set_array(self.PARAMS, twin, name, value, "parameter")

    def daily(self, mean: float, amplitude: float, t_s: float | None = None) -> float:
        """A daily sine around ``mean`` (minimum at 03:00, maximum at 15:00 plant time)."""
        t = self.t_s if t_s is None else t_s
        return mean + amplitude * math.sin(2.0 * math.pi * (t / _DAY_S - 0.375))

    def _measure(self) -> FloatArray:
        truth = self.truth_frame()
        noisy = truth + self._noise_rng.normal(0.0, 1.0, truth.shape) * self.noise_std
        q = self.quantum
        measured: FloatArray = np.where(q > 0, np.round(noisy / np.where(q > 0, q, 1.0)) * q, noisy)
        self._clip(measured)
        return measured

    def step_frame(self) -> StepFrame:
        """Advance one ``dt_s`` for all units and return that step's readings (NaN where dropped)."""
        k = self.steps_done
        self._advance()
        self.t_s += self.dt_s
        values = self._measure()
        sensor_t = np.full(values.shape, self.t_s)
        seq = np.full(values.shape, k, np.int64)
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
        sent = ~np.isnan(values)
        self._last_values = np.where(sent, values, self._last_values)
        self._last_t_s = np.where(sent, sensor_t, self._last_t_s)
        self._last_seq = np.where(sent, seq, self._last_seq)
        self.steps_done = k + 1
        return StepFrame(step=k, t_s=self.t_s, values=values, sensor_t_s=sensor_t, seq=seq)

    def step(self) -> list[SimReading]:
        frame = self.step_frame()
        return [
            SimReading(
                twin=twin,
                field=name,
                value=None if math.isnan(v := float(frame.values[i, j])) else v,
                t_s=float(frame.sensor_t_s[i, j]),
                seq=int(frame.seq[i, j]),
            )
            for i, twin in enumerate(self.twins)
            for j, name in enumerate(self.FIELDS)
        ]

    def record(self, steps: int) -> PlantRecording:
        shape = (steps, self.units, len(self.FIELDS))
        t_s = np.empty(steps)
        values, sensor_t, truth = np.empty(shape), np.empty(shape), np.empty(shape)
        seq = np.empty(shape, np.int64)
        for s in range(steps):
            frame = self.step_frame()
            t_s[s] = frame.t_s
            values[s], sensor_t[s], seq[s] = frame.values, frame.sensor_t_s, frame.seq
            truth[s] = self.truth_frame()
        return PlantRecording(t_s=t_s, values=values, sensor_t_s=sensor_t, seq=seq, truth=truth)
