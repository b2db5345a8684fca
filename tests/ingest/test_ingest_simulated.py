"""Simulated adapter: the drsdtp.sim plant through the whole ingest path."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from drsdtp.adapters import build_adapter
from drsdtp.adapters.simulated import SimulatedAdapter
from drsdtp.errors import ConfigError
from drsdtp.ingest.runner import AdapterRunner, IngestService
from drsdtp.sim import FIELDS, Plant

from .support import FAST, DictInterner, RecordingSink


def sim_config(**extra: Any) -> dict[str, Any]:
    return {
        "type": "simulated",
        "name": "demo",
        "rooms": 2,
        "seed": 7,
        "dt_s": 10.0,
        "ingest": {"stale_after_s": 86400.0, "max_age_s": 86400.0},
        **extra,
    }


async def test_replay_delivers_the_plant_exactly_and_ends(
    sink: RecordingSink, interner: DictInterner
) -> None:
    adapter = build_adapter(sim_config(speedup=0, steps=120), "adapters[0]")
    runner = AdapterRunner(adapter, sink, interner, FAST)
    started = int(time.time() * 1000)
    async with asyncio.timeout(30):
        await runner.run()  # a finite replay returns once everything is applied
    truth = Plant(rooms=2, seed=7, dt_s=10.0).record(120)
    for r, twin in enumerate(("room-1", "room-2")):
        for f, name in enumerate(FIELDS):
            assert sink.values(twin, name) == truth.values[:, r, f].tolist(), (twin, name)
    temp = [row for row in sink.rows if row.twin == "room-1" and row.field == "temp_1"]
    assert np.all(np.diff([row.source_ms for row in temp]) == 10_000)  # real plant spacing ...
    assert abs(temp[-1].source_ms - started) < 2_000  # ... ending now
    assert runner.received == 120 * 2 * len(FIELDS)
    assert runner.invalid == 0
    assert sink.calls < 10  # several plant steps per core call


async def test_dropout_is_not_sent_and_counted_as_lost(sink: RecordingSink, interner: DictInterner) -> None:
    cfg = sim_config(
        speedup=0,
        steps=50,
        faults=[
            {"kind": "dropout", "twin": "room-1", "field": "temp_1", "onset_step": 10, "duration_steps": 5},
            {"kind": "stale", "twin": "room-2", "field": "humidity", "onset_step": 20, "duration_steps": 3},
        ],
    )
    adapter = build_adapter(cfg, "adapters[0]")
    assert isinstance(adapter, SimulatedAdapter)
    runner = AdapterRunner(adapter, sink, interner, FAST)
    async with asyncio.timeout(30):
        await runner.run()
    assert len(sink.values("room-1", "temp_1")) == 45
    assert len(sink.values("room-2", "humidity")) == 47  # three re-sent stale samples dropped ...
    assert adapter.stats.duplicates == 3  # ... as duplicates
    # The receiver never saw seq 10-14 of temp_1 nor seq 20-22 of humidity: 5 + 3 lost.
    assert adapter.stats.lost == 8


async def test_paced_mode_emits_fresh_readings_in_real_time(
    sink: RecordingSink, interner: DictInterner
) -> None:
    # 1 plant second per step at a 100x speed-up: one step every 10 ms of wall time.
    cfg = sim_config(speedup=100.0, dt_s=1.0, steps=30, rooms=1, ingest={"stale_after_s": 5.0})
    runner = AdapterRunner(build_adapter(cfg, "adapters[0]"), sink, interner, FAST)
    t0 = time.monotonic()
    async with asyncio.timeout(30):
        await runner.run()
    assert time.monotonic() - t0 >= 0.29  # paced, not as fast as possible
    temp = [row for row in sink.rows if row.field == "temp_1"]
    assert len(temp) == 30
    assert not any(row.stale for row in temp)
    assert np.allclose(np.diff([row.source_ms for row in temp]), 10, atol=1)
    assert runner.pipeline.stats.late == 0


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_adapter(sim_config(speedup=0), "adapters[4]")
    assert err.value.key == "adapters[4].steps"
    with pytest.raises(ConfigError) as err:
        build_adapter(
            sim_config(faults=[{"kind": "drift", "twin": "room-9", "field": "temp_1", "onset_step": 1}]),
            "adapters[4]",
        )
    assert err.value.key == "adapters[4].faults[0].twin"
    with pytest.raises(ConfigError) as err:
        build_adapter(
            sim_config(faults=[{"kind": "melt", "twin": "room-1", "field": "temp_1", "onset_step": 1}]),
            "adapters[4]",
        )
    assert err.value.key == "adapters[4].faults[0].kind"


async def test_ingest_service_runs_several_adapters_and_reports_them(
    sink: RecordingSink, interner: DictInterner
) -> None:
    adapters = [
        build_adapter(sim_config(name="a", speedup=0, steps=10), "adapters[0]"),
        build_adapter(sim_config(name="b", speedup=0, steps=20, seed=1), "adapters[1]"),
    ]
    service = IngestService(adapters, sink, interner, FAST)
    async with asyncio.timeout(30):
        await service.run()  # both replays are finite
    snap = service.snapshot()
    assert snap["a"].applied == 10 * 2 * len(FIELDS)
    assert snap["b"].applied == 20 * 2 * len(FIELDS)
    assert snap["a"].invalid == 0
    assert snap["a"].reconnects == 0
    assert len(sink.rows) == 30 * 2 * len(FIELDS)
    with pytest.raises(ConfigError) as err:
        IngestService([adapters[0], adapters[0]], sink, interner)
    assert err.value.key == "adapters[1].name"


async def test_twin_prefix_names_the_rooms_of_one_plant_in_a_fleet() -> None:
    from drsdtp.adapters import build_adapter

    adapter = build_adapter(
        {"type": "simulated", "name": "p", "rooms": 2, "speedup": 0, "steps": 1, "twin_prefix": "site-b/"},
        "a",
    )
    async with adapter.session() as batches:
        batch = await anext(aiter(batches))
    assert set(batch.twins) == {"site-b/room-1", "site-b/room-2"}
