"""The model-free detector: calibrated on clean streams of many characters, and each anomaly kind is named.

Fields of a detector are independent (every per-field operation is row-wise), so the module feeds every
stream its tests need as fields of ONE detector, reading by reading (``shared``): one pass of about 6,000
steps instead of one per test. Each test reads its own block of rows; the assertions are those of separate
runs (``test_repeated_rows_in_one_batch_equal_reading_by_reading`` checks the batching itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from drsdtp.errors import InvalidValueError
from drsdtp.intelligence.detect import TESTS, DetectorConfig, ScoreBatch, StreamDetector
from drsdtp.sim.corpus import Series, generate

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Probe = Callable[[StreamDetector], None]


def feed(t: FloatArray, v: FloatArray) -> tuple[StreamDetector, list[ScoreBatch]]:
    """Rows of ``t``/``v`` are fields, columns readings in time order; one update per column."""
    det = StreamDetector(fields=v.shape[0])
    rows = np.arange(v.shape[0])
    out = [det.update(rows, t[:, k], v[:, k]) for k in range(v.shape[1])]
    return det, out


def onsets(alarm: BoolArray) -> int:
    return int(np.count_nonzero(alarm[:, 1:] & ~alarm[:, :-1]) + np.count_nonzero(alarm[:, 0]))


def grid(fields: int, n: int, period: float = 10.0) -> FloatArray:
    return np.tile(np.arange(n) * period, (fields, 1))


def random_walk(rng: np.random.Generator, fields: int, n: int, innov: float, noise: float) -> FloatArray:
    walk = np.cumsum(rng.normal(0, innov, (fields, n)), axis=1)
    out: FloatArray = 20.0 + walk + rng.normal(0, noise, (fields, n))
    return out


@dataclass(slots=True)
class Block:
    """One test's fields in the shared run: its rows, and per reading of its own the score, alarm, test
    and magnitude."""

    rows: slice
    score: FloatArray
    alarm: BoolArray
    test: npt.NDArray[np.int8]
    magnitude: FloatArray

    @property
    def index(self) -> npt.NDArray[np.intp]:
        return np.arange(self.rows.start, self.rows.stop)


@dataclass(slots=True)
class Shared:
    det: StreamDetector
    blocks: dict[str, Block]
    probed: dict[str, object] = field(default_factory=dict)


def run_blocks(
    streams: dict[str, tuple[FloatArray, FloatArray]], probes: dict[int, list[Probe]] | None = None
) -> Shared:
    """Feed every block's ``(t, v)`` (fields x readings) as rows of one detector, one update per column
    (shorter blocks drop out when their readings end); ``probes[k]`` run after column ``k``."""
    sizes = [v.shape[0] for _, v in streams.values()]
    n = max(v.shape[1] for _, v in streams.values())
    t_all = np.full((sum(sizes), n), np.nan)
    v_all = np.full((sum(sizes), n), np.nan)
    slices: dict[str, slice] = {}
    at = 0
    for (name, (t, v)), size in zip(streams.items(), sizes, strict=True):
        t_all[at : at + size, : t.shape[1]] = t
        v_all[at : at + size, : v.shape[1]] = v
        slices[name] = slice(at, at + size)
        at += size
    det = StreamDetector(fields=t_all.shape[0])
    score = np.zeros(v_all.shape)
    alarm = np.zeros(v_all.shape, bool)
    test = np.zeros(v_all.shape, np.int8)
    magnitude = np.zeros(v_all.shape)
    present = np.isfinite(v_all)
    for k in range(n):
        rows = np.flatnonzero(present[:, k])
        b = det.update(rows, t_all[rows, k], v_all[rows, k])
        score[rows, k], alarm[rows, k], test[rows, k], magnitude[rows, k] = (
            b.score,
            b.alarm,
            b.test,
            b.magnitude,
        )
        for probe in (probes or {}).get(k, []):
            probe(det)
    blocks = {}
    for name, sl in slices.items():
        m = streams[name][1].shape[1]  # the block's own length: no padding in its arrays
        blocks[name] = Block(sl, score[sl, :m], alarm[sl, :m], test[sl, :m], magnitude[sl, :m])
    return Shared(det, blocks)


CHARACTERS = ("wander", "heavy_tails", "sparse_counts", "counts", "noiseless_periodic", "quantised")
PER = 12


def clean_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(5)
    n = 2500
    t = grid(PER, n)
    day = 2 * np.pi * t / 86_400.0 * 30  # about 3.5 cycles over the series
    blocks = [
        random_walk(rng, PER, n, 0.02, 0.1),
        50 + rng.standard_t(3, (PER, n)),
        rng.poisson(0.3, (PER, n)).astype(float),  # long flat stretches of zeros
        rng.poisson(30, (PER, n)).astype(float),
        40 + 10 * np.sin(day),
        np.round(random_walk(rng, PER, n, 0.01, 0.05) / 0.1) * 0.1,
    ]
    return np.concatenate([t] * len(blocks)), np.concatenate(blocks)


KINDS = {  # kind: tests that may name it, readings allowed after the onset
    "spike": ({"spike", "spike_back"}, 2),
    "shift": ({"spike", "shift", "trend", "drift"}, 10),
    "variance": ({"variance", "spike", "spike_back", "shift"}, 40),
    "flat": ({"flat"}, 30),
    "drift": ({"drift", "trend", "shift", "level"}, 200),
    "gap": ({"gap"}, 1),
}
AT = 1500


def inject(kind: str, v: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    v, t, at = v.copy(), t.copy(), AT
    if kind == "spike":
        v[at] += 12 * 0.1
    elif kind == "shift":
        v[at:] += 6 * 0.1
    elif kind == "variance":
        v[at : at + 150] += np.random.default_rng(9).normal(0, 0.6, 150)
    elif kind == "flat":
        v[at : at + 100] = v[at - 1]
    elif kind == "drift":
        v[at:] += np.minimum(np.arange(v.size - at) / 200.0, 1.0) * 20 * 0.1
    elif kind == "gap":
        t[at:] += 60 * 10.0
    return v, t


def kinds_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(3)
    n = 2000
    base = 20.0 + np.cumsum(rng.normal(0, 0.005, n)) + rng.normal(0, 0.1, n)
    pairs = [inject(kind, base, np.arange(n, dtype=np.float64) * 10.0) for kind in KINDS]
    return np.stack([p[1] for p in pairs]), np.stack([p[0] for p in pairs])


def learning_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(0)
    v = random_walk(rng, 3, 300, 0.02, 0.1)
    v[:, 100] += 50.0
    return grid(3, 300), v


def sparse_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(2)
    n = 4000
    v = rng.poisson(0.2, (5, n)).astype(float)
    v[:, 3000] = 15.0
    return grid(5, n, 300.0), v


def flat_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(4)
    n = 3000
    noisy = 20 + rng.normal(0, 0.1, n)
    noisy[2000:2100] = noisy[1999]
    habit = np.repeat(np.round(rng.uniform(0, 10, n // 100)), 100)  # a setpoint held for 100 readings
    return grid(2, n), np.stack([noisy, habit])


def irregular_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(6)
    n = 3000
    gaps = rng.exponential(20.0, (4, n))
    gaps[:, 2500] = 2000.0  # 100 mean gaps of silence
    t = np.cumsum(gaps, axis=1)
    v = random_walk(rng, 4, n, 0.01, 0.05)
    return t, v


WEEKLY_AT = 288 * 18 + 100


def weekly_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(11)
    n = 288 * 21  # three weeks
    t = np.arange(n) * 300.0 + 3 * 86_400.0
    day = np.tanh(4 * (np.sin(2 * np.pi * t / 86_400.0) - 0.2))
    quiet = (np.floor(t / 86_400.0) % 7) >= 5
    habit = 50 + 20 * day - 8 * quiet + rng.normal(0, 0.1, n)
    habit[WEEKLY_AT] += 2.0
    walk = random_walk(rng, 1, n, 0.05, 0.1)[0]
    return np.stack([t, t]), np.stack([habit, walk])


def toggle_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(11)
    n = 3000
    # a reading through a coarse quantum (0.1): flat at 20.0, a one-step toggle for a reading now and then
    flat = np.full(n, 20.0)
    flat[100] = 20.1  # its resolution shows in the warm-up
    flat[rng.choice(np.arange(250, n - 10), 12, replace=False)] = 20.1
    flat[2600] = 21.0  # ten steps: a spike
    # the same field never moved before: its first toggle is one step of the last decimal it is written
    # with; a field that never moved and then steps 2.0 -> 5.0 (three steps of its decimal) is news
    fresh = np.full(n, 20.0)
    fresh[1500] = 20.1
    fresh[2600] = 21.0
    step = np.repeat([2.0, 5.0], [350, n - 350])
    return grid(3, n), np.stack([flat, fresh, step])


def setpoint_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(3)
    n = 2400
    # a setpoint (noise 0.05) moving 20 <-> 30 four times, then a first visit to 32 (+12: like its +10s),
    # back to 20, a one-reading glitch of +11 (comes back: news), and a held jump of +120 (a size never seen)
    levels = [20.0, 30.0, 20.0, 30.0, 20.0, 32.0, 20.0, 140.0]
    level = np.repeat(levels, [400, 200, 200, 200, 200, 300, 500, 400])
    v = level + rng.normal(0, 0.05, n)
    v[1800] += 11.0
    return grid(1, n), v[None, :]


def holder_streams() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(5)
    # a setpoint (noise 0.05) whose jumps hold: +10, -8, +11, -12, then a jump of a size it never made
    # (+39: over three times its others, so not alike them) to a level it keeps, and later a one-reading
    # glitch of +8 (comes back: news)
    levels = [20.0, 30.0, 22.0, 33.0, 21.0, 60.0, 45.0]
    v = np.repeat(levels, [400, 250, 250, 250, 250, 300, 300]) + rng.normal(0, 0.05, 2000)
    v[1900] += 8.0
    return grid(1, 2000), v[None, :]


#: series of the corpus's ``tune`` split the tests below look at
CORPUS = {
    "step": ("step", 1),
    "quantised": ("quantised", 3),
    "coarse": ("flat", 2),
    "periodic": ("periodic", 3),
}


def corpus_series(name: str) -> Series:
    character, index = CORPUS[name]
    return generate(character, "tune", index)


def turn_index(s: Series) -> int:
    """The periodic series' third reading into its second Saturday (day 12)."""
    return int(np.searchsorted(s.t_s, 12 * 86_400.0)) + 2


