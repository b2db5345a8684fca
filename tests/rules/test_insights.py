"""Rule inputs from the intelligence engine's last pass: time to threshold from a real trending field's
forecast, the anomaly flag of a field, and the conditions over them evaluated by a rule."""

from __future__ import annotations

import math

import numpy as np

from drsdtp._core import Store
from drsdtp.intelligence import FieldSpec, IntelligenceConfig, ModelSpec, TwinIntelligence
from drsdtp.rules.alerting import EngineInsights
from drsdtp.rules.engine import RuleEngine
from drsdtp.rules.inputs import StoreSource
from drsdtp.rules.spec import parse_rules

PERIOD_S = 10.0


def trending_engine() -> tuple[TwinIntelligence, float]:
    """Two tanks: tank-1's level rises 0.01/s towards its high limit of 100, tank-2's is flat."""
    spec = ModelSpec(
        "tank", (FieldSpec("level", expected_period_s=PERIOD_S, resolution=0.01, high_limit=100.0),)
    )
    engine = TwinIntelligence(IntelligenceConfig(capacity=200))
    engine.add_model(spec)
    engine.add_twin("tank-1", "tank")
    engine.add_twin("tank-2", "tank")
    rows = np.array([engine.row("tank-1", "level"), engine.row("tank-2", "level")])
    rng = np.random.default_rng(0)
    for k in range(120):
        t = k * PERIOD_S
        values = np.array([80.0 + 0.01 * t, 50.0]) + rng.normal(0, 0.01, 2)
        engine.ingest(rows, np.full(2, t), values, np.full(2, k))
    now = 119 * PERIOD_S
    engine.evaluate(now)
    return engine, now


def test_time_to_threshold_and_anomaly_from_the_last_pass() -> None:
    engine, _ = trending_engine()
    insights = EngineInsights(lambda: engine)
    rows = insights.rows([("tank-1", "level"), ("tank-2", "level"), ("tank-9", "level")])
    assert rows[2] == -1  # no such twin in the engine
    tte = insights.time_to_threshold(rows)
    # 80 + 0.01 * 1190 = 91.9 now; 8.1 to go at 0.01/s: about 810 s.
    assert 700 < tte[0] < 920, tte
    assert math.isinf(tte[1]) and math.isinf(tte[2])  # flat: never; unknown: never
    anomaly = insights.anomaly(rows)
    assert anomaly[0] == 0.0 and anomaly[1] == 0.0 and math.isnan(anomaly[2])


def test_a_forecast_rule_fires_on_the_twin_heading_for_its_limit() -> None:
    engine, now = trending_engine()
    store = Store(1)
    for twin in ("tank-1", "tank-2"):
        store.set(twin, "level", 1.0)
    rules = parse_rules([{"name": "filling", "twins": "tank-*", "when": "time_to_threshold(level) < 20 min"}])
    rule_engine = RuleEngine(rules, StoreSource(store, EngineInsights(lambda: engine)))
    rule_engine.layout(store.twins())
    fired = [(e.twin, e.kind) for e in rule_engine.evaluate(now, now)]
    assert fired == [("tank-1", "raise")]
