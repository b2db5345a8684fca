"""The durable store's group committer: every writer is released exactly when its record is on disk, whichever
call wrote it (a commit, or the commit inside a snapshot), and a failed disk fails the writers instead of
acknowledging them."""

from __future__ import annotations

import asyncio
import selectors
import shutil
from pathlib import Path

import pytest

from drsdtp._core import Store, Wal
from drsdtp.config import WalConfig
from drsdtp.errors import StorageError
from drsdtp.node.durable import DurabilityStats, DurableStore
from tests.daemon.walfiles import DELTA, RECORD_HEADER, flip, records
from tests.gossip.support import eventually


def _store() -> Store:
    return Store(7)


def test_a_snapshot_reports_the_records_it_committed(tmp_path: Path) -> None:
    store = _store()
    wal, _ = Wal.open(tmp_path, store)
    seqs = [wal.append(store.set("t", f"f{i}", float(i))) for i in range(3)]
    assert seqs == [1, 2, 3]
    # The snapshot commits what was buffered: those writers wait for exactly this answer.
    assert wal.snapshot(store) == 3
    assert wal.pending_records == 0
    assert wal.append(store.set("t", "g", 1.0)) == 4
    assert wal.commit() == 4
    # A commit with nothing buffered still reports everything appended so far as durable.
    assert wal.commit() == 4


async def test_concurrent_writers_through_constant_snapshots_are_all_released(tmp_path: Path) -> None:
    # A snapshot after every commit: records appended while one is on the way in are written by it, and
    # their writers must be released by it (counting only commits left them waiting forever).
    store = _store()
    config = WalConfig(fsync_interval_ms=0, snapshot_every=1)
    async with DurableStore.open(tmp_path, store, config) as durable:

        async def writer(w: int) -> None:
            for i in range(150):
                await durable.record(store.set(f"t{w}", f"f{i}", float(i)))

        await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(8))), 60)
        assert durable.pending == 0
        assert durable.stats.records == 8 * 150
        assert durable.stats.snapshots > 0
    recovered = _store()
    Wal.open(tmp_path / "wal", recovered)
    assert all(recovered.get(f"t{w}", "f149") == 149.0 for w in range(8))


async def test_a_full_segment_triggers_a_snapshot(tmp_path: Path) -> None:
    store = _store()
    config = WalConfig(fsync_interval_ms=0, segment_bytes=1 << 20, snapshot_every=1 << 40)
    async with DurableStore.open(tmp_path, store, config) as durable:
        big = b"x" * 100_000
        for i in range(12):  # 1.2 MB of log: past the segment limit once
            await durable.record(store.set("t", f"blob{i}", big))
        # The snapshot runs in its own task, beside the commits.
        await eventually(lambda: durable.stats.snapshots == 1, what="the snapshot a full segment triggers")
    segments = sorted((tmp_path / "wal").glob("wal-*.log"))
    assert segments[-1].stat().st_size < 1 << 20


class _FailingDisk:
    """A Wal whose disk fails on the next commit (a real disk cannot be made to fail on cue in a test)."""

    def __init__(self, wal: Wal) -> None:
        self.wal = wal
        self.fail = False

    def append(self, delta: bytes) -> int:
        return self.wal.append(delta)

    def commit(self) -> int:
        if self.fail:
            raise StorageError("fsync wal-00000000000000000001.log: Input/output error (os error 5)")
        return self.wal.commit()

    @property
    def pending_bytes(self) -> int:
        return self.wal.pending_bytes

    def stats(self) -> dict[str, int]:
        return self.wal.stats()

    def close(self) -> int:
        return self.wal.close()


async def test_a_failed_commit_fails_its_writers_and_is_counted(tmp_path: Path) -> None:
    store = _store()
    disk = _FailingDisk(Wal.open(tmp_path, store)[0])
    config = WalConfig(fsync_interval_ms=0)
    async with DurableStore(store, disk, config, DurabilityStats()) as durable:  # type: ignore[arg-type]
        await durable.record(store.set("t", "ok", 1.0))
        disk.fail = True
        writes = (durable.record(store.set("t", f"f{i}", 1.0)) for i in range(5))
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results), results
        assert durable.stats.failed_commits >= 1
        assert (durable.pending, durable.stats.records) == (0, 1)
        disk.fail = False


