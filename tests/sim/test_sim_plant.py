"""Physics sanity, fault semantics and determinism of the simulated plant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.sim import FIELDS, Fault, Plant, PlantParams, PlantRecording

T1, T2, HUM, OUT, HEATER, FAN = (FIELDS.index(f) for f in FIELDS)
HOUR_STEPS = 360  # at dt = 10 s


def quiet_params(**overrides: float) -> PlantParams:
    """No noise, no quantisation, constant outdoor temperature: pure deterministic physics."""
    base = {
        "outdoor_amplitude_c": 0.0,
        "temp_noise_c": 0.0,
        "humidity_noise_pct": 0.0,
        "outdoor_noise_c": 0.0,
        "temp_process_noise_c": 0.0,
        "humidity_process_noise_pct": 0.0,
        "temp_quantum_c": 0.0,
        "humidity_quantum_pct": 0.0,
    }
    base.update(overrides)
    return PlantParams(**base)


def test_heater_on_warms_the_room() -> None:
    plant = Plant(rooms=2, seed=3)
    plant.set_input("room-1", "heater", 1.0)
    rec = plant.record(HOUR_STEPS)
    warmed = rec.truth[-1, 0, T1] - rec.truth[0, 0, T1]
    unheated = rec.truth[-1, 1, T1] - rec.truth[0, 1, T1]
    assert warmed > 0.5
    assert unheated < 0.0  # the outdoor air is colder than the initial 20 C
    assert rec.values[-1, 0, HEATER] == 1.0


def test_fan_cools_and_dries_a_warm_room() -> None:
    plant = Plant(rooms=2, seed=4)
    plant.set_input("room-2", "fan", 1.0)
    rec = plant.record(HOUR_STEPS)
    assert rec.truth[-1, 1, T1] < rec.truth[-1, 0, T1] - 1.0
    assert rec.truth[-1, 1, HUM] < rec.truth[-1, 0, HUM] - 2.0


def test_temperature_settles_at_the_first_order_equilibrium() -> None:
    plant = Plant(rooms=1, seed=0, dt_s=60.0, params=quiet_params(outdoor_mean_c=5.0))
    plant.set_input("room-1", "heater", 0.4)
    plant.record(30 * 60)  # 30 h
    expected = 5.0 + plant.heater_gain[0] * 0.4 / plant.loss[0]
    assert plant.truth("room-1", "temp_1") == pytest.approx(expected, abs=0.01)
    assert plant.truth("room-1", "outdoor_temp") == pytest.approx(5.0)


def test_discretisation_is_exact_whatever_the_step() -> None:
    fine = Plant(rooms=1, seed=0, dt_s=10.0, params=quiet_params())
    coarse = Plant(rooms=1, seed=0, dt_s=60.0, params=quiet_params())
    for p in (fine, coarse):
        p.set_input("room-1", "heater", 0.7)
        p.set_input("room-1", "fan", 0.5)
    fine_rec, coarse_rec = fine.record(6 * 120), coarse.record(120)
    np.testing.assert_allclose(fine_rec.truth[5::6, 0, T1], coarse_rec.truth[:, 0, T1], rtol=1e-9)
    np.testing.assert_allclose(fine_rec.truth[5::6, 0, HUM], coarse_rec.truth[:, 0, HUM], rtol=1e-9)


def test_thermostat_holds_the_setpoint() -> None:
    plant = Plant(rooms=1, seed=5, setpoint_c=21.0)
    rec = plant.record(4 * HOUR_STEPS)
    last_hour = rec.truth[-HOUR_STEPS:, 0, T1]
    assert abs(float(last_hour.mean()) - 21.0) < 0.5
    assert last_hour.min() > 20.0
    heater = rec.values[-HOUR_STEPS:, 0, HEATER]
    assert heater.min() == 0.0
    assert heater.max() == 1.0  # it cycles


def test_setting_the_heater_by_hand_switches_the_thermostat_off() -> None:
    plant = Plant(rooms=1, seed=5, setpoint_c=30.0)
    plant.set_input("room-1", "heater", 0.0)
    rec = plant.record(HOUR_STEPS)
    assert rec.values[:, 0, HEATER].max() == 0.0


def test_daily_outdoor_cycle() -> None:
    plant = Plant(rooms=1, seed=0)
    assert plant.outdoor_temp_at(15 * 3600.0) == pytest.approx(12.0)
    assert plant.outdoor_temp_at(3 * 3600.0) == pytest.approx(4.0)


def test_same_seed_same_run_other_seed_other_run() -> None:
    def run(seed: int) -> np.ndarray:
        plant = Plant(rooms=3, seed=seed)
        plant.set_input("room-2", "fan", 1.0)
        plant.inject(Fault("spike", "room-1", "temp_1", 10, magnitude=3.0, duration_steps=50, rate=0.2))
        return plant.record(200).values

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_redundant_sensors_agree_within_noise_and_are_independent() -> None:
    rec = Plant(rooms=4, seed=2).record(500)
    diff = rec.values[:, :, T1] - rec.values[:, :, T2]
    assert abs(float(diff.mean())) < 0.01
    assert 0.05 < float(diff.std()) < 0.1  # sqrt(2) * 0.05 plus quantisation
    assert np.isnan(rec.values).sum() == 0


def faulted_and_clean(fault: Fault, steps: int = 60) -> tuple[PlantRecording, PlantRecording]:
    clean, faulty = Plant(rooms=2, seed=11), Plant(rooms=2, seed=11)
    faulty.inject(fault)
    return clean.record(steps), faulty.record(steps)


def test_a_fault_changes_only_its_own_sensor_and_only_from_onset() -> None:
    fault = Fault("drift", "room-2", "humidity", 20, magnitude=6.0)
    clean, faulty = faulted_and_clean(fault)
    c, f = clean.values, faulty.values
    np.testing.assert_array_equal(c[:20], f[:20])
    mask = np.ones(c.shape[1:], bool)
    mask[1, HUM] = False
    np.testing.assert_array_equal(c[:, mask], f[:, mask])
    assert not np.array_equal(c[20:, 1, HUM], f[20:, 1, HUM])


def test_drift_grows_linearly_from_onset() -> None:
    fault = Fault("drift", "room-1", "temp_1", 12, magnitude=3.6)  # 3.6 C/h = 0.01 C per 10 s step
    clean, faulty = faulted_and_clean(fault)
    bias = faulty.values[:, 0, T1] - clean.values[:, 0, T1]
    expected = np.where(np.arange(60) >= 12, (np.arange(60) - 12) * 0.01, 0.0)
    np.testing.assert_allclose(bias, expected, atol=1e-9)


def test_stuck_sensor_repeats_its_last_value_with_fresh_timestamps() -> None:
    fault = Fault("stuck", "room-1", "temp_2", 15)
    clean, faulty = faulted_and_clean(fault)
    v = faulty.values[:, 0, T2]
    assert np.all(v[15:] == v[14])
    assert v[14] == clean.values[14, 0, T2]
    assert np.all(np.diff(faulty.sensor_t_s[:, 0, T2]) > 0)
    assert np.all(np.diff(faulty.seq[:, 0, T2]) == 1)


def test_stuck_at_a_given_value() -> None:
    fault = Fault("stuck", "room-1", "temp_2", 15, magnitude=85.0, stuck_at_magnitude=True)
    _, faulty = faulted_and_clean(fault)
    assert np.all(faulty.values[15:, 0, T2] == 85.0)
    assert np.all(faulty.values[:15, 0, T2] < 30.0)


def test_single_spike_at_onset_only() -> None:
    fault = Fault("spike", "room-2", "temp_1", 30, magnitude=4.0)
    clean, faulty = faulted_and_clean(fault)
    delta = faulty.values[:, 1, T1] - clean.values[:, 1, T1]
    assert abs(delta[30]) == pytest.approx(4.0)
    assert np.count_nonzero(delta) == 1


def test_repeated_spikes_follow_the_rate() -> None:
    fault = Fault("spike", "room-1", "humidity", 0, magnitude=10.0, duration_steps=2000, rate=0.1)
    clean, faulty = faulted_and_clean(fault, steps=2000)
    delta = faulty.values[:, 0, HUM] - clean.values[:, 0, HUM]
    spikes = np.abs(delta) > 5.0
    assert 0.07 < spikes.mean() < 0.13
    assert (delta[spikes] > 0).any()
    assert (delta[spikes] < 0).any()


def test_dropout_loses_readings_but_seq_advances() -> None:
    plant = Plant(rooms=1, seed=1)
    plant.inject(Fault("dropout", "room-1", "temp_1", 3, duration_steps=4))
    readings = [next(r for r in plant.step() if r.field == "temp_1") for _ in range(10)]
    assert [r.value is None for r in readings] == [False] * 3 + [True] * 4 + [False] * 3
    assert [r.seq for r in readings] == list(range(10))


def test_partial_dropout_rate() -> None:
    fault = Fault("dropout", "room-1", "fan", 0, rate=0.3)
    _, faulty = faulted_and_clean(fault, steps=2000)
    lost = np.isnan(faulty.values[:, 0, FAN])
    assert 0.25 < lost.mean() < 0.35


def test_stale_sensor_resends_its_last_reading() -> None:
    fault = Fault("stale", "room-2", "outdoor_temp", 25)
    clean, faulty = faulted_and_clean(fault)
    for arr in (faulty.values, faulty.sensor_t_s, faulty.seq):
        assert np.all(arr[25:, 1, OUT] == arr[24, 1, OUT])
    assert faulty.sensor_t_s[24, 1, OUT] == clean.sensor_t_s[24, 1, OUT]
    assert faulty.t_s[-1] > faulty.sensor_t_s[-1, 1, OUT]


def test_fault_with_duration_recovers() -> None:
    fault = Fault("stuck", "room-1", "temp_1", 10, duration_steps=5)
    clean, faulty = faulted_and_clean(fault)
    np.testing.assert_array_equal(faulty.values[15:, 0, T1], clean.values[15:, 0, T1])


def test_step_readings_carry_twin_field_time_and_seq() -> None:
    plant = Plant(rooms=2, seed=0, dt_s=5.0, start_s=100.0)
    readings = plant.step()
    assert len(readings) == 2 * len(FIELDS)
    assert {r.twin for r in readings} == {"room-1", "room-2"}
    assert all(r.t_s == 105.0 and r.seq == 0 for r in readings)
    r = next(r for r in readings if r.twin == "room-2" and r.field == "humidity")
    assert r.value is not None
    assert abs(r.value - plant.truth("room-2", "humidity")) < 2.0


def test_thousands_of_rooms_step_as_arrays() -> None:
    plant = Plant(rooms=5000, seed=0)
    plant.heater[::2] = 1.0
    frame = plant.step_frame()
    for _ in range(20):
        frame = plant.step_frame()
    assert frame.values.shape == (5000, len(FIELDS))
    assert frame.step == 20
    assert frame.values[::2, T1].mean() > frame.values[1::2, T1].mean()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.set_input("room-1", "heater", 1.5), InvalidValueError),
        (lambda p: p.set_input("room-1", "valve", 0.5), InvalidValueError),
        (lambda p: p.set_input("room-9", "fan", 0.5), UnknownTwinError),
        (lambda p: p.set_param("room-1", "loss", -1.0), InvalidValueError),
        (lambda p: p.set_param("room-1", "mass", 1.0), InvalidValueError),
        (lambda p: p.inject(Fault("stuck", "room-1", "pressure", 0)), UnknownTwinError),
        (lambda p: p.truth("room-1", "pressure"), UnknownTwinError),
        (lambda p: Fault("melt", "room-1", "temp_1", 0), InvalidValueError),  # type: ignore[arg-type]
        (lambda p: Fault("stuck", "room-1", "temp_1", -1), InvalidValueError),
        (lambda p: Fault("dropout", "room-1", "temp_1", 0, rate=2.0), InvalidValueError),
        (lambda p: Plant(rooms=0), InvalidValueError),
        (lambda p: Plant(dt_s=math.nan), InvalidValueError),
    ],
)
def test_invalid_calls_are_refused(call: object, error: type[Exception]) -> None:
    plant = Plant(rooms=1)
    with pytest.raises(error):
        call(plant)  # type: ignore[operator]


def test_plant_change_is_model_drift_not_sensor_fault() -> None:
    a, b = Plant(rooms=1, seed=9), Plant(rooms=1, seed=9)
    b.set_param("room-1", "loss", 3.0 * float(b.loss[0]))
    ra, rb = a.record(HOUR_STEPS), b.record(HOUR_STEPS)
    assert rb.truth[-1, 0, T1] < ra.truth[-1, 0, T1] - 1.0  # both sensors follow the faster cooling
    assert abs(float((rb.values[:, 0, T1] - rb.values[:, 0, T2]).mean())) < 0.02
