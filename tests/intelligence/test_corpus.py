"""The labelled corpus is deterministic and well formed; the windowed scoring counts what it says."""

from __future__ import annotations

import numpy as np
import pytest

from drsdtp.intelligence.detect import TESTS
from drsdtp.sim.corpus import CHARACTERS, KINDS, SPLITS, generate, generate_corpus
from drsdtp.sim.corpus_eval import (
    Trace,
    aggregate,
    engine_alarms,
    false_alarm_contexts,
    missed_windows,
    score_series,
    trailing_zscore,
)


def test_corpus_is_deterministic_and_splits_differ() -> None:
    a, b = generate("periodic", "tune", 3), generate("periodic", "tune", 3)
    assert np.array_equal(a.values, b.values)
    assert np.array_equal(a.t_s, b.t_s)
    assert a.anomalies == b.anomalies
    held = generate("periodic", "heldout", 3)
    assert held.seed != a.seed
    assert not np.array_equal(held.values[:100], a.values[:100])
    seeds = {s.seed for split in SPLITS for s in generate_corpus(split, 2)}
    assert len(seeds) == len(SPLITS) * 2 * len(CHARACTERS)


@pytest.mark.parametrize("character", CHARACTERS)
def test_every_character_is_well_formed(character: str) -> None:
    for i in range(3):
        s = generate(character, "tune", i)
        n = s.values.shape[0]
        assert n >= 2500
        assert np.all(np.isfinite(s.values))
        assert np.all(np.diff(s.t_s) > 0)
        assert s.unit > 0
        assert 1 <= len(s.anomalies) <= 4
        for a in s.anomalies:
            assert a.kind in KINDS
            assert 900 <= a.start <= a.end < n
        anomalous, clean = s.labels
        assert not np.any(anomalous & clean)
        assert clean.sum() > 0.5 * n


def test_integer_and_quantised_characters_are_on_their_lattice() -> None:
    counts = generate("counts", "tune", 0).values
    assert np.array_equal(counts, np.round(counts))
    assert counts.min() >= 0
    steps = np.abs(np.diff(generate("flat", "tune", 0).values))
    assert np.mean(steps == 0) > 0.5  # long legitimate flat stretches


def test_dropout_removes_readings_and_its_window_starts_after_the_gap() -> None:
    for i in range(20):
        s = generate("irregular", "tune", i)
        drops = [a for a in s.anomalies if a.kind == "dropout"]
        if drops:
            break
    else:
        pytest.fail("no dropout among 20 irregular series")
    a = drops[0]
    gaps = np.diff(s.t_s)
    assert gaps[a.start - 1] > 5 * np.median(gaps)


def test_scoring_rewards_early_detection_and_charges_false_alarms() -> None:
    s = generate("smooth", "tune", 1)
    n = s.values.shape[0]
    perfect = np.zeros(n, bool)
    for a in s.anomalies:
        perfect[a.start] = True
    best = score_series(s, perfect)
    assert best.detected == best.windows
    assert best.false_onsets == 0
    assert aggregate([best]).nab == pytest.approx(100.0)
    late = np.zeros(n, bool)
    for a in s.anomalies:
        late[a.end] = True
    # caught at the last reading of its window: worth about nothing, so halfway between perfect and missed
    assert 45.0 < aggregate([score_series(s, late)]).nab < 55.0
    assert aggregate([score_series(s, np.zeros(n, bool))]).nab == pytest.approx(0.0)
    _, clean = s.labels
    noisy = perfect.copy()
    first_clean = np.flatnonzero(clean)[:40]
    noisy[first_clean[::4]] = True  # ten separate false alarms
    noisy[first_clean[1]] = True  # extends the first one: still one onset
    worse = score_series(s, noisy)
    assert worse.false_onsets == 10
    assert worse.false_points == 11
    assert aggregate([worse]).nab < 100.0
    assert aggregate([worse]).fa_per_10k == pytest.approx(1e4 * 10 / worse.clean)


def test_breakdown_says_why_a_window_was_missed_and_where_false_alarms_were() -> None:
    s = generate("smooth", "tune", 1)
    n = s.values.shape[0]
    a = s.anomalies[0]
    spike, shift = TESTS.index("spike"), TESTS.index("shift")
    ones = np.ones((len(TESTS), n))
    # the shift test's own p-value crossed the threshold in the window, and a habit lifted it
    own = ones.copy()
    own[[spike, shift], a.start] = 1e-7
    trace = Trace(own, ones, ones)
    misses = missed_windows([s], [np.zeros(n, bool)], [trace], 1.0 - 1e-4)
    assert len(misses) == len(s.anomalies)
    first = misses[0]
    expected_reason = "habit" if a.kind in ("spike", "shift", "drift", "variance") else "below"
    assert (first.kind, first.reason) == (a.kind, expected_reason)
    # the strongest evidence of its own, and what each stage made of it (m * p, Bonferroni over the tests)
    if a.kind in ("spike", "shift", "drift", "variance"):
        assert first.evidence in ("spike", "shift")
        assert first.own == pytest.approx(len(TESTS) * 1e-7)
        assert (first.habit, first.calibrated) == (1.0, 1.0)
    habit_only = ones.copy()
    habit_only[[spike, shift], a.start] = 1e-3
    weak = missed_windows([s], [np.zeros(n, bool)], [Trace(habit_only, habit_only, ones)], 1.0 - 1e-4)[0]
    if a.kind in ("spike", "shift", "drift", "variance"):
        assert weak.reason == "below"
        assert weak.own == weak.habit == pytest.approx(len(TESTS) * 1e-3)
        assert weak.calibrated == 1.0
    # an alarm just after the window: late; an alarm inside it: not a miss
    late = np.zeros(n, bool)
    late[a.end + 1] = True
    assert missed_windows([s], [late], [trace], 1.0 - 1e-4)[0].reason == "late"
    inside = np.zeros(n, bool)
    inside[a.start] = True
    assert len(missed_windows([s], [inside], [trace], 1.0 - 1e-4)) == len(s.anomalies) - 1
    # a false alarm at a value far from every earlier one is a first visit; one near earlier values is other
    _, clean = s.labels
    i = int(np.flatnonzero(clean)[300])
    values = s.values.copy()
    values[i] = values.max() + 100 * s.unit
    far = type(s)(s.name, s.character, s.split, s.seed, s.t_s, values, s.period_s, s.unit, s.anomalies)
    alarm = np.zeros(n, bool)
    alarm[i] = True
    tests = np.full(n, spike, np.int8)
    assert false_alarm_contexts([far], [alarm], [tests]) == {("spike", s.character, "first visit"): 1}
    values[i] = values[i - 60]
    near = type(s)(s.name, s.character, s.split, s.seed, s.t_s, values, s.period_s, s.unit, s.anomalies)
    assert false_alarm_contexts([near], [alarm], [tests]) == {("spike", s.character, "other"): 1}


def test_trailing_zscore_flags_a_big_spike_only() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 500)
    x[300] += 12
    alarms = trailing_zscore(x)
    assert alarms[300]
    assert alarms.sum() <= 3


def test_engine_baseline_batches_regular_series_like_single_runs() -> None:
    series = [generate("noisy", "tune", 0), generate("counts", "tune", 0)]
    short = [
        type(s)(s.name, s.character, s.split, s.seed, s.t_s[:400], s.values[:400], s.period_s, s.unit, ())
        for s in series
    ]
    together = engine_alarms(short)
    alone = [engine_alarms([s])[0] for s in short]
    for a, b in zip(together, alone, strict=True):
        assert np.array_equal(a, b)
