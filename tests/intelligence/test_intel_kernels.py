"""Kernels: protocol, registry and entry points, thermal physics, Monte Carlo, Kalman, online estimation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from drsdtp.errors import ConfigError, InvalidValueError
from drsdtp.kernels import (
    FirstOrderThermalKernel,
    KernelRegistry,
    LinearTrendKernel,
    LocalTrendFilter,
    MonteCarloKernel,
    Observation,
    Scenario,
    SimulationKernel,
    TrackingKernel,
    TwinState,
    default_registry,
)
from drsdtp.kernels import registry as registry_module
from drsdtp.kernels.protocol import frozen_map
from drsdtp.sim import Plant, PlantParams


def room_state(temp: float = 20.0, **values: float) -> TwinState:
    base = {"temp": temp, "humidity": 50.0, "outdoor_temp": 5.0, "heater": 0.0, "fan": 0.0}
    base.update(values)
    return TwinState(twin="r", t_s=0.0, values=frozen_map(base))


def test_builtins_satisfy_the_protocol_and_are_shared() -> None:
    reg = default_registry(plugins=False)
    assert set(reg.names()) >= {"linear.trend", "thermal.first_order", "kalman.local_trend"}
    thermal = reg.get("thermal.first_order")
    assert thermal is reg.get("thermal.first_order")  # one instance for every twin
    assert isinstance(thermal, TrackingKernel)
    assert isinstance(reg.get("linear.trend"), SimulationKernel)
    with pytest.raises(ConfigError):
        reg.get("nope")
    with pytest.raises(ConfigError):
        reg.register("linear.trend", LinearTrendKernel)


def test_each_builtin_is_registered_under_its_own_name() -> None:
    """The registry names its built-ins without importing them (an idle node's RSS): each name must be the
    one its kernel says it has, or a model naming it would get another kernel or none."""
    reg = default_registry(plugins=False)
    assert set(registry_module.BUILTINS) <= set(reg.names())
    for name in registry_module.BUILTINS:
        assert reg.get(name).name == name


def test_entry_point_plugins_load_and_broken_ones_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Good:
        name = "plugin.good"

        @property
        def variables(self) -> tuple[str, ...]:
            return ("x",)

        def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> object:
            raise NotImplementedError

    def broken() -> object:
        raise RuntimeError("boom")

    eps = [
        SimpleNamespace(name="plugin.good", value="pkg:Good", load=lambda: Good),
        SimpleNamespace(
            name="plugin.bad", value="pkg:bad", load=lambda: (_ for _ in ()).throw(ImportError("x"))
        ),
        SimpleNamespace(name="plugin.noinstance", value="pkg:broken", load=lambda: broken),
    ]
    seen: dict[str, str] = {}

    def fake_entry_points(group: str) -> list[SimpleNamespace]:
        seen["group"] = group
        return eps

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    reg = KernelRegistry()
    added = reg.load_entry_points()
    assert seen["group"] == "drsdtp.kernels"
    assert added == ("plugin.good", "plugin.noinstance")
    assert "plugin.bad" in reg.load_errors
    assert reg.get("plugin.good").name == "plugin.good"
    with pytest.raises(RuntimeError):
        reg.get("plugin.noinstance")


def test_thermal_simulation_matches_the_plant_physics() -> None:
    quiet = PlantParams(
        outdoor_amplitude_c=0.0, temp_process_noise_c=0.0, humidity_process_noise_pct=0.0, outdoor_mean_c=5.0
    )
    plant = Plant(rooms=1, seed=0, params=quiet, param_spread=0.0)
    plant.set_input("room-1", "heater", 0.6)
    plant.set_input("room-1", "fan", 1.0)
    rec = plant.record(360)
    kernel = FirstOrderThermalKernel()
    state = room_state(20.0, humidity=50.0, heater=0.6, fan=1.0)
    pred = kernel.simulate(state, Scenario(step_s=10.0), 3600.0)
    np.testing.assert_allclose(pred.mean["temp"][1:], rec.truth[:, 0, 0], atol=1e-9)
    np.testing.assert_allclose(pred.mean["humidity"][1:], rec.truth[:, 0, 2], atol=1e-9)


def test_scenarios_move_the_trajectory_the_right_way() -> None:
    kernel = FirstOrderThermalKernel()
    state = room_state(21.0, heater=1.0, fan=1.0, humidity=55.0)
    base = kernel.simulate(state, Scenario.baseline(), 3600.0)
    fan_off = kernel.simulate(state, Scenario.parse("fan off"), 3600.0)
    fails = kernel.simulate(state, Scenario.parse("heater fails"), 3600.0)
    assert fan_off.at("temp", 3600) > base.at("temp", 3600)  # less loss
    assert fan_off.at("humidity", 3600) > base.at("humidity", 3600)  # no drying
    assert fails.at("temp", 3600) < base.at("temp", 3600) - 1.0
    held = kernel.simulate(room_state(15.0), Scenario.setpoint(19.0), 6 * 3600.0)
    tail = held.mean["temp"][-120:]
    assert abs(float(tail.mean()) - 19.0) < 0.6  # the thermostat holds the setpoint
    assert held.mean["heater"].max() == 1.0
    assert held.mean["heater"].min() == 0.0


def test_scenario_parsing_and_validation() -> None:
    assert Scenario.parse("Setpoint 18C").inputs["setpoint"] == 18.0
    assert Scenario.parse("heater fails").param_scale["heater_gain"] == 0.0
    with pytest.raises(InvalidValueError):
        Scenario.parse("open the window")
    with pytest.raises(InvalidValueError):
        Scenario("bad", param_scale=frozen_map({"loss": -1.0}))
    with pytest.raises(InvalidValueError):
        FirstOrderThermalKernel().simulate(room_state(), Scenario.baseline(), -5.0)


def test_monte_carlo_interval_reflects_parameter_uncertainty() -> None:
    kernel = FirstOrderThermalKernel()
    state = TwinState(
        twin="r",
        t_s=0.0,
        values=room_state(20.0, heater=1.0).values,
        params=frozen_map({"heater_gain": 25.0 / 10800}),
        param_std=frozen_map({"heater_gain": 0.2 * 25.0 / 10800}),
    )
    mc = MonteCarloKernel(kernel, runs=300, seed=4)
    pred = mc.simulate(state, Scenario.baseline(), 3600.0)
    again = mc.simulate(state, Scenario.baseline(), 3600.0)
    np.testing.assert_array_equal(pred.upper["temp"], again.upper["temp"])  # seeded
    width_end = pred.upper["temp"][-1] - pred.lower["temp"][-1]
    width_start = pred.upper["temp"][0] - pred.lower["temp"][0]
    assert width_end > width_start + 0.3
    deterministic = kernel.simulate(state, Scenario.baseline(), 3600.0).mean["temp"][-1]
    assert pred.lower["temp"][-1] < deterministic < pred.upper["temp"][-1]


def test_monte_carlo_works_with_any_kernel() -> None:
    state = TwinState(
        "x",
        0.0,
        frozen_map({"level": 5.0}),
        value_std=frozen_map({"level": 1.0}),
        rates=frozen_map({"level": 0.01}),
    )
    pred = MonteCarloKernel(LinearTrendKernel(), runs=400, seed=1).simulate(state, Scenario.baseline(), 600.0)
    assert pred.at("level", 600.0) == pytest.approx(11.0, abs=0.2)
    assert pred.upper["level"][-1] - pred.lower["level"][-1] == pytest.approx(2 * 1.96, rel=0.15)


def test_local_trend_filter_follows_a_ramp() -> None:
    kf = LocalTrendFilter(fields=2, q_level=1e-7, q_slope=1e-11)
    rng = np.random.default_rng(0)
    for k in range(400):
        t = np.full(2, k * 10.0)
        z = np.array([1.0 + 0.002 * k * 10.0, -3.0]) + rng.normal(0, 0.1, 2)
        kf.update([0, 1], t, z, np.full(2, 0.01))
    slope_sd = math.sqrt(kf.p11[0])
    assert slope_sd < 2e-4
    assert abs(kf.slope[0] - 0.002) < 3 * slope_sd
    assert abs(kf.slope[1]) < 3 * slope_sd
    state = kf.state(0, "x")
    assert abs(state.values["x"] - (1.0 + 0.002 * 3990)) < 3 * state.value_std["x"]
    assert state.rates["x"] == kf.slope[0]


def test_tracker_learns_room_parameters_from_the_plant() -> None:
    plant = Plant(rooms=4, seed=2)
    kernel = FirstOrderThermalKernel()
    tracker = kernel.tracker({})
    rng = np.random.default_rng(3)
    slots = np.arange(4)
    for step in range(2500):
        if step % 300 == 0:
            plant.heater[:] = rng.choice([0.0, 0.5, 1.0], 4)
            plant.fan[:] = rng.choice([0.0, 1.0], 4)
        v = plant.step_frame().values

        def obs(cols: list[int], sigma: float, v: np.ndarray = v) -> Observation:
            vals = v[:, cols]
            return Observation(vals, np.isfinite(vals), np.full(vals.shape, sigma))

        tracker.step(
            slots,
            np.full(4, 10.0),
            {
                "temp": obs([0, 1], 0.05),
                "humidity": obs([2], 0.3),
                "outdoor_temp": obs([3], 0.1),
                "heater": obs([4], 1e-3),
                "fan": obs([5], 1e-3),
            },
        )
    for slot in range(4):
        changes = {c.name: c for c in tracker.commit(slot)}
        params = tracker.params(slot)[0]
        assert params["loss"] == pytest.approx(plant.loss[slot], rel=0.15)
        assert params["heater_gain"] == pytest.approx(plant.heater_gain[slot], rel=0.15)
        assert not any(c.clipped for c in changes.values())
    values, std = tracker.state(0)
    assert values["temp"] == pytest.approx(plant.temp[0], abs=0.1)
    assert std["temp"] < 0.05


def test_commit_clips_unsafe_estimates() -> None:
    tracker = FirstOrderThermalKernel().tracker({})
    tracker.resize(1)
    tracker.temp_rls.theta[0, 2] = 1e-7  # the heater no longer heats
    tracker.temp_rls.cov[0] = np.diag([1e-30, 1e-30, 1e-20])
    changes = {c.name: c for c in tracker.commit(0)}
    gain = changes["heater_gain"]
    assert gain.clipped
    assert gain.estimate == pytest.approx(1e-7)
    assert gain.new == pytest.approx(25.0 / 10800 / 4)
    assert math.isfinite(tracker.params(0)[0]["heater_gain"])