@pytest.fixture(scope="module")
def shared() -> Shared:
    streams = {
        "clean": clean_streams(),
        "kinds": kinds_streams(),
        "learning": learning_streams(),
        "sparse": sparse_streams(),
        "flat": flat_streams(),
        "irregular": irregular_streams(),
        "weekly": weekly_streams(),
        "toggle": toggle_streams(),
        "setpoint": setpoint_streams(),
        "holder": holder_streams(),
    }
    for name in CORPUS:
        s = corpus_series(name)
        streams[name] = (s.t_s[None, :], s.values[None, :])
    # the weekday offsets and the noise unit as they are just after the turn into day 12
    periodic = corpus_series("periodic")
    at = turn_index(periodic)
    probed: dict[str, object] = {}
    row = sum(v.shape[0] for _, v in streams.values()) - 1  # "periodic" is the last block

    def probe(det: StreamDetector) -> None:
        r = np.array([row], np.intp)
        probed["turn"] = float(det.seasonal.day_turn(r, periodic.t_s[at : at + 1], det.period[r])[0])
        probed["noise"] = float(det.noise[row])

    out = run_blocks(streams, {at: [probe]})
    out.probed.update(probed)
    return out


def test_clean_streams_of_many_characters_are_calibrated(shared: Shared) -> None:
    warm = DetectorConfig().warmup
    clean = shared.blocks["clean"]
    score, alarm = clean.score[:, warm:], clean.alarm[:, warm:]
    # a score above s happens at most about a fraction 1 - s of clean readings (Bonferroni: often less)
    for s in (0.9, 0.99, 0.999):
        assert np.mean(score > s) <= 1.5 * (1 - s), s
    assert onsets(alarm) <= 2e-4 * score.size  # ~ the 1-per-10k goal, with room for chance


