"""The ingest pipeline without any network: validation, mapping, deadband, staleness, buffering, acks."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drsdtp.adapters.base import Quality, Reading, ReadingBatch, Rejected, SourceBatch
from drsdtp.errors import ClockSkewError, LimitError, StorageError
from drsdtp.ingest.latency import LatencyWindow
from drsdtp.ingest.options import FieldRule, IngestOptions
from drsdtp.ingest.pipeline import PREPARE_STEP, Pipeline

from .support import DictInterner, RecordingSink

NOW = 1_800_000_000_000  # a fixed "wall clock" in ms


def batch(*readings: tuple[str, str, float] | tuple[str, str, float, int] | Reading) -> SourceBatch:
    out = SourceBatch(NOW)
    for r in readings:
        if isinstance(r, Reading):
            out.add(r.twin, r.field, r.value, r.source_ms, r.quality)
        else:
            out.add(r[0], r[1], r[2], r[3] if len(r) == 4 else NOW)
    return out


def pipeline(sink: RecordingSink, interner: DictInterner, **opts: object) -> Pipeline:
    return Pipeline("t", IngestOptions(**opts), sink, interner, clock_ms=lambda: NOW)  # type: ignore[arg-type]


async def test_invalid_readings_are_counted_by_reason_and_dropped(
    sink: RecordingSink, interner: DictInterner
) -> None:
    p = pipeline(sink, interner, fields=(FieldRule("*/temp", min=-40.0, max=125.0),))
    await p.apply_direct(
        batch(
            ("r1", "temp", 21.0),
            ("r1", "temp", math.nan),
            ("r1", "temp", math.inf),
            ("r1", "temp", 500.0),  # out of range
            ("r1", "other", 500.0),  # no rule: fine
            ("r1", "temp", 20.0, NOW + 60_000),  # a minute in the future
            ("r1", "temp", 20.0, 0),  # 1970
            ("", "temp", 1.0),
            ("r1", "bad\nname", 1.0),
        )
    )
    assert [(r.field, r.value) for r in sink.rows] == [("temp", 21.0), ("other", 500.0)]
    assert p.stats.invalid_by_reason == {
        "not a finite number": 2,
        "out of range": 1,
        "timestamp in the future": 1,
        "timestamp too old": 1,
        "bad name": 2,
    }
    assert p.stats.invalid == 7
    assert p.stats.received == 9
    assert p.stats.applied == 2


async def test_invalid_policy_bad_keeps_a_valueless_bad_reading(
    sink: RecordingSink, interner: DictInterner
) -> None:
    p = pipeline(sink, interner, invalid="bad", fields=(FieldRule("*", max=10.0),))
    await p.apply_direct(batch(("r", "a", math.nan), ("r", "b", 11.0), ("r", "c", 1.0, NOW + 60_000)))
    assert [(r.field, r.quality) for r in sink.rows] == [("a", Quality.BAD), ("b", Quality.BAD)]
    assert all(math.isnan(r.value) for r in sink.rows)
    assert p.stats.invalid == 3  # still counted; the future one is dropped (its time is unknown)


async def test_bad_quality_never_carries_a_value(sink: RecordingSink, interner: DictInterner) -> None:
    p = pipeline(sink, interner)
    await p.apply_direct(
        batch(Reading("r", "t", 99.0, NOW, Quality.BAD), Reading("r", "t", 1.0, NOW, Quality.UNCERTAIN))
    )
    assert math.isnan(sink.rows[0].value)
    assert sink.rows[1].value == 1.0
    assert p.stats.no_value == 1
    assert p.stats.invalid == 0


async def test_stale_readings_are_kept_flagged_and_counted_late(
    sink: RecordingSink, interner: DictInterner
) -> None:
    p = pipeline(sink, interner, stale_after_s=30.0)
    await p.apply_direct(batch(("r", "t", 1.0, NOW - 31_000), ("r", "t", 2.0, NOW - 29_000)))
    assert [(r.value, r.stale) for r in sink.rows] == [(1.0, True), (2.0, False)]
    assert p.stats.late == 1
    assert len(p.stats.latency) == 1
    assert p.stats.latency.percentile(50) == 29_000


async def test_deadband_heartbeat_and_quality_change(sink: RecordingSink, interner: DictInterner) -> None:
    p = pipeline(sink, interner, fields=(FieldRule("*/t", deadband=0.5, heartbeat_s=60.0),))
    series = [(10.0, 0), (10.2, 1), (10.4, 2), (10.6, 3), (10.7, 4), (10.7, 70)]
    for value, t in series:
        await p.apply_direct(batch(("r", "t", value, NOW - 100_000 + t * 1000)))
    await p.apply_direct(batch(Reading("r", "t", 10.7, NOW - 20_000, Quality.UNCERTAIN)))
    await p.apply_direct(batch(("r", "u", 1.0), ("r", "u", 1.0)))  # no rule: everything passes
    # 10.0 first; 10.2/10.4 within 0.5; 10.6 moved 0.6; 10.7 within; at t=70 the 60 s heartbeat is due;
    # the same value with another quality is news.
    assert sink.values("r", "t") == [10.0, 10.6, 10.7, 10.7]
    assert sink.rows[3].quality == Quality.UNCERTAIN
    assert sink.values("r", "u") == [1.0, 1.0]
    assert p.stats.suppressed == 3


async def test_expected_period_gaps_and_overdue_fields(sink: RecordingSink, interner: DictInterner) -> None:
    p = pipeline(sink, interner, fields=(FieldRule("*/t", expected_period_s=10.0),))
    for t in (0, 10, 20, 55, 65):
        await p.apply_direct(batch(("r", "t", 1.0, NOW - 100_000 + t * 1000), ("r", "x", 1.0)))
    assert p.stats.gaps == 1  # 20 -> 55 is more than two periods
    assert p.keys.overdue(NOW) == [("r", "t", 35.0)]  # silent since t=65, i.e. 35 s
    assert p.keys.overdue(NOW - 20_000) == []


async def test_key_table_bound_and_interner_refusals() -> None:
    class Picky(DictInterner):
        def intern_field(self, name: str) -> int:
            if len(name) > 10:
                raise LimitError("field name too long")
            return super().intern_field(name)

    picky = Picky()
    sink = RecordingSink(picky)
    p = Pipeline("t", IngestOptions(max_keys=3), sink, picky, clock_ms=lambda: NOW)
    await p.apply_direct(
        batch(
            ("a", "f", 1.0), ("b", "f", 1.0), ("c", "very-long-name", 1.0), ("d", "f", 1.0), ("e", "f", 1.0)
        )
    )
    # max_keys bounds the table's memory, it refuses nothing: only the name the interner refused is lost.
    assert p.stats.applied == 4
    assert p.stats.invalid_by_reason == {"bad name": 1}
    assert len(p.keys) == 4  # over the bound for the rest of the batch ...
    await p.apply_direct(batch(("a", "f", 2.0)))
    assert (len(p.keys), p.keys.resets) == (1, 1)  # ... and cleared before the next one
    assert sink.values("a", "f") == [1.0, 2.0]


async def test_ids_come_from_the_interner_once_per_name(interner: DictInterner) -> None:
    seen: list[ReadingBatch] = []

    class Capture:
        async def apply(self, b: ReadingBatch) -> None:
            seen.append(b)

    p = Pipeline("t", IngestOptions(), Capture(), interner, clock_ms=lambda: NOW)
    await p.apply_direct(batch(("r1", "t", 1.0), ("r2", "t", 2.0), ("r1", "h", 3.0)))
    b = seen[0]
    assert b.twin_ids.dtype == np.uint32
    assert b.source_ms.dtype == np.int64
    assert b.values.dtype == np.float64
    assert b.twin_ids.tolist() == [0, 1, 0]
    assert b.field_ids.tolist() == [0, 0, 1]
    assert interner.twins == {"r1": 0, "r2": 1}
    assert interner.fields == {"t": 0, "h": 1}


async def test_queued_batches_merge_into_one_core_call_and_ack_in_order(
    sink: RecordingSink, interner: DictInterner
) -> None:
    p = pipeline(sink, interner)
    acks: list[int] = []
    for i in range(5):
        b = batch(("r", "t", float(i)))
        b.ack = lambda i=i: acks.append(i)
        await p.submit(b)
    empty = SourceBatch(NOW)  # a message that produced no reading still gets acknowledged, in order
    empty.ack = lambda: acks.append(99)
    await p.submit(empty)
    async with asyncio.TaskGroup() as tg:
        applier = tg.create_task(p.run_apply())
        await p.drain()
        applier.cancel()
    assert sink.calls == 1
    assert sink.batch_sizes == [5]
    assert acks == [0, 1, 2, 3, 4, 99]


async def test_the_event_loop_runs_while_a_large_merged_batch_is_prepared(
    sink: RecordingSink, interner: DictInterner
) -> None:
    ticks = 0
    seen: list[int] = []  # ticks counted at each clock read: once per run of batches prepared, then latency

    def clock() -> int:
        seen.append(ticks)
        return NOW

    p = Pipeline("t", IngestOptions(), sink, interner, clock_ms=clock)
    per_batch = PREPARE_STEP // 2
    for i in range(6):
        await p.submit(batch(*((f"r{i}", f"f{k}", float(k)) for k in range(per_batch))))

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tick_task = tg.create_task(ticker())
        applier = tg.create_task(p.run_apply())
        await p.drain()
        applier.cancel()
        tick_task.cancel()
    assert sink.batch_sizes == [6 * per_batch]  # still one core call
    # Two source batches per run of PREPARE_STEP readings, prepared together; the loop ran after each run.
    assert len(seen) == 3 + 1 and len(set(seen[:3])) == 3


async def test_a_busy_core_pauses_the_producer(interner: DictInterner) -> None:
    release = asyncio.Event()

    class BusyCore:
        applied = 0

        async def apply(self, b: ReadingBatch) -> None:
            await release.wait()
            self.applied += len(b)

    core = BusyCore()
    p = Pipeline("t", IngestOptions(buffer_readings=10, max_batch=10), core, interner, clock_ms=lambda: NOW)

    def ten() -> SourceBatch:
        return batch(*[("r", f"f{i}", 1.0) for i in range(10)])

    async with asyncio.TaskGroup() as tg:
        applier = tg.create_task(p.run_apply())
        await p.submit(ten())  # taken by the applier, which blocks in the core
        await asyncio.sleep(0.01)
        await p.submit(ten())  # fills the buffer
        third = tg.create_task(p.submit(ten()))
        await asyncio.sleep(0.05)
        assert not third.done()  # backpressure: the producer waits for the core
        assert p.queued_readings == 10
        release.set()
        await third
        await p.drain()
        applier.cancel()
    assert core.applied == 30


async def test_a_refusing_core_drops_and_acks_an_unexpected_failure_stops(interner: DictInterner) -> None:
    class Refusing:
        async def apply(self, b: ReadingBatch) -> None:
            raise ClockSkewError("too far ahead")

    acked: list[bool] = []
    p = Pipeline("t", IngestOptions(), Refusing(), interner, clock_ms=lambda: NOW)
    b = batch(("r", "t", 1.0))
    b.ack = lambda: acked.append(True)
    await p.apply_direct(b)
    assert p.stats.dropped == 1
    assert acked == [True]

    class Broken:
        async def apply(self, b: ReadingBatch) -> None:
            raise StorageError("disk full")

    p = Pipeline("t", IngestOptions(), Broken(), interner, clock_ms=lambda: NOW)
    b = batch(("r", "t", 1.0))
    b.ack = lambda: acked.append(False)
    with pytest.raises(StorageError):
        await p.apply_direct(b)
    assert acked == [True]  # not acknowledged: the source redelivers after the node restarts


def test_latency_window_percentiles_over_the_ring() -> None:
    w = LatencyWindow(capacity=100)
    assert math.isnan(w.percentile(50))
    w.add(np.arange(50))
    w.add(np.arange(1000, 1080))  # wraps: the window holds the last 100 samples
    assert len(w) == 100
    assert w.total == 130
    expected = np.concatenate([np.arange(30, 50), np.arange(1000, 1080)])
    assert w.percentile(99) == pytest.approx(np.percentile(expected, 99))
    assert w.percentiles((50.0,))[50.0] == pytest.approx(np.percentile(expected, 50))
    w.add(np.arange(500))  # larger than the window
    assert w.percentile(0) == 400


async def test_a_cancel_swallowed_inside_the_source_still_stops_the_feed(
    sink: RecordingSink, interner: DictInterner
) -> None:
    # Python 3.11's asyncio.wait_for can eat a cancel (gh-86296); libraries call it inside adapter loops.
    swallowed = 0

    async def leaky_source() -> AsyncIterator[SourceBatch]:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what the buggy wait_for does once: the cancel is lost
            yield batch(("r", "t", 1.0))

    p = pipeline(sink, interner)
    task = asyncio.create_task(p.feed(leaky_source()))
    await asyncio.sleep(0.02)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert swallowed == 1
    assert task in done, "the feed kept running after its cancel was swallowed"
    assert task.cancelled()


_TIMES = st.sampled_from([NOW, NOW - 1000, NOW - 120_000, NOW + 10_000, NOW - 30 * 86_400_000])
_READING = st.tuples(
    st.sampled_from(["p1", "p2"]),
    st.sampled_from(["flow", "temp", "rpm"]),
    st.one_of(st.floats(-5, 5), st.sampled_from([math.nan, math.inf])),
    _TIMES,
    st.sampled_from(list(Quality)),
)


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(_READING, min_size=1, max_size=8), min_size=1, max_size=6), bad=st.booleans()
)
def test_the_clean_batch_fast_path_matches_the_full_validation(
    batches: list[list[tuple[str, str, float, int, Quality]]], bad: bool
) -> None:
    # A range rule (even an unbounded one) sends every batch through the full validation: the two pipelines
    # must agree on every batch and every counter.
    rules = (FieldRule("*/flow", deadband=0.5, heartbeat_s=5.0), FieldRule("*/temp", expected_period_s=1.0))
    opts = {"fields": rules, "invalid": "bad" if bad else "drop"}
    fast = pipeline(RecordingSink(DictInterner()), DictInterner(), **opts)
    full = pipeline(RecordingSink(DictInterner()), DictInterner(), **opts)
    full.keys.has_range = True
    for readings in batches:
        a, b = (p.prepare(batch(*(Reading(*r) for r in readings))) for p in (fast, full))
        for column in ("twin_ids", "field_ids", "values", "source_ms", "quality", "stale"):
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)
    for counter in ("received", "invalid", "late", "suppressed", "no_value", "gaps", "invalid_by_reason"):
        assert getattr(fast.stats, counter) == getattr(full.stats, counter), counter


async def test_rejects_are_counted_once_by_a_bounded_reason(
    sink: RecordingSink, interner: DictInterner
) -> None:
    p = pipeline(sink, interner)
    source = batch(("r", "t", 1.0))
    source.reject(Rejected("topic/a", NOW, "not JSON", "x", b"{"))
    source.reject(Rejected("topic/b", NOW, "a plugin's own words", "y", b"?"))
    await p.apply_direct(source)
    assert p.stats.rejected_by_reason == {"not JSON": 1, "decoder error": 1}
    assert [r.value for r in sink.rows] == [1.0]  # the batch's good reading is not held back by them


async def test_an_unusable_batch_is_refused_alone_not_with_the_batches_prepared_beside_it(
    sink: RecordingSink, interner: DictInterner
) -> None:
    p = pipeline(sink, interner)
    broken = batch(("r2", "temp", 1.0))
    broken.values[0] = "not a number"  # type: ignore[call-overload]  # what a buggy adapter might hand over
    for source in (batch(("r1", "temp", 20.0)), broken, batch(("r3", "temp", 22.0))):
        await p.submit(source)
    async with asyncio.TaskGroup() as tg:
        applier = tg.create_task(p.run_apply())
        await p.drain()
        applier.cancel()
    assert [(r.twin, r.value) for r in sink.rows] == [("r1", 20.0), ("r3", 22.0)]
    assert p.stats.invalid_by_reason == {"unusable batch": 1}
    assert (p.stats.received, p.stats.invalid) == (3, 1)
