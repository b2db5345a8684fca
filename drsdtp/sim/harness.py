"""Harnesses that drive the intelligence engine: a generic model fed with synthetic arrays, and an engine
following the simulated plant. Used by the tests and the benchmark scripts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drsdtp.intelligence import FieldSpec, IntelligenceConfig, ModelSpec, TwinIntelligence
from drsdtp.sim.plant import FIELDS, Plant
from drsdtp.sim.room_spec import room_model_spec

__all__ = ["PERIOD", "Feed", "PlantRun", "excite", "generic_spec", "make_feed", "make_plant_run"]

PERIOD = 10.0


def generic_spec(fields: int = 4, *, grouped: bool = False, analog: bool = True) -> ModelSpec:
    specs = tuple(
        FieldSpec(
            f"s{i}",
            expected_period_s=PERIOD,
            resolution=0.01,
            redundancy_group="g" if grouped else None,
            valid_min=-100.0,
            valid_max=100.0,
            high_limit=30.0,
            low_limit=0.0,
            analog=analog,
        )
        for i in range(fields)
    )
    return ModelSpec("generic", specs)


@dataclass
class Feed:
    """An engine with ``twins`` twins of a generic model, fed one synthetic step at a time."""

    engine: TwinIntelligence
    rows: npt.NDArray[np.intp]
    rng: np.random.Generator
    step: int = 0

    def push(self, values: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_] | None = None) -> None:
        t = self.step * PERIOD
        keep = np.ones(self.rows.size, bool) if mask is None else mask
        self.engine.ingest(
            self.rows[keep], np.full(keep.sum(), t), values[keep], np.full(keep.sum(), self.step)
        )
        self.engine.evaluate(t)
        self.step += 1

    def run(self, steps: int, signal: Callable[[int], npt.NDArray[np.float64]], noise: float = 0.05) -> None:
        for _ in range(steps):
            self.push(signal(self.step) + self.rng.normal(0.0, noise, self.rows.size))


def make_feed(twins: int = 2, fields: int = 4, *, grouped: bool = False, seed: int = 0) -> Feed:
    engine = TwinIntelligence(IntelligenceConfig(capacity=400))
    engine.add_model(generic_spec(fields, grouped=grouped))
    for t in range(twins):
        engine.add_twin(f"t{t}", "generic")
    return Feed(engine, np.arange(twins * fields), np.random.default_rng(seed))


@dataclass
class PlantRun:
    """An engine following a simulated plant, one evaluation per plant step."""

    plant: Plant
    engine: TwinIntelligence
    rows: npt.NDArray[np.intp]

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            frame = self.plant.step_frame()
            ok = np.isfinite(frame.values)
            self.engine.ingest(self.rows[ok], frame.sensor_t_s[ok], frame.values[ok], frame.seq[ok])
            self.engine.evaluate(frame.t_s)


def make_plant_run(rooms: int = 3, seed: int = 0) -> PlantRun:
    plant = Plant(rooms=rooms, seed=seed)
    engine = TwinIntelligence()
    engine.add_model(room_model_spec())
    for twin in plant.twins:
        engine.add_twin(twin, "room")
    rows = engine.rows([(t, f) for t in plant.twins for f in FIELDS]).reshape(rooms, len(FIELDS))
    return PlantRun(plant, engine, rows)


def excite(run: PlantRun, steps: int, seed: int = 1, every: int = 240) -> None:
    """Advance the plant with heater and fan commands changing every ``every`` steps (to learn parameters)."""
    rng = np.random.default_rng(seed)
    for done in range(0, steps, every):
        run.plant.heater[:] = rng.choice([0.0, 0.4, 1.0], run.plant.rooms)
        run.plant.fan[:] = rng.choice([0.0, 1.0], run.plant.rooms)
        run.advance(min(every, steps - done))
