"""History's journal in the node's log: records round-trip, damage is named, and recovery re-appends exactly
the journalled batches history lacks (a batch it already holds is never counted twice)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drsdtp.config import parse_config
from drsdtp.core import Store, replica_id
from drsdtp.errors import DecodeError
from drsdtp.history import HistoryStore, journal
from drsdtp.history.series import Rows
from drsdtp.node.history import HistoryService

from .support import T0, small_options

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)


@given(
    number=st.integers(0, 2**64 - 1),
    rows=st.lists(st.tuples(names, names, st.integers(-(2**62), 2**62), st.floats()), max_size=30),
)
def test_records_round_trip(number: int, rows: list[tuple[str, str, int, float]]) -> None:
    twins = sorted({r[0] for r in rows})
    fields = sorted({r[1] for r in rows})
    record = journal.encode(
        number,
        twins,
        fields,
        np.array([twins.index(r[0]) for r in rows], np.uint32),
        np.array([fields.index(r[1]) for r in rows], np.uint32),
        np.array([r[2] for r in rows], np.int64),
        np.array([r[3] for r in rows], np.float64),
    )
    batch = journal.decode(record)
    assert batch.journal == number
    assert batch.twins == [r[0] for r in rows] and batch.fields == [r[1] for r in rows]
    assert batch.ts.tolist() == [r[2] for r in rows]
    expected = np.array([r[3] for r in rows], np.float64)
    assert batch.value.view(np.int64).tolist() == expected.view(np.int64).tolist()


def _record(number: int = 7) -> bytes:
    one = np.zeros(2, np.uint32)
    return journal.encode(number, ["t"], ["f"], one, one, np.array([T0, T0 + 1]), np.array([1.0, 2.0]))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:10], "shorter than its header"),
        (lambda b: b"XXXX" + b[4:], "not a history journal record"),
        (lambda b: b[:-1], "bytes of columns"),
        (lambda b: b[:-48] + (5).to_bytes(4, "little") + b[-44:], "outside its name table"),
    ],
)
def test_damaged_records_are_refused_with_the_reason(damage: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        journal.decode(damage(_record()))  # type: ignore[operator]


def _service(tmp_path: Path, records: list[bytes]) -> tuple[HistoryService, Store]:
    config = parse_config({"node_id": "n", "data_dir": str(tmp_path)})
    store = Store(replica_id("n"))
    service = HistoryService(tmp_path, config.history, store, journal_to=records.append)
    return service, store


def _observe(service: HistoryService, store: Store, value: float, ts: int) -> None:
    from drsdtp.adapters.base import ReadingBatch

    twin, field = store.intern_twin("pump"), store.intern_field("flow")
    service.observe(
        ReadingBatch(
            np.array([twin, twin], np.uint32),
            np.array([field, field], np.uint32),
            np.array([value, value + 0.5]),
            np.array([ts, ts], np.int64),  # two readings, one timestamp
            np.zeros(2, np.uint8),
            np.zeros(2, np.bool_),
        ),
        ["pump"],
    )


async def test_recovery_restores_exactly_the_batches_history_lacks(tmp_path: Path) -> None:
    records: list[bytes] = []
    service, store = _service(tmp_path, records)
    for i in range(5):
        _observe(service, store, float(i), T0 + i)
    await service.flush()  # batches 1-5 are durable in history
    for i in range(5, 8):
        _observe(service, store, float(i), T0 + i)
    # A crash: the last three batches were journalled (and acknowledged) but history never wrote them.
    service._queue.clear()
    service.store.close()
    assert len(records) == 8

    again, store = _service(tmp_path, [])
    assert again.store.journal_mark == 5
    assert again.recover(records) == 6  # batches 6-8, two readings each
    assert again.recover(records) == 0  # given twice: restored once
    data = again.store.query("pump", "flow", resolution="raw")
    assert data.value.tolist() == [v for i in range(8) for v in (float(i), i + 0.5)]
    assert data.ts.tolist() == [T0 + i for i in range(8) for _ in range(2)]
    # New batches continue the numbering after everything journalled, so they are never mistaken for
    # batches the history already holds.
    fresh: list[bytes] = []
    again._journal_to = fresh.append
    _observe(again, store, 9.0, T0 + 9)
    assert journal.decode(fresh[0]).journal == 9
    await again.stopped()


def test_the_journal_mark_survives_folding_into_blocks(tmp_path: Path) -> None:
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        store.append_batch(["t"], ["v"], np.array([1.0]), np.array([T0]), journal=3)
        store.append_batch(["t"], ["v"], np.array([2.0]), np.array([T0 + 1]), journal=4)
        store.rotate()
        store.compact(T0)  # the segment is folded into a block and deleted
        assert store.journal_mark == 4
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        assert store.journal_mark == 4  # from the manifest


def test_version_1_segments_are_still_read(tmp_path: Path) -> None:
    from drsdtp.history import wal

    rows = Rows(np.zeros(2, np.uint32), np.array([T0, T0 + 1], np.int64), np.array([1.0, 2.0]))
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        store.append_batch(["t"], ["v"], np.array([0.5]), np.array([T0 - 1]))  # catalogues series 0
    # A segment as the first version wrote it: no journal number in its records.
    payload = b"".join(
        (
            (2).to_bytes(4, "little") + (1).to_bytes(4, "little"),
            rows.ts.astype("<i8").tobytes(),
            rows.value.astype("<f8").tobytes(),
            np.array([0], "<u4").tobytes(),
            np.array([2], "<u4").tobytes(),
        )
    )
    import struct
    import zlib

    length = struct.pack("<I", len(payload))
    record = length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload
    path = wal.segment_path(tmp_path / "wal", 99)
    path.write_bytes(wal._HEADER.pack(wal.MAGIC, 1, 0, 99) + record)
    with HistoryStore(tmp_path, small_options(), now_ms=T0) as store:
        assert store.query("t", "v", resolution="raw").value.tolist() == [0.5, 1.0, 2.0]
        assert store.journal_mark == 0


def test_fold_bounds_what_history_holds_in_memory(tmp_path: Path) -> None:
    options = dataclasses.replace(small_options(), segment_bytes=4096)
    with HistoryStore(tmp_path, options, now_ms=T0) as store:
        for i in range(50):
            store.append_batch(["t"] * 20, ["v"] * 20, np.arange(20.0) + i, np.arange(20) + T0 + 20 * i)
        assert store.sealed_segments > 1
        assert store.fold(T0) > 1
        assert store.sealed_segments == 0
        assert sum(len(p) for s in store._segments for p in s.parts) < 4096 // 16  # one live segment left
        assert len(store.query("t", "v", resolution="raw")) == 1000
    with HistoryStore(tmp_path, options, now_ms=T0) as store:
        assert len(store.query("t", "v", resolution="raw")) == 1000


async def test_the_service_folds_sealed_segments_every_flush(tmp_path: Path) -> None:
    service, store = _service(tmp_path, [])
    service.store.options = dataclasses.replace(service.store.options, segment_bytes=4096)
    async with service:
        for i in range(200):
            _observe(service, store, float(i), T0 + i)
        await service.flush()
        assert service.store.sealed_segments > 0
        for _ in range(100):  # the service's own loop, once a second: no compaction for a minute
            await asyncio.sleep(0.05)
            if service.store.sealed_segments == 0:
                break
        assert service.store.sealed_segments == 0
        assert len(service.store.query("pump", "flow", resolution="raw")) == 400
