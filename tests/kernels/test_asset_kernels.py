"""Pump, motor and meter kernels against their simulated machines: physics, learning, and what diverges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drsdtp.errors import ConfigError, InvalidValueError
from drsdtp.intelligence.results import DivergenceKind, HealthStatus
from drsdtp.kernels import (
    AffinityPumpKernel,
    EnergyMeterKernel,
    MotorThermalKernel,
    Observation,
    Scenario,
    TrackingKernel,
    TwinState,
    default_registry,
)
from drsdtp.kernels.protocol import frozen_map
from drsdtp.sim import Fault
from drsdtp.sim.machines import MeterPlant, MotorPlant, PumpPlant
from tests.kernels.support import MachineRun, machine_run

HOUR = 360  # plant steps of 10 s


def test_asset_kernels_are_registered_tracking_kernels_with_declared_parameters() -> None:
    registry = default_registry(plugins=False)
    for name in ("pump.affinity", "motor.thermal", "meter.energy"):
        kernel = registry.get(name)
        assert isinstance(kernel, TrackingKernel)
        defaults = kernel.default_params  # type: ignore[attr-defined]
        assert set(kernel.safe_params) <= set(defaults)
        kernel.tracker(dict(defaults))  # the defaults are a valid prior
    with pytest.raises(ConfigError) as err:
        AffinityPumpKernel().tracker({"shutof_head_m": 30.0})
    assert err.value.key == "params.shutof_head_m" and "'shutoff_head_m'" in err.value.reason
    with pytest.raises(ConfigError, match="must be > 0"):
        MotorThermalKernel().tracker({"tau_s": 0.0})


def test_pump_simulation_follows_the_affinity_laws() -> None:
    kernel = AffinityPumpKernel()
    state = TwinState("p", 0.0, frozen_map({"speed": 2900.0, "valve": 1.0}))
    full = kernel.simulate(state, Scenario.baseline(), 600.0)
    half = kernel.simulate(state, Scenario.parse("speed 1450"), 600.0)
    assert half.at("flow", 0) / full.at("flow", 0) == pytest.approx(0.5)
    assert half.at("head", 0) / full.at("head", 0) == pytest.approx(0.25)
    # Power: the shut-off part goes with speed^3, the flow-dependent part with speed^2 * flow = speed^3.
    assert half.at("power", 0) / full.at("power", 0) == pytest.approx(0.125)
    assert full.at("head", 0) == pytest.approx(32.0) and full.at("power", 0) == pytest.approx(11.0)
    throttled = kernel.simulate(state, Scenario("valve", inputs=frozen_map({"valve": 0.5})), 600.0)
    assert throttled.at("head", 0) > full.at("head", 0)  # less flow: up the pump curve
    with pytest.raises(InvalidValueError, match="speed"):
        kernel.simulate(TwinState("p", 0.0, frozen_map({})), Scenario.baseline(), 60.0)


def test_motor_simulation_approaches_the_new_equilibrium_with_tau() -> None:
    kernel = MotorThermalKernel()
    state = TwinState("m", 0.0, frozen_map({"winding_temp": 40.0, "ambient_temp": 25.0, "current": 15.0}))
    overload = kernel.simulate(state, Scenario.parse("current 36"), 4 * 3600.0)
    steady = 25.0 + 60.0 * (36.0 / 30.0) ** 2
    assert overload.at("winding_temp", 4 * 3600.0) == pytest.approx(steady, abs=0.2)
    one_tau = 40.0 + (steady - 40.0) * (1 - math.exp(-1))
    assert overload.at("winding_temp", 1800.0) == pytest.approx(one_tau, abs=0.3)


def test_meter_simulation_wraps_the_counter() -> None:
    kernel = EnergyMeterKernel()
    state = TwinState("e", 0.0, frozen_map({"energy": 999_990.0, "power": 60.0}))
    pred = kernel.simulate(state, Scenario.baseline(), 3600.0)
    assert pred.at("energy", 0.0) == pytest.approx(999_990.0)
    assert pred.mean["energy"][-1] == pytest.approx(50.0)  # 60 kWh later, past the rollover


@pytest.mark.parametrize(
    ("kind", "truth"),
    [
        ("pump", {"shutoff_head_m": "shutoff_head", "system_flow_m3h": "system_flow"}),
        ("motor", {"tau_s": "tau", "rise_rated_c": "rise"}),
    ],
)
def test_clean_machines_raise_no_divergence_and_their_parameters_are_learnt(
    kind: str, truth: dict[str, str]
) -> None:
    run = machine_run(kind)
    run.advance(6 * HOUR)
    assert run.first_alert == {}, "no fault was injected"
    for i, twin in enumerate(run.plant.twins):
        assert run.engine.health(twin).status == HealthStatus.HEALTHY
        committed = run.engine.twin_state(twin).params
        for name, attr in truth.items():
            true_value = float(getattr(run.plant, attr)[i])
            assert committed[name] == pytest.approx(true_value, rel=0.03), (twin, name)
    assert run.engine.corrections(), "the declared (nominal) parameters were replaced by the learnt ones"


def test_clean_meters_raise_no_divergence() -> None:
    run = machine_run("meter")
    run.advance(4 * HOUR)
    assert run.first_alert == {}
    assert all(run.engine.health(t).status == HealthStatus.HEALTHY for t in run.plant.twins)


def test_impeller_wear_shows_as_head_below_the_fitted_curve() -> None:
    run = machine_run("pump")
    plant = run.plant
    assert isinstance(plant, PumpPlant)
    run.advance(4 * HOUR, at={3 * HOUR: lambda: plant.set_param("pump-2", "wear", 0.15)})
    assert [(t, v) for t, _, v in run.first_alert] == [("pump-2", "head")]
    (alert,) = run.alerts("pump-2")
    assert alert.variable == "head" and alert.fields == ("head",)
    # One head sensor: the model cannot tell a worn impeller from a drifting sensor, and says so.
    assert alert.kind == DivergenceKind.UNRESOLVED


def test_a_bearing_going_shows_as_vibration_above_the_baseline() -> None:
    run = machine_run("motor")
    plant = run.plant
    assert isinstance(plant, MotorPlant)
    run.advance(4 * HOUR, at={3 * HOUR: lambda: plant.set_param("motor-3", "bearing_wear", 0.8)})
    assert [(t, v) for t, _, v in run.first_alert] == [("motor-3", "vibration")]


def test_a_drifting_power_sensor_disagrees_with_the_energy_counter() -> None:
    run = machine_run("meter")
    run.plant.inject(Fault("drift", "meter-1", "power", onset_step=2 * HOUR, magnitude=3.0))
    run.advance(4 * HOUR)
    assert [(t, v) for t, _, v in run.first_alert] == [("meter-1", "power")]


def test_meter_counts_rollovers_resets_and_a_counter_running_backwards() -> None:
    plant = MeterPlant(units=3, seed=2)
    run = machine_run("meter", seed=2)
    run.plant = plant
    plant.set_param("meter-1", "energy", plant.ROLLOVER_KWH - 2.0)  # wraps within minutes
    run.advance(2 * HOUR, at={HOUR: lambda: plant.set_param("meter-2", "energy", 0.0)})
    states = {t: run.engine.twin_state(t).values for t in plant.twins}
    assert (states["meter-1"]["rollovers"], states["meter-1"]["resets"]) == (1, 0)
    assert states["meter-1"]["energy_unwrapped"] > plant.ROLLOVER_KWH
    assert (states["meter-2"]["rollovers"], states["meter-2"]["resets"]) == (0, 1)
    assert states["meter-3"]["rollovers"] == states["meter-3"]["resets"] == 0
    assert run.first_alert == {}, "neither a rollover nor a reset is a model or sensor fault"

    tracker = EnergyMeterKernel().tracker({})
    for t, energy in ((0.0, 100.0), (60.0, 100.5), (120.0, 99.0)):  # 1.5 kWh back: not half, not a wrap
        obs = {
            "energy": Observation(
                np.array([[energy]]), np.array([[True]]), np.array([[0.0]]), t_s=np.array([[t]])
            ),
            "power": Observation(
                np.array([[30.0]]), np.array([[True]]), np.array([[0.2]]), t_s=np.array([[t]])
            ),
        }
        tracker.step(np.array([0]), np.array([60.0]), obs)
    assert tracker.state(0)[0]["backwards"] == 1


def _verdicts(run: MachineRun, twin: str, field: str, steps: int) -> list[tuple[str, tuple[str, ...]]]:
    """The field's (cause, evidence) after each of ``steps`` evaluations, where it has a cause."""
    out = []
    for _ in range(steps):
        run.advance(2)
        f = next((f for f in run.engine.health(twin).fields if f.field == field), None)
        if f is not None and f.cause:
            out.append((f.cause, f.evidence))
    return out


def test_a_pump_flow_sensor_drifting_while_the_speed_moves_is_the_sensor_by_its_dependents() -> None:
    run = machine_run("pump")
    plant = run.plant
    run.advance(3 * HOUR)
    noise = dict(zip(plant.fields, plant.noise_std, strict=True))
    at = plant.steps_done + 2
    plant.inject(Fault("drift", "pump-1", "flow", at, magnitude=200.0 * float(noise["flow"])))
    flow = _verdicts(run, "pump-1", "flow", 60)
    # head and power are predicted from the measured flow: all three off the kernel is the flow reading
    assert ("sensor", ("pump.affinity", "head", "power")) in flow, flow
    assert all(cause == "sensor" for cause, _ in flow), flow