class _CountingSelector(selectors.DefaultSelector):
    """Counts the event loop's steps: the loop polls its selector once per step (a wake-up when it blocks)."""

    steps = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.steps += 1
        return super().select(timeout)


def test_one_commit_releases_many_writers_in_three_steps_of_the_loop(tmp_path: Path) -> None:
    # 50 writers appending in one step share one commit, started in the loop's next step and called back
    # once: the writers run in the step after (the old committer took its task's wake, a sleep(0), an
    # executor future, the wrapping asyncio one, then the writers: 5 steps).
    selector = _CountingSelector()
    store = _store()

    async def main() -> tuple[int, int]:
        async with DurableStore.open(tmp_path, store, WalConfig(fsync_interval_ms=0)) as durable:
            await durable.record(store.set("t", "first", 0.0))
            writes = [durable.append(store.set("t", f"f{i}", float(i))) for i in range(50)]
            steps, commits = selector.steps, durable.stats.commits
            await writes[-1]
            assert all(w.done() for w in writes) and durable.pending == 0
            return selector.steps - steps, durable.stats.commits - commits

    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selector)) as runner:
        steps, commits = runner.run(main())
    assert (steps, commits) == (3, 1)


async def test_a_full_buffer_and_the_shutdown_cut_the_group_commit_window_short(tmp_path: Path) -> None:
    # A one-minute window: only the byte threshold (then the shutdown) can make these records durable in
    # the test's lifetime; the deadlines below are far from both (no timed assertion).
    store = _store()
    config = WalConfig(fsync_interval_ms=60_000, fsync_bytes=4096)
    async with asyncio.timeout(20), DurableStore.open(tmp_path, store, config) as durable:
        await durable.record(store.set("t", "first", 1.0))  # at once: the window starts
        small = durable.append(store.set("t", "small", 1.0))
        await asyncio.sleep(0.05)
        assert not small.done()  # in its window
        await durable.record(store.set("t", "big", b"x" * 8192))
        assert small.done() and durable.stats.commits == 2
        last = durable.append(store.set("t", "last", 2.0))
    assert last.done() and last.exception() is None
    recovered = _store()
    Wal.open(tmp_path / "wal", recovered)
    assert (recovered.get("t", "small"), recovered.get("t", "last")) == (1.0, 2.0)


async def test_a_cancelled_writer_neither_breaks_sync_nor_loses_its_record(tmp_path: Path) -> None:
    # An API client whose deadline passes cancels its own wait, not the record: sync() still waits for the
    # record to be durable instead of failing with the writer's CancelledError.
    store = _store()
    config = WalConfig(fsync_interval_ms=500)  # one fsync per 500 ms: the second record waits for its window
    async with DurableStore.open(tmp_path, store, config) as durable:
        await durable.record(store.set("t", "first", 1.0))  # fsynced at once; the window starts
        writer = asyncio.create_task(durable.record(store.set("t", "x", 1.0)))
        await asyncio.sleep(0.01)
        writer.cancel()
        await asyncio.sleep(0)
        assert writer.cancelled() and durable.pending == 1
        await asyncio.wait_for(durable.sync(), 10)
        assert durable.pending == 0 and durable.stats.records == 2


async def test_aux_records_appended_while_a_barrier_runs_survive_the_snapshot(tmp_path: Path) -> None:
    store = _store()
    config = WalConfig(fsync_interval_ms=0, snapshot_every=1 << 40)
    side_log: list[bytes] = []  # the host's own log, made durable by its barrier
    async with DurableStore.open(tmp_path, store, config) as durable:
        await asyncio.shield(durable.append_aux(b"before"))

        async def barrier() -> None:
            side_log.append(b"before")
            # Commits go on while a barrier runs (this would never become durable otherwise), and what is
            # appended now lands in the segment the snapshot keeps.
            await asyncio.wait_for(asyncio.shield(durable.append_aux(b"during")), 30)

        durable.add_snapshot_barrier(barrier)
        await durable.record(store.set("t", "x", 1.0))
        await durable.snapshot()
        assert (durable.stats.snapshots, durable.stats.failed_barriers) == (1, 0)
        await asyncio.shield(durable.append_aux(b"after"))
    assert side_log == [b"before"]
    recovered = _store()
    wal, report = Wal.open(tmp_path / "wal", recovered)
    # "before" is the host's (its barrier completed); the rest comes back, in log order.
    assert wal.take_recovered_aux() == [b"during", b"after"]
    assert report["aux_records"] == 2 and recovered.get("t", "x") == 1.0


