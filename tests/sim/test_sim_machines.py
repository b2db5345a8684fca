"""The simulated pumps, motors and meters: physics, programs, faults and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.sim import Fault
from drsdtp.sim.machines import ASSET_PLANTS, MeterPlant, MotorPlant, PumpPlant


@pytest.mark.parametrize("kind", sorted(ASSET_PLANTS))
def test_same_seed_same_readings_and_a_fault_changes_only_its_sensor(kind: str) -> None:
    def record(fault: bool) -> np.ndarray:
        plant = ASSET_PLANTS[kind](units=2, seed=7)
        if fault:
            plant.inject(Fault("spike", f"{kind}-2", plant.fields[0], onset_step=5, magnitude=50.0))
        return plant.record(50).values

    clean, again, faulty = record(False), record(False), record(True)
    assert np.array_equal(clean, again)
    changed = np.argwhere(clean != faulty)
    assert changed.size and {(int(u), int(f)) for _, u, f in changed} == {(1, 0)}


def test_pump_readings_follow_the_affinity_laws() -> None:
    plant = PumpPlant(units=1, seed=3)
    plant.set_input("pump-1", "valve", 1.0)
    readings = []
    for speed in (2900.0, 1450.0):
        plant.set_input("pump-1", "speed", speed)
        plant.step_frame()
        readings.append(plant.truth_frame()[0])
    full, half = readings
    flow, head, power = (plant.fields.index(f) for f in ("flow", "head", "power"))
    assert half[flow] / full[flow] == pytest.approx(0.5, rel=0.01)
    assert half[head] / full[head] == pytest.approx(0.25, rel=0.02)
    assert half[power] / full[power] == pytest.approx(0.125, rel=0.02)


def test_the_program_moves_the_operating_point_unless_driven_by_hand() -> None:
    plant = MotorPlant(units=2, seed=1)
    plant.set_input("motor-1", "current", 20.0)
    rec = plant.record(6 * 360)
    current = plant.fields.index("current")
    assert np.ptp(rec.truth[:, 0, current]) == 0.0  # held by hand
    assert np.ptp(rec.truth[:, 1, current]) > 3.0  # the load program moved it
    assert np.max(np.abs(np.diff(rec.truth[:, 1, current]))) <= 0.01 * 10 + 1e-9  # ramped, never jumped


def test_meter_counter_integrates_power_and_wraps() -> None:
    plant = MeterPlant(units=1, seed=4)
    plant.set_param("meter-1", "energy", plant.ROLLOVER_KWH - 1.0)
    rec = plant.record(60)
    power, energy = rec.truth[:, 0, 0], rec.truth[:, 0, 1]
    unwrapped = np.where(energy < 1000.0, energy + plant.ROLLOVER_KWH, energy)
    assert np.allclose(np.diff(unwrapped), power[1:] * 10.0 / 3600.0)
    assert energy[-1] < 10.0  # wrapped past the rollover


def test_bad_inputs_are_refused_by_name() -> None:
    plant = PumpPlant(units=1)
    with pytest.raises(InvalidValueError, match="unknown input 'rpm'"):
        plant.set_input("pump-1", "rpm", 1.0)
    with pytest.raises(InvalidValueError, match="unknown parameter"):
        plant.set_param("pump-1", "tau", 1.0)
    with pytest.raises(UnknownTwinError):
        plant.inject(Fault("stuck", "pump-9", "flow", onset_step=1))
    with pytest.raises(UnknownTwinError):
        plant.inject(Fault("stuck", "pump-1", "temp_1", onset_step=1))
