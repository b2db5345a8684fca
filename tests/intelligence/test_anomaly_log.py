"""The durable anomaly log: bounds per twin and in total, across a restart; torn lines; resume cursors."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Sequence

import numpy as np
import pytest

from drsdtp.intelligence import FieldSpec, ModelSpec, TwinIntelligence
from drsdtp.intelligence.anomalies import AnomalyJournal, AnomalyRecord
from drsdtp.intelligence.results import AnomalyEvent, Severity


def event(twin: str, k: int, field: str = "temp") -> AnomalyEvent:
    return AnomalyEvent(
        twin, field, "spike", Severity.HIGH, float(k), 20.0 + k, f"event {k}", "spike", 12.5, 0.9
    )


def log_events(journal: AnomalyJournal, twin: str, n: int, start: int = 0) -> list[AnomalyRecord]:
    return journal.append([event(twin, start + k) for k in range(n)], {twin: "pump"}, {twin: ("tank-1",)})


def test_records_survive_a_restart_with_their_sequence_numbers(tmp_path: pathlib.Path) -> None:
    journal = AnomalyJournal(tmp_path, per_twin=10, max_events=100)
    first = log_events(journal, "pump-1", 3)
    journal.flush()
    reopened = AnomalyJournal(tmp_path, per_twin=10, max_events=100)
    assert [r.to_dict() for r in reopened.latest()] == [r.to_dict() for r in first]
    assert reopened.latest()[0].related == ("tank-1",) and reopened.latest()[0].model == "pump"
    more = log_events(reopened, "pump-1", 1, start=3)
    assert more[0].seq == first[-1].seq + 1  # the cursor keeps increasing across the restart


def test_the_per_twin_bound_keeps_the_newest_and_holds_across_restarts(tmp_path: pathlib.Path) -> None:
    journal = AnomalyJournal(tmp_path, per_twin=5, max_events=1000)
    log_events(journal, "noisy", 40)
    log_events(journal, "quiet", 2)
    journal.flush()
    assert journal.count(["noisy"]) == 5 and journal.count(["quiet"]) == 2
    assert [r.event.t_s for r in journal.latest(["noisy"])] == [35.0, 36.0, 37.0, 38.0, 39.0]
    assert journal.evicted == 35
    # a tighter bound on restart applies to what was on disk
    smaller = AnomalyJournal(tmp_path, per_twin=3, max_events=1000)
    assert [r.event.t_s for r in smaller.latest(["noisy"])] == [37.0, 38.0, 39.0]
    assert smaller.count() == 5


def test_the_total_bound_drops_the_oldest_and_the_file_stays_bounded(tmp_path: pathlib.Path) -> None:
    journal = AnomalyJournal(tmp_path, per_twin=1000, max_events=64)
    for k in range(50):
        log_events(journal, f"twin-{k % 7}", 20, start=20 * k)
        journal.flush()
        assert len(journal) <= 64
    lines = (tmp_path / "log.jsonl").read_bytes().count(b"\n")
    assert lines <= 2 * 64 + 64 + 20
    newest = journal.latest(limit=1)[0]
    assert newest.seq == 1000 and newest.event.t_s == 999.0
    assert len(AnomalyJournal(tmp_path, per_twin=1000, max_events=64)) == len(journal)


def test_a_torn_or_damaged_line_is_skipped_and_counted(tmp_path: pathlib.Path) -> None:
    journal = AnomalyJournal(tmp_path)
    log_events(journal, "pump-1", 4)
    journal.flush()
    path = tmp_path / "log.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"seq": "x"}\n'
    path.write_bytes(b"".join(lines) + b'{"seq": 9, "tw')  # a damaged line and a torn tail
    reopened = AnomalyJournal(tmp_path)
    assert reopened.bad_lines == 2
    assert [r.seq for r in reopened.latest()] == [1, 3, 4]
    log_events(reopened, "pump-1", 1, start=10)
    reopened.flush()  # rewrites the file without the bad lines
    again = AnomalyJournal(tmp_path)
    assert again.bad_lines == 0 and [r.seq for r in again.latest()] == [1, 3, 4, 5]


def test_after_reads_on_from_a_cursor_and_filters_by_twin() -> None:
    journal = AnomalyJournal(None)
    log_events(journal, "a", 3)
    log_events(journal, "b", 3, start=3)
    assert [r.seq for r in journal.after(2)] == [3, 4, 5, 6]
    assert [r.seq for r in journal.after(0, ["b"], limit=2)] == [4, 5]
    assert journal.after(6) == []


async def test_wait_after_wakes_a_stream_when_an_event_is_logged() -> None:
    journal = AnomalyJournal(None)
    waiter = asyncio.ensure_future(journal.wait_after(0))
    await asyncio.sleep(0)
    assert not waiter.done()
    log_events(journal, "a", 1)
    await asyncio.wait_for(waiter, 5)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="bounds"):
        AnomalyJournal(None, per_twin=0)


def test_the_engine_hands_every_event_to_its_listeners() -> None:
    engine = TwinIntelligence()
    engine.add_model(ModelSpec("generic", (FieldSpec("x", expected_period_s=1.0),)))
    engine.add_twin("t", "generic")
    journal = AnomalyJournal(None)

    def listen(events: Sequence[AnomalyEvent]) -> None:
        journal.append(events, {"t": "generic"}, {})

    engine.anomaly_log.listeners.append(listen)
    rng = np.random.default_rng(3)
    values = 10.0 + rng.normal(0, 0.1, 600)
    values[500] = 30.0  # a spike the model-free detector must log
    engine.ingest(np.zeros(600, np.intp), np.arange(600.0), values)
    assert any(r.event.kind == "spike" and r.event.t_s == 500.0 for r in journal.latest())
    assert len(journal) == len(engine.anomaly_log.events)
    json.dumps([r.to_dict() for r in journal.latest()])


def test_a_twin_filter_applies_before_the_limit_and_in_the_count(tmp_path: pathlib.Path) -> None:
    journal = AnomalyJournal(tmp_path, per_twin=10, max_events=100)
    log_events(journal, "a/1", 3)
    log_events(journal, "b/1", 5, start=3)  # newer than every a/ record
    ours = lambda twin: twin.startswith("a/")  # noqa: E731  # a caller's scopes, as the API passes them
    assert [r.twin for r in journal.latest(limit=2, where=ours)] == ["a/1", "a/1"]
    assert [r.event.t_s for r in journal.after(0, limit=10, where=ours)] == [0.0, 1.0, 2.0]
    assert journal.count(where=ours) == 3 and journal.count(["b/1"], where=ours) == 0
    assert journal.latest(["b/1"], where=ours) == [] and journal.count() == 8