async def test_a_failing_barrier_skips_the_snapshot_and_loses_nothing(tmp_path: Path) -> None:
    store = _store()
    async with DurableStore.open(tmp_path, store, WalConfig(fsync_interval_ms=0)) as durable:

        async def barrier() -> None:
            raise OSError("the side log's disk is full")

        durable.add_snapshot_barrier(barrier)
        await asyncio.shield(durable.append_aux(b"a"))
        await durable.snapshot()
        assert (durable.stats.snapshots, durable.stats.failed_barriers) == (0, 1)
        await durable.record(store.set("t", "x", 1.0))  # the log still works
    wal, _ = Wal.open(tmp_path / "wal", _store())
    assert wal.take_recovered_aux() == [b"a"]


async def _damage_last_record(tmp_path: Path) -> None:
    store = _store()
    async with DurableStore.open(tmp_path, store, WalConfig(fsync_interval_ms=0)) as durable:
        for i in range(5):
            await durable.record(store.set("t", f"f{i}", float(i)))
    seg = sorted((tmp_path / "wal").glob("wal-*.log"))[-1]
    last = [r for r in records(seg) if r.kind == DELTA][-1]
    flip(seg, last.offset + RECORD_HEADER + 3)


async def test_after_a_clean_exit_even_the_last_record_is_checked(tmp_path: Path) -> None:
    # A clean exit closes the log: damage to the last data record is a loss to report, not a torn write.
    await _damage_last_record(tmp_path)
    recovered = _store()
    durable = DurableStore.open(tmp_path, recovered, WalConfig())
    report = durable.stats.recovery
    assert (report["loss_suspected"], report["records_skipped"], report["truncated_bytes"]) == (1, 1, 0)
    assert recovered.get("t", "f3") == 3.0 and recovered.get("t", "f4") is None
    assert len(list((tmp_path / "wal" / "quarantine").iterdir())) == 1


async def test_refuse_does_not_open_a_damaged_log_and_names_the_damage(tmp_path: Path) -> None:
    await _damage_last_record(tmp_path)
    with pytest.raises(StorageError, match=r"wal-0+1\.log at byte \d+ .*1 records lost"):
        DurableStore.open(tmp_path, _store(), WalConfig(on_corruption="refuse"))
    assert not (tmp_path / "wal" / "quarantine").exists()


async def test_a_snapshot_that_cannot_be_written_is_counted_and_the_log_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure path reads the log's counters and error in the worker thread (on the event loop, that
    read waited for the log's lock through whatever fsync the committer was in). Every snapshot file name
    the log could pick is taken by a directory holding a file, so installing it fails."""
    store = _store()
    config = WalConfig(fsync_interval_ms=0, snapshot_every=1 << 40)
    async with DurableStore.open(tmp_path, store, config) as durable:
        for n in range(64):
            (tmp_path / "wal" / f"snap-{n:016}.bin").mkdir()
            (tmp_path / "wal" / f"snap-{n:016}.bin" / "taken").write_bytes(b"")
        await durable.record(store.set("t", "f", 1.0))
        await durable.snapshot()
        assert durable.stats.failed_snapshots == 1 and durable.stats.snapshots == 0
        assert "snapshot failed, the older ones are kept: " in caplog.text
        await durable.record(store.set("t", "f", 2.0))  # the log itself still takes writes
    for n in range(64):  # the obstruction gone, the log recovers every write
        shutil.rmtree(tmp_path / "wal" / f"snap-{n:016}.bin")
    recovered = _store()
    Wal.open(tmp_path / "wal", recovered)
    assert recovered.get("t", "f") == 2.0
