"""A plant simulated faster than real time: with its time scale declared, the twin sees the real plant."""

from __future__ import annotations

import numpy as np
import pytest

from drsdtp.intelligence import TwinIntelligence
from drsdtp.intelligence.results import DivergenceKind
from drsdtp.kernels import default_registry
from drsdtp.models import library_models
from drsdtp.node.insight import pass_interval_s
from drsdtp.sim import FIELDS, Plant

SPEEDUP = 10.0  # `drsdtp demo` runs its plants ten times faster than real time
WALL_START = 1.8e9
CLEAN_SEEDS = (0, 4, 5)  # plants whose rooms raise nothing for two hours in plant time (one pass a step)


def divergence(seed: int, *, time_scale: float, steps: int = 720) -> dict[tuple[str, str], int]:
    """First step of each (room, kind) divergence alert of a fault-free plant run ``SPEEDUP`` x faster than
    real time, observed the node's way: readings stamped in wall time, times scaled by ``time_scale``; one
    pass per plant step (the validated cadence of ``drsdtp.sim.harness``)."""
    room = next(m for m in library_models(default_registry(plugins=False)) if m.name == "room")
    plant = Plant(rooms=3, seed=seed)
    engine = TwinIntelligence()
    engine.add_model(room.spec)
    for twin in plant.twins:
        engine.add_twin(twin, "room")
    rows = engine.rows([(t, f) for t in plant.twins for f in FIELDS]).reshape(plant.rooms, len(FIELDS))
    first: dict[tuple[str, str], int] = {}
    for k in range(steps):
        frame = plant.step_frame()
        ok = np.isfinite(frame.values)
        wall = WALL_START + frame.sensor_t_s / SPEEDUP
        engine.ingest(rows[ok], wall[ok] * time_scale, frame.values[ok], frame.seq[ok])
        engine.evaluate((WALL_START + frame.t_s / SPEEDUP) * time_scale)
        for a in engine.divergence():
            first.setdefault((a.twin, a.kind.name), k)
    return first


@pytest.mark.parametrize("seed", CLEAN_SEEDS)
def test_a_ten_times_faster_plant_raises_no_false_model_drift_in_plant_time(seed: int) -> None:
    # Wall time taken for model time (the old behaviour): the rooms seem to heat and cool ten times too
    # fast, and model drift shows within two minutes of wall time.
    wrong = divergence(seed, time_scale=1.0, steps=120)
    assert any(kind == DivergenceKind.MODEL_DRIFT.name for _, kind in wrong), wrong
    assert divergence(seed, time_scale=SPEEDUP) == {}  # two plant hours, not one alert


def test_passes_keep_their_plant_time_cadence_at_any_speed() -> None:
    assert pass_interval_s(1.0) == 2.0
    assert pass_interval_s(4.0) * 4.0 == pytest.approx(2.0)
    assert pass_interval_s(SPEEDUP) * SPEEDUP == pytest.approx(2.5)  # bounded: at most 4 passes per wall s
