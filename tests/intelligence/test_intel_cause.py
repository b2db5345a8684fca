"""Sensor, process or model: the verdict each field with a finding gets in its health, with its evidence.

Kernel-free models here (redundancy groups and ``depends_on`` alone decide); the room's kernel cases (a
sensor drifting against its peer, a plant change only the kernel sees) are in ``test_intel_engine.py``.
"""

from __future__ import annotations

import json

import numpy as np

from drsdtp.intelligence import FieldSpec, ModelSpec, TwinIntelligence
from drsdtp.intelligence.cause import Relations
from drsdtp.intelligence.results import FieldHealth

PERIOD = 10.0


def engine_with(*fields: FieldSpec) -> TwinIntelligence:
    engine = TwinIntelligence()
    engine.add_model(ModelSpec("m", fields))
    engine.add_twin("t", "m")
    return engine


def feed(engine: TwinIntelligence, steps: int, start: int, level: dict[str, float], seed: int = 0) -> None:
    """``steps`` readings of every field (noise 0.1 around ``level``), one pass per reading."""
    rng = np.random.default_rng(seed + start)
    names = list(level)
    rows = engine.rows([("t", f) for f in names])
    for k in range(start, start + steps):
        values = np.array([level[f] for f in names]) + rng.normal(0.0, 0.1, len(names))
        t = k * PERIOD
        engine.ingest(rows, np.full(len(names), t), values, np.full(len(names), k))
        engine.evaluate(t)


def health(engine: TwinIntelligence) -> dict[str, FieldHealth]:
    return {f.field: f for f in engine.health("t").fields}


def redundant(name: str) -> FieldSpec:
    return FieldSpec(name, expected_period_s=PERIOD, resolution=0.001, redundancy_group="a")


def test_a_spike_on_one_of_a_redundant_pair_is_the_sensor() -> None:
    engine = engine_with(redundant("a_1"), redundant("a_2"))
    feed(engine, 400, 0, {"a_1": 20.0, "a_2": 20.0})
    assert all(f.cause == "" and not f.evidence for f in health(engine).values())
    feed(engine, 1, 400, {"a_1": 25.0, "a_2": 20.0})
    a_1 = health(engine)["a_1"]
    assert "SPIKE" in a_1.reasons
    assert (a_1.cause, a_1.evidence) == ("sensor", ("a_2",))
    assert "a_2" in a_1.cause_detail and "did not move" in a_1.cause_detail
    assert json.loads(json.dumps(a_1.to_dict()))["cause"] == "sensor"


def test_a_step_both_redundant_sensors_see_is_the_process() -> None:
    engine = engine_with(redundant("a_1"), redundant("a_2"))
    feed(engine, 400, 0, {"a_1": 20.0, "a_2": 20.0})
    feed(engine, 4, 400, {"a_1": 23.0, "a_2": 23.0})
    both = health(engine)
    assert (both["a_1"].cause, both["a_1"].evidence) == ("process", ("a_2",))
    assert (both["a_2"].cause, both["a_2"].evidence) == ("process", ("a_1",))


def test_a_change_its_related_fields_follow_is_the_process_else_the_sensor() -> None:
    """``flow`` depends on ``speed``: both moving is the process; ``flow`` alone, once ``speed`` had time to
    show it, is the sensor. A field with nothing to compare with stays undecided."""
    fields = (
        FieldSpec("speed", expected_period_s=PERIOD, resolution=0.001),
        FieldSpec("flow", expected_period_s=PERIOD, resolution=0.001, depends_on=("speed",)),
        FieldSpec("other", expected_period_s=PERIOD, resolution=0.001),
    )
    level = {"speed": 50.0, "flow": 30.0, "other": 10.0}
    together = engine_with(*fields)
    feed(together, 400, 0, level)
    feed(together, 3, 400, {"speed": 55.0, "flow": 33.0, "other": 10.0})
    flow = health(together)["flow"]
    assert (flow.cause, flow.evidence) == ("process", ("speed",))

    alone = engine_with(*fields)
    feed(alone, 400, 0, level)
    feed(alone, 1, 400, {"speed": 50.0, "flow": 33.0, "other": 15.0})
    assert health(alone)["flow"].cause == ""  # speed may still follow
    feed(alone, 14, 401, {"speed": 50.0, "flow": 33.0, "other": 15.0})
    now = health(alone)
    assert (now["flow"].cause, now["flow"].evidence) == ("sensor", ("speed",))
    assert now["other"].cause == "" and "no redundant sensor or related field" in now["other"].cause_detail


def test_relations_know_which_way_a_field_depends() -> None:
    rel = Relations()
    rel.add([(1, 0), (2, 1), (3, 1)])  # flow on speed; head and power on flow
    off = np.array([False, True, True, False])
    total, hits = rel.dependents_of(off, 4)
    assert total.tolist() == [1, 2, 0, 0] and hits.tolist() == [1, 1, 0, 0]
    assert rel.depends_on_any(off, 4).tolist() == [False, False, True, True]
    has, count = rel.count_of(off, 4)  # both directions
    assert has.tolist() == [True] * 4 and count.tolist() == [1, 1, 1, 1]
