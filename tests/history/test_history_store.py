"""The history store on real files: durability across reopen, torn and corrupt data, ids, export."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drsdtp.core import BatchWriter, Store
from drsdtp.errors import InvalidValueError, StorageError
from drsdtp.history import HistoryStore, blocks
from drsdtp.history.series import Rows

from .support import MINUTE, T0, batch, block_files, flip_byte, segment_files, small_options


def _all_raw(store: HistoryStore, twin: str, field: str) -> tuple[list[int], list[float]]:
    data = store.query(twin, field, resolution="raw")
    return data.ts.tolist(), data.value.tolist()


def test_write_flush_reopen_reads_everything_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    twins, fields, values, ts = batch(rng, T0, 1000)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        assert store.append_batch(twins, fields, values, ts) == 1000
        store.flush()
        before = {key: _all_raw(store, *key) for key in store.series()}
    assert len(segment_files(tmp_path)) == 1  # closed without compaction: only the write-ahead segment
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as reopened:
        assert reopened.stats.torn_tails == 0
        assert {key: _all_raw(reopened, *key) for key in reopened.series()} == before
        assert segment_files(tmp_path) == []  # replayed segments are folded into a block on open
        assert len(block_files(tmp_path)) == 1
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as again:
        assert {key: _all_raw(again, *key) for key in again.series()} == before
    expected_ts = ts[np.array(fields) == "f1"].tolist()
    expected_values = values[np.array(fields) == "f1"].tolist()
    assert before[("pump-1", "f1")] == (expected_ts, expected_values)


def test_torn_tail_is_cut_and_counted_and_earlier_batches_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    for k in range(5):
        store.append_batch(*batch(rng, T0 + k * 100_000, 100))
    store.close()
    (segment,) = segment_files(tmp_path)
    os.truncate(segment, segment.stat().st_size - 7)  # the last record loses its end: a torn write
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as reopened:
        assert reopened.stats.torn_tails == 1
        assert reopened.stats.cut_bytes > 0
        ts = np.concatenate([reopened.query(t, f, resolution="raw").ts for t, f in reopened.series()])
        assert len(ts) == 400
        assert int(ts.max()) < T0 + 4 * 100_000  # exactly the first four batches survive


def test_corrupt_record_cuts_from_there_and_keeps_everything_before(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    ends = []
    for k in range(6):
        store.append_batch(*batch(rng, T0 + k * 100_000, 50))
        ends.append(store.level_bytes()["segments"])
    store.close()
    (segment,) = segment_files(tmp_path)
    flip_byte(segment, ends[2] + 30)  # inside the fourth record's payload
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as reopened:
        assert reopened.stats.torn_tails == 1
        assert reopened.stats.cut_bytes == ends[-1] - ends[2]
        counts = sum(len(reopened.query(t, f, resolution="raw")) for t, f in reopened.series())
        assert counts == 150


def test_corrupt_block_chunk_loses_only_that_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged frame loses the series it holds (here one: frames of one series; see test_history_blocks)."""
    monkeypatch.setattr(blocks, "FRAME_BYTES", 1)
    rng = np.random.default_rng(4)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        store.append_batch(*batch(rng, T0, 400))
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        (block,) = store._blocks.values()
        victim = store._catalog.ids[("pump-1", "f3")]
        entry = block.entry(victim)
        assert entry is not None
    flip_byte(block.path, int(entry["offset"]) + 3)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        assert len(store.query("pump-1", "f3", resolution="raw")) == 0
        assert store.stats.corrupt_chunks == 1
        assert len(store.query("pump-0", "f2", resolution="raw")) == 100


