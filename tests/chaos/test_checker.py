"""The chaos check's own parts, without processes: the classification of writes and the fault schedule."""

from __future__ import annotations

import itertools

from .checker import classify
from .schedule import KINDS, plan, timeline
from .writer import Write

NODES = ["a", "b", "c"]


def holding(*writes: Write) -> dict[str, dict[str, object]]:
    """A node's state (twin -> field -> value) holding ``writes``."""
    state: dict[str, dict[str, object]] = {}
    for w in writes:
        state.setdefault(w.twin, {})[w.field] = float(w.seq)
    return state


def test_a_write_is_lost_where_its_field_or_value_is_missing() -> None:
    w0, w1, w2 = Write("a", 0), Write("a", 1), Write("b", 0)
    states: dict[str, dict[str, dict[str, object]]] = {
        "a": holding(w0, w1, w2),
        "b": holding(w0, w2),  # lacks w1
        "c": {**holding(w0, w2), w1.twin: {w1.field: 7.0}},  # w1's field, but another value
    }
    verdict = classify(states, {"a": 1, "b": 1, "c": 1}, acked={w0, w1}, sent=[w0, w1, w2])
    assert verdict.lost == {"a": [], "b": [w1], "c": [w1]}
    assert verdict.present == 4
    assert verdict.unacked_present == 1  # w2, on every node
    assert verdict.converged and not verdict.ok


def test_equal_digests_and_every_write_present_is_ok_anything_less_is_not() -> None:
    w = Write("c", 5)
    states = {n: holding(w) for n in NODES}
    assert classify(states, dict.fromkeys(NODES, 9), {w}, [w]).ok
    assert not classify(states, {"a": 9, "b": 9, "c": 8}, {w}, [w]).ok
    unreachable = classify(states, {"a": 9, "b": 9}, {w}, [w])
    unreachable.unreachable = ["c"]
    assert not unreachable.ok


def test_a_schedule_is_fixed_by_its_seed_and_holds_every_kind() -> None:
    for seed in range(50):
        faults = plan(seed, NODES, 30.0)
        assert faults == plan(seed, NODES, 30.0)
        assert {f.kind for f in faults} == set(KINDS), seed
        assert all(0 < f.start_s < f.end_s and f.start_s < 30.0 for f in faults)
    assert plan(1, NODES, 30.0) != plan(2, NODES, 30.0)


def test_process_faults_and_clock_jumps_never_overlap_on_one_node() -> None:
    for seed in range(50):
        faults = plan(seed, NODES, 60.0)
        for group in (("kill", "kill+link", "pause"), ("clock+", "clock-")):
            chosen = [f for f in faults if f.kind in group]
            for f, g in itertools.combinations(chosen, 2):
                assert f.node != g.node or f.end_s <= g.start_s or g.end_s <= f.start_s, (seed, f, g)
        for f in faults:
            if f.kind == "clock+":
                assert f.offset_ms > 500  # beyond the peers' max offset: they must refuse
            if f.kind == "clock-":
                assert f.offset_ms < 0
        steps = timeline(faults)
        assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)
