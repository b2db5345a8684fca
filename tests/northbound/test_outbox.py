"""The sink's outbox on real files: order, release, the disk budget, torn tails, the mark after restarts."""

from __future__ import annotations

import pathlib

from drsdtp.northbound.postgres.outbox import Outbox, journal_of
from tests.northbound.records import record


def numbers(records: list[bytes]) -> list[int]:
    return [journal_of(r) for r in records]


def test_records_come_back_in_order_after_a_restart_and_leave_once_released(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path, max_bytes=1 << 20, segment_bytes=2000)
    for n in range(1, 41):
        assert box.append(record(n))
    box.close()
    box = Outbox(tmp_path, max_bytes=1 << 20, segment_bytes=2000)
    assert box.mark == 40
    assert numbers(box.read_after(0, 1 << 20)) == list(range(1, 41))
    assert numbers(box.read_after(25, 1 << 20)) == list(range(26, 41))
    segments = len(box)
    assert segments > 3
    box.release(25)
    assert len(box) < segments
    assert numbers(box.read_after(0, 1 << 20))[0] <= 26  # whole segments go, never a record above 25
    assert numbers(box.read_after(25, 1 << 20)) == list(range(26, 41))


def test_a_record_handed_back_twice_is_held_once(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path, max_bytes=1 << 20)
    for n in (1, 2, 3, 2, 3, 4):
        box.append(record(n))
    assert numbers(box.read_after(0, 1 << 20)) == [1, 2, 3, 4]


def test_the_mark_survives_the_release_of_every_segment(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path, max_bytes=1 << 20, segment_bytes=500)
    for n in range(1, 11):
        box.append(record(n))
    box.sync()
    box.append(record(11))  # rolls past the others; the open segment stays
    box.release(11)
    box.close()
    again = Outbox(tmp_path, max_bytes=1 << 20)
    assert again.mark == 11
    again.append(record(5))  # the node's log handing back an old record: already delivered
    assert numbers(again.read_after(0, 1 << 20)) == [11]


def test_a_torn_tail_is_cut_and_counted(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path, max_bytes=1 << 20)
    for n in range(1, 6):
        box.append(record(n))
    box.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the last record torn mid-write
    again = Outbox(tmp_path, max_bytes=1 << 20)
    assert numbers(again.read_after(0, 1 << 20)) == [1, 2, 3, 4]
    assert again.stats.torn_tails == 1
    assert segment.stat().st_size < len(data) - 7  # truncated to the last whole record


def test_over_budget_the_oldest_segments_are_dropped_and_counted(tmp_path: pathlib.Path) -> None:
    size = len(record(1)) + 8
    box = Outbox(tmp_path, max_bytes=size * 20, segment_bytes=size * 4)
    for n in range(1, 101):
        box.append(record(n))
    held = numbers(box.read_after(0, 1 << 30))
    assert held == list(range(held[0], 101))  # the newest, contiguous
    assert box.size_bytes <= size * 21
    assert box.stats.dropped_records == 100 - len(held) > 0


def test_drop_newest_refuses_past_the_budget(tmp_path: pathlib.Path) -> None:
    size = len(record(1)) + 8
    box = Outbox(tmp_path, max_bytes=size * 10, segment_bytes=size * 4, policy="drop_newest")
    accepted = [n for n in range(1, 31) if box.append(record(n))]
    assert accepted == list(range(1, len(accepted) + 1))
    assert numbers(box.read_after(0, 1 << 30)) == accepted
    assert box.stats.dropped_records == 30 - len(accepted) > 0
