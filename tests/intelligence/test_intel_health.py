"""Sensor health detectors on synthetic arrays: each fault is named, clean data is not."""

from __future__ import annotations

import numpy as np
import pytest

from drsdtp.errors import ConfigError
from drsdtp.intelligence import FieldSpec, HealthConfig, HealthStatus, ModelSpec, TwinIntelligence
from drsdtp.sim.harness import Feed, make_feed


def trending(feed: Feed) -> np.ndarray:
    # Every twin follows its own slow trend (shared by its fields, which may be redundant sensors), with a
    # change of slope at step 150 (a heater switching on).
    fields = len(feed.engine.models["generic"].fields)
    twins = feed.rows.size // fields
    slopes = np.repeat(np.linspace(-0.002, 0.002, twins), fields)
    k = feed.step
    bend = max(k - 150, 0) * 0.02
    out: np.ndarray = 20.0 + slopes * k + bend
    return out


def reasons(feed: Feed, twin: str, field: str) -> tuple[str, ...]:
    return feed.engine.field_health(twin, field).reasons


def test_clean_noisy_trending_data_raises_nothing() -> None:
    feed = make_feed(twins=25, fields=4, grouped=True, seed=3)
    flagged = 0
    for _ in range(400):
        feed.push(trending(feed) + feed.rng.normal(0, 0.05, feed.rows.size))
        if feed.step > 60:
            flagged += int(np.count_nonzero(feed.engine.last.health.reasons))  # type: ignore[union-attr]
    assert flagged == 0
    h = feed.engine.health("t0")
    assert h.status is HealthStatus.HEALTHY
    assert h.quality == 1.0
    assert feed.engine.quality_fields("t0") == {"s0.q": 1.0, "s1.q": 1.0, "s2.q": 1.0, "s3.q": 1.0}


def warm(feed: Feed, steps: int = 250) -> None:
    # generic fields are watched by the model-free detector, which learns for its first 200 readings
    for _ in range(steps):
        feed.push(trending(feed) + feed.rng.normal(0, 0.05, feed.rows.size))


def test_stuck_sensor_is_flagged_within_the_run_length() -> None:
    feed = make_feed()
    warm(feed)
    frozen = None
    flagged_after = None
    for readings in range(1, 41):
        v = trending(feed) + feed.rng.normal(0, 0.05, feed.rows.size)
        frozen = v[1] if frozen is None else frozen
        v[1] = frozen
        feed.push(v)
        if "STUCK" in reasons(feed, "t0", "s1"):
            flagged_after = readings
            break
    assert flagged_after is not None
    # a flat line is unusual only relative to the field's history: this one never repeated a value
    assert flagged_after <= 25
    fh = feed.engine.field_health("t0", "s1")
    assert fh.status is HealthStatus.FAILED
    assert fh.quality < 0.3
    assert reasons(feed, "t0", "s0") == ()


def test_single_spike_is_flagged_and_a_step_change_is_not() -> None:
    feed = make_feed()
    warm(feed)
    v = trending(feed) + feed.rng.normal(0, 0.05, feed.rows.size)
    v[2] += 2.0
    feed.push(v)
    assert "SPIKE" in reasons(feed, "t0", "s2")
    assert not feed.engine.usable("t0", "s2")  # the latest value itself is the outlier
    warm(feed, 20)
    assert "SPIKE" in reasons(feed, "t0", "s2")  # held: still visible 200 s later
    assert feed.engine.usable("t0", "s2")
    warm(feed, 20)
    assert "SPIKE" not in reasons(feed, "t0", "s2")  # the hold is 300 s
    for _ in range(40):  # a genuine level shift on s3 (door opened): rapid change, not a spike storm
        v = trending(feed) + feed.rng.normal(0, 0.05, feed.rows.size)
        v[3] += 3.0
        feed.push(v)
    traits = feed.engine.traits("t0", "s3")
    assert "SPIKE" not in reasons(feed, "t0", "s3")
    assert "ANOMALY" in reasons(feed, "t0", "s3")
    assert traits.value is not None
    assert traits.value > 22.0
    assert any(e.kind == "rapid_change" for e in traits.anomalies)
    kinds = [e.kind for e in feed.engine.anomalies(twin="t0") if e.field == "s3"]
    assert kinds[0] == "spike"  # at its first reading a shift looks like a spike,
    assert kinds[1] in ("level_shift", "trend_change", "slow_drift")  # the next ones tell