def test_damaged_block_index_moves_the_block_aside(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        store.append_batch(*batch(rng, T0, 40))
    with HistoryStore(tmp_path, small_options(), now_ms=T0):
        pass
    (block,) = block_files(tmp_path)
    flip_byte(block, block.stat().st_size - 30)  # inside the index
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        assert store.stats.corrupt_blocks == 1
        assert block_files(tmp_path) == []
        assert block.with_suffix(".corrupt").exists()
        assert len(store.query("pump-0", "f0", resolution="raw")) == 0


def test_uncommitted_compaction_output_is_discarded_on_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        store.append_batch(*batch(rng, T0, 100))
    with HistoryStore(tmp_path, small_options(), now_ms=T0):
        pass
    (block,) = block_files(tmp_path)
    orphan = block.with_name("blk-000000000999.dat")
    orphan.write_bytes(block.read_bytes())  # as if a compaction crashed before committing the manifest
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        assert not orphan.exists()
        assert len(store.query("pump-0", "f0", resolution="raw")) == 25


def test_segment_left_behind_after_commit_is_not_replayed_twice(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    store.append_batch(*batch(rng, T0, 100))
    store.flush()
    (segment,) = segment_files(tmp_path)
    saved = segment.read_bytes()
    store.rotate()
    assert store.compact(T0).sealed == 1
    store.close()
    segment.write_bytes(saved)  # as if the crash came between the manifest commit and the unlink
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as reopened:
        assert len(reopened.query("pump-0", "f0", resolution="raw")) == 25
        assert segment_files(tmp_path) == []


def test_engine_intern_ids_are_named_through_the_store(tmp_path: Path) -> None:
    engine = Store(7)
    writer = BatchWriter(engine)
    twin_ids = writer.twin_ids(["boiler", "boiler", "chiller"])
    field_ids = writer.field_ids(["temp", "pressure", "temp"])
    with HistoryStore(tmp_path, small_options(), names=engine, now_ms=T0) as store:
        store.append_batch(twin_ids, field_ids, np.array([71.5, 2.5, 6.0]), np.array([T0, T0, T0 + 1]))
        unnamed = np.array([999], np.uint32)
        assert store.append_batch(unnamed, unnamed, np.array([1.0]), np.array([T0])) == 0
        assert store.stats.dropped_unknown == 1
        assert store.series() == [("boiler", "pressure"), ("boiler", "temp"), ("chiller", "temp")]
        assert store.query("chiller", "temp", resolution="raw").value.tolist() == [6.0]
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:  # names persist without the engine
        assert store.query("boiler", "temp", resolution="raw").value.tolist() == [71.5]
        with pytest.raises(InvalidValueError, match="no name source"):
            store.append_batch(twin_ids, field_ids, np.zeros(3), np.zeros(3, np.int64))


def test_engine_ids_known_and_new_mixed_across_batches_name_the_right_series(tmp_path: Path) -> None:
    """Batches that mix pairs seen before (looked up in the sorted table) with new ones (defined, then
    inserted into it) file every reading under its own (twin, field)."""
    rng = np.random.default_rng(8)
    engine = Store(7)
    writer = BatchWriter(engine)
    keys = [(f"t{t}", f"f{f}") for t in range(30) for f in range(10)]
    twin_ids = writer.twin_ids([k[0] for k in keys])
    field_ids = writer.field_ids([k[1] for k in keys])
    expected: dict[tuple[str, str], list[float]] = {}
    with HistoryStore(tmp_path, small_options(), names=engine, now_ms=T0) as store:
        arrival = rng.permutation(len(keys))  # new keys keep arriving, in no order, while old ones repeat
        for b in range(20):
            allowed = arrival[: 15 * (b + 1)]
            pick = rng.choice(allowed, size=min(len(allowed), int(rng.integers(1, 60))), replace=False)
            values = rng.random(len(pick))
            store.append_batch(twin_ids[pick], field_ids[pick], values, np.full(len(pick), T0 + b))
            for k, v in zip(pick.tolist(), values.tolist(), strict=True):
                expected.setdefault(keys[k], []).append(v)
        for (twin, field), seen in expected.items():
            assert store.query(twin, field, resolution="raw").value.tolist() == seen
        assert sorted(store.series()) == sorted(expected)


def test_nonfinite_values_are_skipped_and_redelivered_readings_count_once(tmp_path: Path) -> None:
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        values = np.array([1.0, np.nan, 3.0, np.inf])
        assert store.append_batch(["t"] * 4, ["v"] * 4, values, np.array([T0, T0 + 1, T0 + 2, T0 + 3])) == 2
        assert store.stats.dropped_nonfinite == 2
        store.append_batch(["t"], ["v"], np.array([3.0]), np.array([T0 + 2]))  # redelivered: counts once
        store.append_batch(["t"], ["v"], np.array([3.5]), np.array([T0 + 2]))  # another reading, same stamp
        data = store.query("t", "v", resolution="raw")
        assert data.ts.tolist() == [T0, T0 + 2, T0 + 2]
        assert data.value.tolist() == [1.0, 3.0, 3.5]  # arrival order within one stamp
        store.rotate()
        store.compact(T0)  # folded into a block: the same readings, still once each
        assert store.query("t", "v", resolution="raw").value.tolist() == [1.0, 3.0, 3.5]
        with pytest.raises(InvalidValueError, match="differ in length"):
            store.append_batch(["t"], ["v", "w"], np.array([1.0]), np.array([T0]))


def test_query_range_is_half_open_and_unknown_fields_are_empty(tmp_path: Path) -> None:
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        ts = T0 + np.arange(10, dtype=np.int64) * 1000
        store.append_batch(["t"] * 10, ["v"] * 10, np.arange(10.0), ts)
        assert store.query("t", "v", T0 + 2000, T0 + 5000, "raw").ts.tolist() == ts[2:5].tolist()
        assert len(store.query("t", "nope")) == 0
        assert len(store.query("t", "v", T0 + 5000, T0 + 5000)) == 0
        with pytest.raises(InvalidValueError, match="unknown resolution"):
            store.query("t", "v", resolution="5m")


def test_export_csv_and_json_stream_every_point(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        twins, fields, values, ts = batch(rng, T0, 40)
        store.append_batch(twins, fields, values, ts)
        out = io.StringIO()
        assert store.export(out, "csv", twin_prefix="pump-1", resolution="raw") == 20
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert {(r["twin"], r["field"]) for r in rows} == {("pump-1", "f1"), ("pump-1", "f3")}
        first = rows[0]
        assert first["time"] == "2023-11-14T00:00:01.000Z" and int(first["ts_ms"]) == T0 + 1000
        assert float(first["value"]) == values[1] and first["count"] == "1"

        out = io.StringIO()
        assert store.export(out, "json", resolution="1m") == 4  # one 1 min bucket per field
        doc = json.loads(out.getvalue())
        assert doc["columns"] == ["ts_ms", "time", "value", "min", "max", "count"]
        by_key = {(s["twin"], s["field"]): s["points"] for s in doc["series"]}
        (point,) = by_key[("pump-0", "f0")]
        chosen = np.array(fields) == "f0"
        assert point[0] == T0 and point[5] == 10
        assert point[2] == pytest.approx(values[chosen].mean())
        assert (point[3], point[4]) == (values[chosen].min(), values[chosen].max())

        out = io.StringIO()
        assert store.export(out, "jsonl", start_ms=T0, end_ms=T0 + 10_000, resolution="raw") == 10
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert all(line["resolution"] == "raw" and T0 <= line["ts_ms"] < T0 + 10_000 for line in lines)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.append_batch(["t"], ["v"], np.array([1.0]), np.array([T0]))
    with pytest.raises(StorageError):
        store.query("t", "v")
    store.close()  # idempotent


def test_segment_rotates_by_size_and_age(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    options = dataclasses.replace(small_options(), segment_bytes=20_000)
    with HistoryStore(tmp_path, options, now_ms=T0) as store:
        for k in range(4):
            store.append_batch(*batch(rng, T0 + k * 1_000_000, 1000))  # ~16 KB per record
        assert len(segment_files(tmp_path)) == 2  # a third opens with the next append
        assert store.compact(T0).sealed == 2
        store.append_batch(*batch(rng, T0 + 5_000_000, 10))
        assert store.compact(T0 + 11 * MINUTE).sealed == 0  # first sight starts its age clock
        assert store.compact(T0 + 21 * MINUTE).sealed == 1
        assert segment_files(tmp_path) == []
        assert sum(len(store.query(t, f, resolution="raw")) for t, f in store.series()) == 4010


def test_options_from_node_config_and_refused_tiers() -> None:
    from drsdtp.config import DownsampleTier, HistoryConfig
    from drsdtp.errors import ConfigError
    from drsdtp.history import HistoryOptions, Tier

    options = HistoryOptions.from_config(HistoryConfig(raw_retention_s=7200, raw_max_points=5))
    assert (options.raw_retention_ms, options.raw_max_points) == (7_200_000, 5)
    assert options.labels == ("raw", "1m", "1h")
    with pytest.raises(ConfigError, match="not a multiple"):
        HistoryOptions.from_config(
            HistoryConfig(downsample=(DownsampleTier(60, 90_000), DownsampleTier(90, 99_000)))
        )
    with pytest.raises(ConfigError, match="longer than"):
        HistoryOptions(raw_retention_ms=10, tiers=(Tier(1000, 5),))


def test_failed_append_leaves_no_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    rng = np.random.default_rng(10)
    store = HistoryStore(tmp_path, small_options(), now_ms=T0)
    store.append_batch(*batch(rng, T0, 40))
    real_write = os.write

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])  # half the record reaches the file, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StorageError, match="No space left"):
        store.append_batch(*batch(rng, T0 + 100_000, 40))
    monkeypatch.undo()
    store.append_batch(*batch(rng, T0 + 200_000, 40))
    store.close()
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as reopened:
        assert reopened.stats.torn_tails == 0
        ts = reopened.query("pump-0", "f0", resolution="raw").ts
        assert len(ts) == 20 and int(ts.max()) >= T0 + 200_000  # the batch after the failure survived


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e300])),
        max_size=40,
    )
)
def test_sorted_unique_drops_only_exact_repeats_and_keeps_arrival_order(
    readings: list[tuple[int, int, float]],
) -> None:
    rows = Rows(
        np.array([r[0] for r in readings], np.uint32),
        np.array([r[1] for r in readings], np.int64),
        np.array([r[2] for r in readings], np.float64),
    )
    seen: set[tuple[int, int, bytes]] = set()
    firsts = []
    for s, t, v in readings:  # the reference: first copies, then a stable sort by (series, ts)
        key = (s, t, np.float64(v).tobytes())
        if key not in seen:
            seen.add(key)
            firsts.append((s, t, v))
    expected = sorted(firsts, key=lambda r: (r[0], r[1]))
    got = rows.sorted_unique()
    assert list(zip(got.series.tolist(), got.ts.tolist(), got.value.tolist(), strict=True)) == expected
    assert np.signbit(got.value).tolist() == [bool(np.signbit(r[2])) for r in expected]


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), min_size=1, max_size=8, unique=True))
def test_catalog_lines_are_what_json_dumps_writes_and_read_back(
    tmp_path_factory: pytest.TempPathFactory, keys: list[tuple[str, str]]
) -> None:
    # The catalog formats its lines itself (json.dumps per series was most of a catching-up replica's
    # define): same bytes, any name (quotes, backslashes, control characters, non-ASCII).
    directory = tmp_path_factory.mktemp("catalog")
    with HistoryStore(directory, small_options(), now_ms=T0) as store:
        ids = store._catalog.define(keys)
        store.flush()
    lines = (directory / "series.log").read_bytes().splitlines()
    assert [line.split(b" ", 1)[1].decode() for line in lines] == [
        json.dumps({"id": i, "twin": t, "field": f}, ensure_ascii=False)
        for i, (t, f) in zip(ids, keys, strict=True)
    ]
    with HistoryStore(directory, small_options(), now_ms=T0) as reopened:
        assert reopened._catalog.names == keys