@pytest.mark.parametrize("character", CHARACTERS)
def test_false_alarms_per_character(shared: Shared, character: str) -> None:
    i = CHARACTERS.index(character)
    block = shared.blocks["clean"].alarm[PER * i : PER * (i + 1), DetectorConfig().warmup :]
    # Student-t with 3 degrees of freedom is the heaviest tail here: a known weak spot (~5 per 10k)
    limit = 1e-3 if character == "heavy_tails" else 2e-4
    assert onsets(block) <= max(2, limit * block.size)


def test_nothing_is_scored_while_learning(shared: Shared) -> None:
    b = shared.blocks["learning"]
    assert not b.alarm[:, : DetectorConfig().warmup - 1].any()
    assert np.all(b.score[:, : DetectorConfig().warmup - 1] == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_each_anomaly_kind_is_detected_and_named(shared: Shared, kind: str) -> None:
    b = shared.blocks["kinds"]
    score, alarm, test = b.score, b.alarm, b.test
    i = list(KINDS).index(kind)
    expected, within = KINDS[kind]
    assert not alarm[i, 200:AT].any()  # clean before
    hits = np.flatnonzero(alarm[i, AT : AT + within + 1])
    assert hits.size, f"{kind}: best score {score[i, AT : AT + within + 1].max()}"
    first = AT + int(hits[0])
    assert TESTS[int(test[i, first])] in expected
    assert b.magnitude[i, first] > 3.0  # in the field's own units: noise widths, readings or periods


def test_sparse_count_series_flags_a_burst_but_not_its_zeros(shared: Shared) -> None:
    b = shared.blocks["sparse"]
    alarm = b.alarm
    assert alarm[:, 3000].all()
    others = alarm.copy()
    others[:, 3000:3050] = False  # the burst and its alarm's release
    assert onsets(others) <= 2


def test_a_field_that_used_to_be_noisy_going_flat_is_stuck_but_a_flat_habit_is_not(shared: Shared) -> None:
    b = shared.blocks["flat"]
    alarm, test = b.alarm, b.test
    first = 2000 + int(np.flatnonzero(alarm[0, 2000:2100])[0])
    assert TESTS[int(test[0, first])] == "flat"
    assert not (alarm[1, 200:] & (test[1, 200:] == TESTS.index("flat"))).any()


def test_irregular_sampling_learns_its_period_and_flags_a_long_silence(shared: Shared) -> None:
    b, det = shared.blocks["irregular"], shared.det
    t, _ = irregular_streams()
    alarm, test = b.alarm, b.test
    assert alarm[:, 2500].all()
    assert np.all(test[:, 2500] == TESTS.index("gap"))
    assert onsets(alarm[:, 200:2500]) <= 1
    assert np.all((det.period[b.rows] > 8) & (det.period[b.rows] < 20))  # median gap of Exp(20): 13.9 s
    stale, periods = det.staleness(b.index, float(t[:, -1].max()) + 3000.0)
    assert np.all(stale >= DetectorConfig().threshold)
    assert np.all(periods > 100)


def test_repeated_rows_in_one_batch_equal_reading_by_reading() -> None:
    rng = np.random.default_rng(8)
    n = 400
    v = random_walk(rng, 2, n, 0.02, 0.1)
    t = grid(2, n)
    _, one = feed(t, v)
    det = StreamDetector(fields=2)
    rows = np.repeat([0, 1], n)  # every reading of field 0, then every reading of field 1
    batch = det.update(rows, t.ravel(), v.ravel())
    assert np.allclose(batch.score[:n], np.array([b.score[0] for b in one]))
    assert np.allclose(batch.score[n:], np.array([b.score[1] for b in one]))


def test_bad_input_is_refused_with_a_clear_error() -> None:
    det = StreamDetector(fields=2)
    with pytest.raises(InvalidValueError, match="row out of range"):
        det.update([5], [0.0], [1.0])
    with pytest.raises(InvalidValueError, match="same length"):
        det.update([0, 1], [0.0], [1.0, 2.0])
    with pytest.raises(InvalidValueError, match="thresholds"):
        DetectorConfig(threshold=0.5, release=0.9)
    det.update([0], [10.0], [1.0])
    assert det.update([0], [5.0], [2.0]).score[0] == 0.0  # out of order: skipped
    assert det.count[0] == 1


def test_a_daily_and_weekly_habit_is_learned_and_a_spike_hidden_in_the_cycle_is_caught(
    shared: Shared,
) -> None:
    """A 5-minute stream with a daily plateau and two quiet days a week: the cycle is 400 noise widths, the
    spike 20, no bigger than the cycle's own steps; against the learned baseline it stands out. A random
    walk sampled the same way learns no baseline."""
    b, det = shared.blocks["weekly"], shared.det
    habit, walk = int(b.rows.start), int(b.rows.start) + 1
    alarm, test, at = b.alarm, b.test, WEEKLY_AT
    assert det.seasonal.on_s[habit] and det.seasonal.on_w[habit]
    assert not det.seasonal.active[walk]
    hit = np.flatnonzero(alarm[0, at : at + 2])
    assert hit.size and TESTS[int(test[0, at + hit[0]])] in {"spike", "spike_back"}
    assert onsets(alarm[1:, 200:]) == 0
    # a forecast a day ahead into a quiet day (day 26 % 7 == 5) follows the baseline: 8 lower
    ahead = det.seasonal.forecast(np.array([habit]), 25.5 * 86_400.0, np.array([86_400.0]))
    assert -10.0 < ahead[0, 0] < -6.0


def corpus_run(shared: Shared, name: str) -> tuple[Series, BoolArray, npt.NDArray[np.int8]]:
    """One series of the corpus's ``tune`` split, scored online: its alarms and tests per reading."""
    b = shared.blocks[name]
    return corpus_series(name), b.alarm[0], b.test[0]


def test_levels_the_field_entered_twice_are_its_modes_and_a_spike_between_them_is_still_caught(
    shared: Shared,
) -> None:
    # a setpoint moving between two levels (about 35 and 83, noise about 0.5), a labelled spike late on
    s, alarm, test = corpus_run(shared, "step")
    _, clean = s.labels
    moves = np.flatnonzero(np.abs(np.diff(s.values)) > 20.0) + 1
    # the first moves are news: (82 held in the warm-up) -> 35 (first entry), -> 84 (second), -> 35 (its
    # re-entry is judged before the level counts twice); from then on both levels are modes, moves quiet
    settled = int(moves[4])
    assert (moves >= settled).sum() >= 8
    assert alarm[moves[1]] and not (alarm & clean)[settled:].any()
    (spike,) = [a for a in s.anomalies if a.kind == "spike"]
    hits = np.flatnonzero(alarm[spike.start : spike.end + 1])
    assert hits.size and TESTS[int(test[spike.start + int(hits[0])])] in ("spike", "spike_back")


def test_a_flat_stretch_no_longer_than_twice_two_the_field_held_is_quiet_a_stuck_sensor_is_not(
    shared: Shared,
) -> None:
    # a coarse quantised signal (quantum 10 noise widths) with a labelled stuck stretch of 160 readings
    s, alarm, test = corpus_run(shared, "quantised")
    _, clean = s.labels
    flat = TESTS.index("flat")
    assert not (alarm & clean & (test == flat)).any()
    (stuck,) = s.anomalies
    hits = np.flatnonzero(alarm[stuck.start : stuck.end + 1])
    assert hits.size and TESTS[int(test[stuck.start + int(hits[0])])] == "flat"


def test_a_held_shift_on_a_coarse_quantum_that_mostly_repeats_is_found_by_the_level_test(
    shared: Shared,
) -> None:
    # a slow signal read through a quantum far above its noise: it repeats its value most readings but
    # never jumps and holds, so the local-level model describes it; its first labelled shift (5 noise
    # widths, held about 220 readings) is found by the level test, which raises no false alarm on the
    # clean readings
    s, alarm, test = corpus_run(shared, "coarse")
    _, clean = s.labels
    level = TESTS.index("level")
    assert np.mean(s.values[1:] == s.values[:-1]) > 0.5
    shift = next(a for a in s.anomalies if a.kind == "shift")
    assert shift.magnitude > 5.0
    span = slice(shift.start, shift.end + 1)
    assert (alarm[span] & (test[span] == level)).any()
    assert not (alarm & clean & (test == level)).any()


def test_a_one_step_toggle_of_a_coarse_quantum_is_quiet_and_a_ten_step_spike_is_not(shared: Shared) -> None:
    alarm = shared.blocks["toggle"].alarm
    for row in (0, 1):
        assert alarm[row, 2600:2602].any() and not alarm[row, :2600].any()
    assert alarm[2, 350]


def test_a_weekday_offset_turning_at_midnight_is_that_habit_not_a_shift(shared: Shared) -> None:
    # a corpus series with a daily profile and a weekend 40 % of the amplitude lower (5-minute readings):
    # the turn into its second Saturday (day 12) was a false shift while the offsets were not yet trusted
    s, alarm, _ = corpus_run(shared, "periodic")
    _, clean = s.labels
    at = turn_index(s)
    # the offsets' turn and the noise unit as the detector had them just after that reading
    turn, noise = shared.probed["turn"], shared.probed["noise"]
    assert isinstance(turn, float) and isinstance(noise, float)
    assert abs(turn) > 3.0 * noise
    assert not (alarm & clean)[at - 2 : at + 60].any()


def test_a_first_visit_like_the_jumps_a_setpoint_habitually_holds_is_quiet_a_new_size_is_not(
    shared: Shared,
) -> None:
    alarm = shared.blocks["setpoint"].alarm
    assert not alarm[0, 1200:1790].any()
    assert alarm[0, 1800:1803].any()
    assert not alarm[0, 1810:2000].any()
    assert alarm[0, 2000:2004].any()


def test_a_jump_on_a_field_whose_jumps_hold_is_judged_by_its_duration_not_its_first_reading(
    shared: Shared,
) -> None:
    block = shared.blocks["holder"]
    alarm, test = block.alarm[0], block.test[0]
    spike = TESTS.index("spike")
    # its first jumps are news (no habit yet): the spike test flags each at its first reading
    for at in (400, 650, 900):
        assert alarm[at] and test[at] == spike, at
    # three held jumps later, a jump is not judged at its first reading, nor by shift and trend while it
    # settles (the drift test may still call a move this large news later on)
    assert not alarm[1400]
    settle = slice(1400, 1448)
    assert not np.isin(test[settle][alarm[settle]], [spike, TESTS.index("shift"), TESTS.index("trend")]).any()
    # ... and a reading that comes back is still a glitch, flagged a reading later
    assert alarm[1901] and test[1901] == TESTS.index("spike_back")
    assert not alarm[1900]


def test_a_test_whose_small_p_values_come_too_often_on_a_field_is_raised_there_only() -> None:
    det = StreamDetector(fields=2)
    k = len(TESTS)
    det.cal_n[:] = 5000.0
    det.cal_hits[:, :k] = 50.0  # p < 1e-2 on 1 % of the clean readings, p < 1e-3 on 0.1 %: as claimed
    det.cal_hits[:, k:] = 5.0
    det.cal_hits[1, 0], det.cal_hits[1, k] = 200.0, 50.0  # field 1's spike test: 4x and 10x too often
    p = np.full((k, 2), 0.5)
    p[0] = 1e-6
    rows = np.arange(2)
    out = det._calibrate(rows, p.copy(), np.zeros(2, bool))
    assert np.allclose(out[:, 0], p[:, 0])  # field 0 is calibrated: unchanged
    assert np.allclose(out[1:, 1], 0.5)  # field 1's other tests too
    assert 5e-6 < out[0, 1] < 1e-5  # about (50 + 2) / 7000 / 1e-3 = 7.4 times the tail's p
    assert (det.cal_n == 5000.0).all()  # readings in alarm do not teach the calibration
    det._calibrate(rows, np.full((k, 2), 0.5), np.zeros(2, bool))  # the alarm ended
    decay = 1 - 1 / det.config.memory
    p[0] = 5e-3  # an episode below 1e-2 that stays under the alarm: booked once it ends
    det._calibrate(rows, p.copy(), np.ones(2, bool))
    assert np.allclose(det.cal_n, 5000.0 * decay + 1.0)
    assert np.allclose(det.cal_hits[0, 0], 50.0 * decay)  # not before it ended
    det._calibrate(rows, np.full((k, 2), 0.5), np.ones(2, bool))
    assert det.cal_hits[0, 0] > 50.0 * decay**2 + 0.99
    p[0] = 1e-6  # one that reaches an alarm is not clean: never booked
    det._calibrate(rows, p.copy(), np.ones(2, bool))
    det._calibrate(rows, np.full((k, 2), 0.5), np.ones(2, bool))
    assert det.cal_hits[0, k] < 5.0