def test_spike_between_sparse_passes_is_still_seen() -> None:
    feed = make_feed(twins=1, fields=2)
    warm(feed)
    for k in range(6):  # six readings arrive, the pass runs only after the last one
        v = trending(feed) + feed.rng.normal(0, 0.05, 2)
        if k == 1:
            v[0] += 2.0
        feed.engine.ingest(feed.rows, np.full(2, feed.step * 10.0), v, np.full(2, feed.step))
        feed.step += 1
    feed.engine.evaluate((feed.step - 1) * 10.0)
    assert "SPIKE" in reasons(feed, "t0", "s0")
    assert feed.engine.usable("t0", "s0")  # the current value is fine, only an older reading was off
    assert reasons(feed, "t0", "s1") == ()


def test_silence_is_stale_and_dropout_but_replay_is_only_stale() -> None:
    feed = make_feed(twins=1, fields=3)
    warm(feed)
    last: dict[str, tuple[float, float, int]] = {}
    for _ in range(5):
        v = trending(feed) + feed.rng.normal(0, 0.05, 3)
        mask = np.array([True, False, False])  # s1 goes silent
        t = feed.step * 10.0
        feed.engine.ingest(feed.rows[mask], np.full(1, t), v[mask], np.full(1, feed.step))
        # s2's gateway replays its last reading (same seq and time) instead of new ones
        last.setdefault("s2", (t, float(v[2]), feed.step))
        feed.engine.ingest([2], [last["s2"][0]], [last["s2"][1]], [last["s2"][2]])
        feed.engine.evaluate(t)
        feed.step += 1
    assert set(reasons(feed, "t0", "s1")) == {"STALE", "DROPOUT"}
    assert set(reasons(feed, "t0", "s2")) == {"STALE"}
    details = feed.engine.field_health("t0", "s2").details
    assert any("re-send" in d for d in details)
    assert reasons(feed, "t0", "s0") == ()


def test_sequence_gaps_are_dropout() -> None:
    feed = make_feed(twins=1, fields=2)
    warm(feed)
    for k in range(6):
        mask = np.array([True, k % 2 == 0])
        feed.push(trending(feed) + feed.rng.normal(0, 0.05, 2), mask)
    assert "DROPOUT" in reasons(feed, "t0", "s1")
    assert feed.engine.field_health("t0", "s1").quality < 0.8


def test_out_of_range_fails_the_field() -> None:
    feed = make_feed(twins=1, fields=2)
    warm(feed)
    v = trending(feed)
    v[0] = 500.0
    feed.push(v)
    fh = feed.engine.field_health("t0", "s0")
    assert "OUT_OF_RANGE" in fh.reasons
    assert fh.quality == 0.0


def test_redundant_sensor_drift_is_blamed_on_the_drifting_one_only() -> None:
    feed = make_feed(twins=1, fields=3, grouped=True)
    warm(feed, 150)
    first = None
    for k in range(60):
        v = trending(feed) + feed.rng.normal(0, 0.05, 3)
        v[0] += 0.03 * k
        feed.push(v)
        if first is None and "DRIFT" in reasons(feed, "t0", "s0"):
            first = k
    assert first is not None
    assert first < 15
    assert "DRIFT" not in reasons(feed, "t0", "s1")  # with three sensors the median tells who drifts
    assert "DRIFT" not in reasons(feed, "t0", "s2")


def test_constant_calibration_offset_is_not_drift() -> None:
    feed = make_feed(twins=1, fields=2, grouped=True)
    for _ in range(300):
        v = trending(feed) + feed.rng.normal(0, 0.05, 2)
        v[1] += 0.4
        feed.push(v)
    assert reasons(feed, "t0", "s1") == ()


def test_drift_alarm_clears_after_recalibration() -> None:
    feed = make_feed(twins=1, fields=3, grouped=True)
    warm(feed, 150)
    for k in range(40):
        v = trending(feed) + feed.rng.normal(0, 0.05, 3)
        v[0] += 0.05 * k
        feed.push(v)
    assert "DRIFT" in reasons(feed, "t0", "s0")
    warm(feed, 120)  # the sensor was recalibrated: back on the truth
    assert "DRIFT" not in reasons(feed, "t0", "s0")


def test_non_analog_fields_skip_noise_detectors() -> None:
    spec = ModelSpec(
        "act", (FieldSpec("valve", expected_period_s=10.0, analog=False, valid_min=0, valid_max=1),)
    )
    engine = TwinIntelligence()
    engine.add_model(spec)
    engine.add_twin("a", "act")
    for k in range(100):
        engine.ingest([0], [k * 10.0], [1.0 if (k // 20) % 2 else 0.0], [k])
        engine.evaluate(k * 10.0)
        assert engine.field_health("a", "valve").reasons == ()


def test_health_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        HealthConfig(recent=4)
    with pytest.raises(ConfigError):
        HealthConfig(quality_threshold=0.9, degraded_below=0.8)
    with pytest.raises(ConfigError):
        FieldSpec("x.q")
