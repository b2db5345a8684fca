"""Validation floors on the simulated plant (conservative; benches/validate_intelligence.py prints figures).

One small campaign: every fault kind injected on a few rooms at a known onset, clean rooms for false alarms,
plant changes for model drift, and 15-minute forecasts scored against the true temperature.
"""

from __future__ import annotations

import pytest

from drsdtp.sim.campaign import DEFAULT_PLANS, CampaignConfig, CampaignResult, drift_bound, run_campaign

pytestmark = pytest.mark.slow

FAST_KINDS = ("stuck", "drift", "spike", "dropout", "stale")


CONFIG = CampaignConfig(
    rooms_per_plan=5,
    clean_rooms=4,
    model_drift_rooms=3,
    warmup_steps=1200,
    observe_steps=240,
    forecast_every=20,
    seed=11,
)


@pytest.fixture(scope="module")
def campaign() -> CampaignResult:
    return run_campaign(CONFIG)


def test_every_fault_kind_was_injected(campaign: CampaignResult) -> None:
    assert [k.label for k in campaign.kinds] == [p.label for p in DEFAULT_PLANS]
    assert all(k.injected == 5 for k in campaign.kinds)


@pytest.mark.parametrize("label", FAST_KINDS)
def test_faults_are_named_within_ten_samples(campaign: CampaignResult, label: str) -> None:
    kind = next(k for k in campaign.kinds if k.label == label)
    assert kind.rate_within >= 0.8, kind


def test_slow_drifts_are_found_within_the_observation(campaign: CampaignResult) -> None:
    for label in ("drift_slow", "drift_humidity"):
        kind = next(k for k in campaign.kinds if k.label == label)
        assert kind.rate >= 0.8, kind
        assert kind.median_delay < 120, kind


def test_drifts_are_caught_within_twice_the_cusum_bound(campaign: CampaignResult) -> None:
    for label in ("drift", "drift_slow", "drift_humidity"):
        kind = next(k for k in campaign.kinds if k.label == label)
        bound = drift_bound(CONFIG, label)
        assert bound is not None
        assert kind.delays
        assert max(kind.delays) <= 2.0 * bound, (label, kind.delays, bound)


def test_clean_data_raises_few_false_alarms(campaign: CampaignResult) -> None:
    assert campaign.clean_evaluations > 5000
    assert campaign.false_alarm_rate <= 0.01
    assert campaign.clean_fields_alarmed <= 0.05
    # Early in learning the nominal model may still be flagged on a clean room (then re-estimated).
    assert campaign.clean_divergence_alarmed <= 0.5


def test_plant_change_is_told_apart_from_sensor_drift(campaign: CampaignResult) -> None:
    assert campaign.model_drift.rate >= 0.6
    assert campaign.model_drift_as_sensor_fault <= 0.34
    assert campaign.sensor_drift_as_model_drift <= 0.34


def test_forecasts_beat_the_naive_last_value(campaign: CampaignResult) -> None:
    assert campaign.forecasts >= 40
    ratio = campaign.mae_ratio
    assert ratio["kernel"] <= 0.8
    assert ratio["linear"] <= 0.8
