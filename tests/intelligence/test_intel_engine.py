"""The engine on the simulated plant: what-if on forks, divergence, corrections, recommendations, the API."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from drsdtp.errors import ConfigError, InvalidValueError, UnknownTwinError
from drsdtp.intelligence import (
    DivergenceKind,
    HealthStatus,
    RecommendationKind,
    TwinIntelligence,
)
from drsdtp.kernels import Scenario
from drsdtp.sim import Fault, Plant
from drsdtp.sim.harness import PlantRun, excite, make_plant_run
from drsdtp.sim.room_spec import room_model_spec


@pytest.fixture(scope="module")
def faulty() -> PlantRun:
    """Parameters learnt for every room, then room-1: temp_1 drifts; room-2: plant change (loss x 2.5);
    room-3 and room-4: clean. Tests that advance the plant further come last in this module."""
    run = make_plant_run(rooms=4, seed=0)
    excite(run, 1500)
    onset = run.plant.steps_done
    run.plant.inject(Fault("drift", "room-1", "temp_1", onset, magnitude=12.0))
    run.plant.set_param("room-2", "loss", 2.5 * float(run.plant.loss[1]))
    run.plant.heater[:] = 0.5
    run.plant.fan[:] = 0.0
    run.advance(90)
    return run


def test_parameters_are_learnt_and_committed_as_logged_corrections(faulty: PlantRun) -> None:
    engine, plant = faulty.engine, faulty.plant
    corrections = engine.corrections("room-3")
    assert corrections
    assert all(c.kernel == "thermal.first_order" for c in corrections)
    params = engine.twin_state("room-3").params
    assert params["loss"] == pytest.approx(plant.loss[2], rel=0.2)
    assert params["heater_gain"] == pytest.approx(plant.heater_gain[2], rel=0.2)
    json.dumps([c.to_dict() for c in corrections])


def test_sensor_drift_is_a_sensor_fault_not_model_drift(faulty: PlantRun) -> None:
    engine = faulty.engine
    health = engine.health("room-1")
    by_field = {f.field: f for f in health.fields}
    assert "DRIFT" in by_field["temp_1"].reasons
    assert "DRIFT" not in by_field["temp_2"].reasons
    kinds = {a.kind for a in engine.divergence("room-1") if a.variable == "temp"}
    assert DivergenceKind.MODEL_DRIFT not in kinds
    recs = engine.recommendations("room-1")
    assert any(r.kind is RecommendationKind.RECALIBRATE and r.target == "temp_1" for r in recs)


def test_health_says_sensor_or_model_with_its_evidence(faulty: PlantRun) -> None:
    """The drifting temp_1 disagrees with its peer: the sensor. In the changed room both sensors agree with
    each other and not with the kernel: the model. The clean room has no verdict at all."""
    engine = faulty.engine
    temp_1 = next(f for f in engine.health("room-1").fields if f.field == "temp_1")
    assert (temp_1.cause, temp_1.evidence) == ("sensor", ("temp_2",))
    changed = {f.field: f for f in engine.health("room-2").fields}
    for name in ("temp_1", "temp_2"):
        assert (changed[name].cause, changed[name].evidence) == ("model", ("thermal.first_order",))
        assert "temp_1, temp_2 agree with each other" in changed[name].cause_detail
    assert all(f.cause == "" and not f.evidence for f in engine.health("room-3").fields)


def test_clean_room_recommends_monitoring(faulty: PlantRun) -> None:
    recs = faulty.engine.recommendations("room-3")
    assert [r.kind for r in recs] == [RecommendationKind.CONTINUE_MONITORING]
    assert recs[0].confidence > 0.9
    assert faulty.engine.divergence("room-3") == ()


def test_what_if_runs_on_a_fork_and_leaves_the_live_twin_alone(faulty: PlantRun) -> None:
    engine = faulty.engine
    tracker = engine._groups["room"].tracker
    assert tracker is not None
    snapshot = (tracker.state(3), tracker.params(3), engine.windows.count.copy())
    running = {"heater": 1.0, "fan": 1.0}  # what-if from a fork with heater and fan running
    base = engine.what_if("room-4", "baseline", runs=0, inputs=running)
    fan_off = engine.what_if("room-4", Scenario.fan_off(), runs=100, inputs=running)
    fails = engine.what_if("room-4", "heater fails", runs=0, inputs=running)
    assert (tracker.state(3), tracker.params(3)) == snapshot[:2]
    np.testing.assert_array_equal(engine.windows.count, snapshot[2])
    assert engine.twin_state("room-4").values["fan"] == 0.0  # the live twin still has its fan off
    assert fan_off.trajectories["temp"][-1] > base.trajectories["temp"][-1]
    assert fan_off.trajectories["humidity"][-1] > base.trajectories["humidity"][-1]
    assert fails.trajectories["temp"][-1] < base.trajectories["temp"][-1]
    lo, hi = fan_off.lower["temp"][-1], fan_off.upper["temp"][-1]
    assert lo < fan_off.trajectories["temp"][-1] < hi
    assert fan_off.offsets_min[-1] == pytest.approx(60.0)
    json.dumps(fan_off.to_dict())


def test_kernel_forecast_for_bound_fields_and_serialisation(faulty: PlantRun) -> None:
    engine = faulty.engine
    fc = engine.forecast("room-3", "temp_1")
    assert fc.method == "thermal.first_order"
    assert [h.horizon_min for h in fc.horizons] == [5.0, 15.0, 30.0, 60.0]
    assert all(h.lower is not None and h.upper is not None and h.lower < h.upper for h in fc.horizons)
    assert fc.horizons[0].confidence >= fc.horizons[-1].confidence
    assert engine.forecast("room-3", "temp_1", method="linear").method == "linear.trend"
    assert engine.forecast("room-3", "outdoor_temp").method == "linear.trend"
    health = engine.health("room-3")
    text = json.dumps(health.to_dict())
    assert '"status": "HEALTHY"' in text
    names = ("temp_1", "temp_2", "humidity", "outdoor_temp", "heater", "fan")
    assert set(engine.quality_fields("room-3")) == {f"{f}.q" for f in names}
    json.dumps(engine.traits("room-3", "humidity").to_dict())


def test_actuator_suggestion_avoids_a_forecast_limit_crossing() -> None:
    spec = room_model_spec()
    low_limit_spec = dataclasses.replace(
        spec,
        fields=tuple(
            dataclasses.replace(f, low_limit=10.0) if f.redundancy_group == "temp" else f for f in spec.fields
        ),
    )
    run = make_plant_run(rooms=1, seed=8)
    run.engine = TwinIntelligence()
    run.engine.add_model(low_limit_spec)
    run.engine.add_twin("room-1", "room")
    excite(run, 600)
    run.plant.heater[:] = 0.0  # heater off, fan on: the room (11.5 C, outdoor 4 C) cools fast
    run.plant.fan[:] = 1.0
    run.advance(60)
    engine = run.engine
    base = engine.what_if("room-1", "baseline", runs=0)
    reached = [c for c in base.crossings if c.field == "temp" and c.direction == "below" and c.eta_min]
    assert reached, [c.message for c in base.crossings]
    assert reached[0].message.startswith("temp will reach 10")
    recs = engine.recommendations("room-1")
    actuate = [r for r in recs if r.kind is RecommendationKind.ACTUATE]
    assert actuate
    assert actuate[0].action is not None
    check = engine.what_if("room-1", Scenario("check", inputs=dict(actuate[0].action)), runs=0)
    assert all(c.eta_min is None for c in check.crossings if c.field == "temp")
    assert actuate[0].action == {"heater": 1.0}  # switching the fan off alone only delays the crossing


def test_what_if_is_refused_when_every_temperature_sensor_is_bad() -> None:
    run = make_plant_run(rooms=1, seed=2)
    run.advance(100)
    onset = run.plant.steps_done
    run.plant.inject(Fault("stuck", "room-1", "temp_1", onset))
    run.plant.inject(Fault("stuck", "room-1", "temp_2", onset))
    run.advance(20)
    result = run.engine.what_if("room-1", "fan off")
    assert result.refused is not None
    assert result.trajectories == {}
    assert run.engine.forecast("room-1", "temp_1").refused is not None


def test_registration_and_lookup_errors() -> None:
    engine = TwinIntelligence()
    with pytest.raises(InvalidValueError):
        engine.health("x")  # no pass yet
    engine.add_model(room_model_spec())
    with pytest.raises(ConfigError):
        engine.add_model(room_model_spec())
    with pytest.raises(ConfigError):
        engine.add_twin("a", "boiler")
    engine.add_twin("a", "room")
    with pytest.raises(ConfigError):
        engine.add_twin("a", "room")
    engine.evaluate(0.0)
    with pytest.raises(UnknownTwinError):
        engine.health("b")
    with pytest.raises(UnknownTwinError):
        engine.forecast("a", "pressure")
    assert engine.health("a").status is HealthStatus.FAILED  # nothing reported yet


def test_plant_change_is_model_drift_and_triggers_re_estimation(faulty: PlantRun) -> None:
    engine = faulty.engine
    alerts = [a for a in engine.divergence("room-2") if a.variable == "temp"]
    assert alerts, "the model no longer matches room-2"
    assert alerts[0].kind is DivergenceKind.MODEL_DRIFT
    assert alerts[0].recalibrate
    assert all(f.status is HealthStatus.HEALTHY for f in engine.health("room-2").fields[:2])
    recs = engine.recommendations("room-2")
    assert any(r.kind is RecommendationKind.RECALIBRATE and r.target.startswith("model:") for r in recs)
    before = engine.twin_state("room-2").params["loss"]
    excite(faulty, 720, seed=5, every=120)  # with the inputs moving, loss and heater gain separate again
    after = engine.twin_state("room-2").params["loss"]
    assert after > 1.5 * before
    assert any(c.reason.startswith("model drift") for c in engine.corrections("room-2"))


def test_reading_objects_feed_the_engine_and_gaps_are_seen() -> None:
    plant = Plant(rooms=2, seed=1)
    engine = TwinIntelligence()
    engine.add_model(room_model_spec())
    for twin in plant.twins:
        engine.add_twin(twin, "room")
    plant.inject(Fault("dropout", "room-1", "humidity", 40, duration_steps=3))
    kept = 0
    for _ in range(45):
        kept += engine.ingest_readings(plant.step())
        engine.evaluate(plant.t_s)
    assert kept == 45 * 12 - 3  # the three lost humidity readings were never sent
    assert "DROPOUT" in engine.field_health("room-1", "humidity").reasons
    assert engine.field_health("room-2", "humidity").reasons == ()
    recs = engine.recommendations("room-2")
    assert not [
        r
        for r in recs
        if r.kind in (RecommendationKind.RECALIBRATE, RecommendationKind.INSPECT)
        and not r.target.startswith("model:")
    ]
