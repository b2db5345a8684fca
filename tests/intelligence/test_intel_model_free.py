"""Health of fields without a declared model comes from the model-free detector, through the engine."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from drsdtp.intelligence import FieldSpec, HealthStatus, ModelSpec, TwinIntelligence
from drsdtp.sim.harness import make_plant_run


def engine_of(periods: list[float], kinds: list[str] | None = None) -> TwinIntelligence:
    """One twin per field, project defaults (the configured period is the default 10 s, like a user who
    declared nothing); ``kinds`` may declare a field kind."""
    engine = TwinIntelligence()
    for i, _ in enumerate(periods):
        kind = None if kinds is None else kinds[i]
        engine.add_model(ModelSpec(f"m{i}", (FieldSpec("x", kind=kind),)))  # type: ignore[arg-type]
        engine.add_twin(f"t{i}", f"m{i}")
    return engine


def run(
    engine: TwinIntelligence, t: npt.NDArray[np.float64], v: npt.NDArray[np.float64], start: int = 0
) -> npt.NDArray[np.uint16]:
    """Feed column by column (a pass after each); returns the reasons of every field after every pass."""
    rows = np.arange(v.shape[0])
    out = np.zeros(v.shape, np.uint16)
    for k in range(start, v.shape[1]):
        engine.ingest(rows, t[:, k], v[:, k])
        out[:, k] = engine.evaluate(float(t[:, k].max())).health.reasons
    return out


def test_streams_that_fooled_the_fixed_tests_stay_healthy() -> None:
    rng = np.random.default_rng(1)
    n = 1500
    t = np.tile(np.arange(n) * 300.0, (4, 1))  # every 5 minutes: about 5 days
    day = 2 * np.pi * t[0] / 86_400.0
    v = np.stack(
        [
            rng.poisson(0.5, n).astype(float),  # flat count series (57 % alarmed before)
            30 + 10 * np.sin(day),  # noiseless daily periodic (22 % before)
            np.round(20 + 2 * np.sin(day) + rng.normal(0, 0.05, n), 1),  # quantised temperature
            np.repeat(rng.choice([0.0, 40.0, 55.0], n // 100), 100),  # setpoint held for hours
        ]
    )
    engine = engine_of([300.0] * 4)
    reasons = run(engine, t, v)
    after = reasons[:, 250:]
    assert np.count_nonzero(after) == 0, [np.count_nonzero(r) for r in after]
    assert all(engine.health(f"t{i}").status is HealthStatus.HEALTHY for i in range(4))


def test_a_spike_stays_visible_for_the_hold_time_and_is_logged() -> None:
    rng = np.random.default_rng(2)
    n = 400
    t = np.arange(n, dtype=np.float64)[None, :] * 2.0  # every 2 s
    v = (20 + rng.normal(0, 0.3, n))[None, :]
    v[0, 300] = 20 + 27.9
    engine = engine_of([2.0])
    reasons = run(engine, t, v)
    spike = 8  # Reason.SPIKE
    assert reasons[0, 300] & spike
    assert not engine.usable("t0", "x") or reasons[0, 300] & spike
    assert np.all(reasons[0, 300:350] & spike)  # 100 s later: still SPIKE (hold: max(300 s, 10 periods))
    fh = engine.field_health("t0", "x")
    assert fh.status is HealthStatus.DEGRADED
    assert any("spike" in d and "noise widths" in d and "score" in d for d in fh.details)
    events = [e for e in engine.anomalies(twin="t0") if e.kind == "spike"]
    assert len(events) == 1
    e = events[0]
    assert e.t_s == 600.0
    assert e.test == "spike"
    assert e.magnitude is not None and e.magnitude > 30  # 27.9 / 0.3 = 93 noise widths
    assert e.score is not None and e.score >= 0.9999
    assert e.to_dict()["score"] == e.score


def test_level_shift_is_an_anomaly_and_a_silent_stream_goes_stale_on_its_learned_period() -> None:
    rng = np.random.default_rng(3)
    n = 600
    t = np.tile(np.arange(n) * 60.0, (2, 1))  # every minute, though the spec says the default 10 s
    v = 50 + rng.normal(0, 0.5, (2, n))
    v[0, 450:] += 6.0
    engine = engine_of([60.0, 60.0])
    reasons = run(engine, t[:, :455], v[:, :455])
    assert np.count_nonzero(reasons[:, 250:450]) == 0  # the 10 s default is not held against it
    assert reasons[0, 454] & 256  # Reason.ANOMALY
    fh = engine.field_health("t0", "x")
    assert any(d.startswith(("level shift", "trend change", "slow drift")) for d in fh.details), fh.details
    run(engine, t[:, :549], v[:, :549], start=455)
    # silence: 3 learned periods later the field is stale (not 3 configured ones)
    engine.ingest([0], [t[0, 549]], [v[0, 549]])
    engine.evaluate(float(t[0, 549]) + 100.0)
    assert "STALE" not in engine.field_health("t1", "x").reasons  # 160 s: under 3 periods
    engine.evaluate(float(t[0, 549]) + 250.0)
    assert "STALE" in engine.field_health("t1", "x").reasons
    assert any("expected every 60 s" in d for d in engine.field_health("t1", "x").details)


def test_a_declared_step_kind_keeps_only_the_silence_checks() -> None:
    n = 500
    t = np.tile(np.arange(n) * 10.0, (2, 1))
    mode = np.repeat([2.0, 5.0], [350, 150])
    engine = engine_of([10.0, 10.0], ["state", "analog"])
    reasons = run(engine, t, np.stack([mode, mode]))
    assert np.count_nonzero(reasons[0]) == 0  # a state moves in steps: no spike or shift reasons
    assert np.count_nonzero(reasons[1, 350:]) > 0  # a first ever step on a plain analog field is news


def test_modelled_room_fields_keep_their_tests() -> None:
    run_ = make_plant_run(rooms=1)
    assert not run_.engine.model_free.any()  # every room field is bound to the kernel


def test_the_legacy_fixed_tests_did_alarm_on_those_streams() -> None:
    """The baseline switch reproduces the problem the detector fixes (so the test above could fail)."""
    rng = np.random.default_rng(1)
    n = 600
    t = np.arange(n, dtype=np.float64)[None, :] * 300.0
    v = rng.poisson(0.5, n).astype(float)[None, :]
    legacy = TwinIntelligence(legacy_health=True)
    legacy.add_model(ModelSpec("m", (FieldSpec("x", expected_period_s=300.0),)))
    legacy.add_twin("t0", "m")
    assert np.count_nonzero(run(legacy, t, v)[0, 250:]) > 0  # a flat count series: STUCK now and then
    engine = engine_of([300.0])
    assert np.count_nonzero(run(engine, t, v)[0, 250:]) == 0
