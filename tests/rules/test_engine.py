"""The rule engine over a real store: durations, hysteresis, grouping by shape, and isolation of a failure."""

from __future__ import annotations

from typing import Any

import pytest

from drsdtp._core import Store
from drsdtp.errors import ConfigError
from drsdtp.rules.engine import RuleEngine
from drsdtp.rules.expr import Load
from drsdtp.rules.inputs import StoreSource
from drsdtp.rules.spec import parse_rules


def engine(store: Store, *rules: dict[str, Any]) -> RuleEngine:
    e = RuleEngine(parse_rules(list(rules)), StoreSource(store))
    e.layout(store.twins())
    return e


def kinds(e: RuleEngine, now: float) -> list[tuple[str, str, str]]:
    return sorted((ev.rule.name, ev.twin, ev.kind) for ev in e.evaluate(now, now))


def test_for_duration_then_deadband_hysteresis() -> None:
    store = Store(1)
    for twin in ("room-1", "room-2", "hall"):
        store.set(twin, "t", 20.0)
    e = engine(store, {"name": "hot", "twins": "room-*", "when": "t > 30", "for": "10s", "deadband": 2.0})
    assert e.slots == 2  # the hall is not a room
    store.set("room-1", "t", 31.0)
    assert kinds(e, 100.0) == []  # holds, not yet for 10 s
    assert kinds(e, 105.0) == []
    assert kinds(e, 110.0) == [("hot", "room-1", "raise")]
    assert kinds(e, 111.0) == []  # active: no second raise
    store.set("room-1", "t", 29.0)  # below 30 but within the deadband: stays active
    assert kinds(e, 112.0) == []
    store.set("room-1", "t", 27.9)
    assert kinds(e, 113.0) == [("hot", "room-1", "clear")]
    store.set("room-1", "t", 31.0)
    store.set("room-2", "t", 35.0)
    assert kinds(e, 114.0) == []  # the duration starts again
    store.set("room-1", "t", 29.0)  # fell back before `for` elapsed: no raise
    assert kinds(e, 124.0) == [("hot", "room-2", "raise")]


def test_clear_when_and_missing_fields() -> None:
    store = Store(1)
    store.set("p-1", "flow", 1.0)
    e = engine(
        store,
        {"name": "dry", "twins": ["p-*"], "when": "flow < 0.5 and quality(flow) > 0.2",
         "clear_when": "flow > 2"},
    )  # fmt: skip
    store.set("p-1", "flow", 0.1)
    assert kinds(e, 1.0) == [("dry", "p-1", "raise")]
    store.set("p-1", "flow", 1.5)
    assert kinds(e, 2.0) == []
    store.set("p-1", "flow.q", 0.1)
    store.set("p-1", "flow", 2.5)
    assert kinds(e, 3.0) == [("dry", "p-1", "clear")]
    store.set("p-1", "flow", 0.1)  # quality too low now: no raise
    assert kinds(e, 4.0) == []


def test_rules_of_one_shape_share_a_group_and_a_failing_rule_is_isolated() -> None:
    store = Store(1)
    for i in range(20):
        store.set(f"m-{i:02d}", "x", float(i))
    rules = [{"name": f"r{i}", "twins": f"m-{i:02d}", "when": f"x > {i - 0.5}"} for i in range(20)]
    e = engine(store, *rules)
    assert len(e.groups) == 1 and e.slots == 20
    e.fail(e.by_name["r3"], "its action failed", 0.0)  # suspended for a while
    fired = kinds(e, 1.0)
    assert len(fired) == 19 and ("r3", "m-03", "raise") not in fired
    assert e.status[3].errors == 1 and "its action failed" in e.status[3].last_error
    assert kinds(e, 1000.0) == [("r3", "m-03", "raise")]  # back after the hold


def test_layout_keeps_state_and_starts_from_active_alarms() -> None:
    store = Store(1)
    store.set("a-1", "x", 5.0)
    rules = parse_rules([{"name": "x", "twins": "a-*", "when": "x > 1"}])
    e = RuleEngine(rules, StoreSource(store))
    e.layout(store.twins(), lambda rule, twin: True)  # the alarm is active in the store (a restart)
    assert kinds(e, 1.0) == []
    store.set("a-2", "x", 5.0)
    e.layout(store.twins())
    assert kinds(e, 2.0) == [("x", "a-2", "raise")]  # a-1 kept its state across the new layout


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"twins": "a", "when": "x > 1"}, "rules[0].name", "is required"),
        ({"name": "r", "twins": "a", "when": "x >"}, "rules[0].when", "expected a value"),
        ({"name": "r", "twins": "a", "when": "x > 1", "for": "soon"}, "rules[0].for", "not a duration"),
        ({"name": "r", "twins": "a", "when": "x > 1", "severity": "meh"}, "rules[0].severity", "one of"),
        ({"name": "r", "twins": "a", "when": "x > 1", "clear_when": "x < 0", "deadband": 1},
         "rules[0].deadband", "not both"),
        ({"name": "r", "twins": "a", "when": "x > 1", "actions": [{"type": "notify", "target": "ops"}]},
         "rules[0].actions[0].target", "no [[notify]] target named 'ops'"),
        ({"name": "r", "twins": "a", "when": "x > 1", "wehn": 1}, "rules[0].wehn", "unknown key"),
        ({"name": "r", "twins": "a", "when": "x > 1", "actions": [{"type": "set_desired", "field": "s"}]},
         "rules[0].actions[0].value", "needs a value"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules([table], notify_targets=[])
    assert info.value.key == key and message in info.value.reason


def test_age_and_quality_inputs_from_the_store() -> None:
    store = Store(1)
    store.set("s-1", "x", 1.0)
    source = StoreSource(store)
    written_s = (store.entry("s-1", "x") or (0, 0, 0, 0))[1] / 65536 / 1000  # the HLC stamp's seconds
    (age,) = source.read("age", source.prepare("age", [("s-1", "x")]), written_s + 42.0)
    assert abs(age - 42.0) < 0.01
    quality = source.read("quality", source.prepare("quality", [("s-1", "x"), ("s-1", "nope")]), 0.0)
    assert quality.tolist() == [1.0, 1.0]  # no score written yet: nothing known against the field
    store.set("s-1", "x.q", 0.25)
    assert source.read_one(Load("quality", "x"), "s-1", 0.0) == 0.25
    (missing,) = source.read("age", source.prepare("age", [("s-1", "never")]), 0.0)
    assert missing == float("inf")
    (tte,) = source.read("tte", source.prepare("tte", [("s-1", "x")]), 0.0)
    assert tte == float("inf")  # no intelligence: never forecast to cross
