"""Rolling windows: running sums agree with direct computation, memory stays bounded, duplicates and gaps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drsdtp.errors import InvalidValueError
from drsdtp.intelligence import FieldWindows


def fill(w: FieldWindows, steps: int, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(steps) * 10.0 + 1_000.0
    v = 20.0 + 0.003 * np.arange(steps)[:, None] + rng.normal(0, 0.1, (steps, rows))
    for k in range(steps):
        w.append(np.arange(rows), np.full(rows, t[k]), v[k], np.full(rows, k))
    return t, v.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("steps", [7, 50, 137, 400])
def test_running_fits_match_polyfit_after_wrapping(steps: int) -> None:
    w = FieldWindows(capacity=50, short=12, recent=16, fields=3)
    t, v = fill(w, steps, 3)
    long, short = w.fit_long(), w.fit_short()
    for i in range(3):
        for fit, n in ((long, 50), (short, 12)):
            tt, vv = t[-n:], v[-n:, i]
            if len(tt) < 2:
                continue
            slope, intercept = np.polyfit(tt, vv, 1)
            assert fit.slope[i] == pytest.approx(slope, rel=1e-6, abs=1e-9)
            assert float(fit.at(tt[-1])[i]) == pytest.approx(slope * tt[-1] + intercept, abs=1e-6)
            assert fit.n[i] == min(n, steps)


def test_recompute_equals_incremental_and_memory_is_bounded() -> None:
    w = FieldWindows(capacity=64, short=8, recent=16, fields=5)
    fill(w, 300, 5)
    before = w.nbytes
    incremental = w.fit_long()
    w.recompute()
    exact = w.fit_long()
    np.testing.assert_allclose(incremental.slope, exact.slope, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(incremental.sigma, exact.sigma, rtol=1e-6)
    fill(w, 300, 5, seed=1)
    assert w.nbytes == before  # the uptime does not grow memory


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(-50, 50)), min_size=1, max_size=120),
    st.integers(4, 20),
)
def test_any_append_order_keeps_sums_exact(entries: list[tuple[int, float]], capacity: int) -> None:
    w = FieldWindows(capacity=capacity, short=3, recent=4, fields=4)
    kept: dict[int, list[tuple[float, float]]] = {r: [] for r in range(4)}
    for k, (row, value) in enumerate(entries):
        w.append([row], [float(k)], [value])
        kept[row].append((float(k), float(np.float32(value))))
    fit = w.fit_long()
    for row, samples in kept.items():
        tail = samples[-capacity:]
        assert fit.n[row] == len(tail)
        if len(tail) >= 2:
            tt, vv = np.array(tail).T
            if np.ptp(tt) > 0:
                assert fit.slope[row] == pytest.approx(np.polyfit(tt, vv, 1)[0], rel=1e-6, abs=1e-6)


def test_repeated_rows_in_one_batch_are_applied_in_order() -> None:
    w = FieldWindows(capacity=10, short=4, recent=8, fields=2)
    w.append([0, 1, 0, 0], [1.0, 1.0, 2.0, 3.0], [5.0, 7.0, 6.0, 8.0], [1, 1, 2, 3])
    t, v = w.history(0)
    assert list(t) == [1.0, 2.0, 3.0]
    assert list(v) == [5.0, 6.0, 8.0]
    assert w.last_v[1] == 7.0


def test_duplicates_by_seq_are_counted_not_stored() -> None:
    w = FieldWindows(capacity=10, short=4, recent=8, fields=1)
    w.append([0], [1.0], [5.0], [1])
    for _ in range(3):  # a gateway replaying its last reading
        assert w.append([0], [1.0], [5.0], [1]) == 0
    assert int(w.count[0]) == 1
    assert int(w.dups_since_new[0]) == 3
    w.append([0], [2.0], [5.5], [2])
    assert int(w.dups_since_new[0]) == 0
    assert int(w.duplicates[0]) == 3


def test_sequence_gaps_give_recent_missing_and_loss() -> None:
    w = FieldWindows(capacity=100, short=4, recent=16, fields=2)
    for s in range(40):
        lost = s % 10 == 5  # one in ten lost on row 0
        rows = [1] if lost else [0, 1]
        w.append(rows, [float(s)] * len(rows), [1.0] * len(rows), [s] * len(rows))
    assert w.recent_missing()[0] == 2.0  # the 16 newest span seq 22..39, 25 and 35 missing
    assert w.recent_missing()[1] == 0.0
    assert 0.05 < w.loss_ratio()[0] < 0.15
    assert w.loss_ratio()[1] == 0.0


def test_non_finite_values_are_rejected_and_counted() -> None:
    w = FieldWindows(capacity=10, short=4, recent=8, fields=2)
    assert w.append([0, 1, 1], [1.0, 1.0, 2.0], [np.nan, 3.0, np.inf]) == 1
    assert list(w.rejected[:2]) == [1, 1]
    with pytest.raises(InvalidValueError):
        w.append([2], [1.0], [1.0])


def test_recent_block_is_oldest_first_and_padded() -> None:
    w = FieldWindows(capacity=8, short=4, recent=4, fields=2)
    for k in range(11):
        w.append([0], [float(k)], [float(k)])
    w.append([1], [0.0], [42.0])
    block = w.recent_block()
    assert list(block.values[0]) == [7.0, 8.0, 9.0, 10.0]
    assert np.isnan(block.values[1, :3]).all()
    assert block.values[1, 3] == 42.0


def test_rebase_keeps_fits_when_time_runs_far() -> None:
    w = FieldWindows(capacity=32, short=8, recent=16, fields=1)
    t0 = 1.7e9  # epoch seconds: float32 offsets stay precise thanks to the rebase
    for k in range(200):
        w.append([0], [t0 + k * 1000.0], [0.001 * k * 1000.0], [k])
    assert w.fit_long().slope[0] == pytest.approx(0.001, rel=1e-5)
    assert w.t_ref > t0 + 100_000
