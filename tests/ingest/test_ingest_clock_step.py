"""A backward clock step between a batch's arrival and its validation (found by the chaos check): readings
stamped with the arrival time are restamped, not refused as "from the future" after being acknowledged."""

from __future__ import annotations

import asyncio

from drsdtp.adapters.base import SourceBatch
from drsdtp.ingest.options import IngestOptions
from drsdtp.ingest.pipeline import Pipeline

from .support import DictInterner, RecordingSink

ARRIVED = 1_800_000_000_000


async def test_a_backward_step_after_arrival_restamps_instead_of_refusing(
    sink: RecordingSink, interner: DictInterner
) -> None:
    now = ARRIVED - 2_000  # the clock stepped back two seconds after the batch arrived
    p = Pipeline("t", IngestOptions(), sink, interner, clock_ms=lambda: now)
    source = SourceBatch(ARRIVED)
    source.add("r1", "temp", 21.0, ARRIVED)  # stamped on arrival
    source.add("r1", "hum", 40.0, ARRIVED - 2_500)  # a device clock behind ours: untouched
    source.add("r1", "co2", 400.0, ARRIVED + 60_000)  # ahead even of the arrival: still refused
    await p.apply_direct(source)
    assert {(r.field, r.source_ms) for r in sink.rows} == {("temp", now), ("hum", ARRIVED - 2_500)}
    assert p.stats.invalid_by_reason == {"timestamp in the future": 1}


async def test_without_a_step_nothing_is_restamped(sink: RecordingSink, interner: DictInterner) -> None:
    p = Pipeline("t", IngestOptions(), sink, interner, clock_ms=lambda: ARRIVED)
    source = SourceBatch(ARRIVED)
    source.add("r1", "temp", 21.0, ARRIVED + 2_000)  # a device clock ahead of ours: refused
    await p.apply_direct(source)
    assert not sink.rows and p.stats.invalid_by_reason == {"timestamp in the future": 1}


async def test_batches_prepared_together_keep_their_own_arrival(
    sink: RecordingSink, interner: DictInterner
) -> None:
    now = ARRIVED - 2_000
    p = Pipeline("t", IngestOptions(), sink, interner, clock_ms=lambda: now)
    early, late = SourceBatch(ARRIVED - 10_000), SourceBatch(ARRIVED)
    early.add("r1", "temp", 21.0, ARRIVED)  # stamped 10 s after its own arrival: from the future
    late.add("r1", "hum", 40.0, ARRIVED)  # stamped on its arrival: restamped
    for source in (early, late):
        await p.submit(source)
    applier = asyncio.create_task(p.run_apply())
    await p.drain()
    applier.cancel()
    assert sink.batch_sizes == [1]  # one run, one sink call
    assert {(r.field, r.source_ms) for r in sink.rows} == {("hum", now)}
    assert p.stats.invalid_by_reason == {"timestamp in the future": 1}
