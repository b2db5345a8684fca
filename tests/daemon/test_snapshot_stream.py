"""Snapshots are streamed to disk in bounded chunks: a real node process killed (SIGKILL) while one is being
written recovers from the previous good snapshot and the log, losing nothing it acknowledged; and a node
writes every chunk within the chunk bound, so a snapshot never needs the whole state in memory at once."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from drsdtp._core import Store, Wal
from tests.daemon.snapshot_proc import FIELDS, value
from tests.daemon.walfiles import CHUNK, SNAPSHOT_END, records

ROOT = pathlib.Path(__file__).parents[2]
CHUNK_BYTES = 1 << 20  # crdt_core::wal::SNAPSHOT_CHUNK_BYTES
TWINS = 60_000  # about 7 MB of state: 7 chunks, and a snapshot that takes long enough to be killed in


def kill_mid_snapshot(data_dir: pathlib.Path) -> list[str]:
    """Runs ``snapshot_proc`` until it snapshots in a loop, then SIGKILLs it while a ``.tmp`` snapshot is
    on disk; returns the snapshot files left behind (the ``.tmp`` one included)."""
    wal = data_dir / "wal"
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.daemon.snapshot_proc", str(data_dir), str(TWINS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "GOOD"
            assert proc.stdout.readline().strip() == "MORE"
            # Poll for a snapshot being written (past its first chunk), then kill at once.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tmp = list(wal.glob("snap-*.bin.tmp"))
                if tmp and tmp[0].exists() and tmp[0].stat().st_size > CHUNK_BYTES:
                    break
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        left = sorted(p.name for p in wal.glob("snap-*"))
        if any(n.endswith(".tmp") for n in left):
            return left
        # The kill landed between a rename and the next snapshot's first write: run it again.
    pytest.fail("never caught a snapshot mid-write in 5 runs")


@pytest.mark.integration
def test_sigkill_mid_snapshot_recovers_from_the_previous_good_one(tmp_path: pathlib.Path) -> None:
    left = kill_mid_snapshot(tmp_path)
    good = [n for n in left if n.endswith(".bin")]
    assert good, f"no complete snapshot before the one killed: {left}"
    store = Store(1)
    _, report = Wal.open(tmp_path / "wal", store)
    # The torn snapshot is gone, the newest complete one was used, nothing is reported damaged.
    assert not list((tmp_path / "wal").glob("*.tmp"))
    assert report["snapshot_seq"] == int(good[-1][len("snap-") : -len(".bin")])
    assert report["corrupt_snapshots"] == report["loss_suspected"] == 0, report
    # Every acknowledged write, before the good snapshot and after it (from the log).
    assert sum(t.startswith("twin-") for t in store.twins()) == TWINS
    for t in (0, 1, TWINS // 2, TWINS - 1):
        fields = store.fields(f"twin-{t}")
        assert {f: fields[f"f{f}"] for f in range(FIELDS + 1)} == {f: value(t, f) for f in range(FIELDS + 1)}


def test_every_snapshot_chunk_is_within_the_chunk_bound(tmp_path: pathlib.Path) -> None:
    store = Store(1)
    wal, _ = Wal.open(tmp_path, store)
    for t in range(30_000):
        store.set_many(f"twin-{t}", {f"f{f}": float(f) for f in range(10)})
    wal.snapshot(store)
    (snap,) = tmp_path.glob("snap-*.bin")
    chunks = [r for r in records(snap) if r.kind == CHUNK]
    assert [r.kind for r in records(snap)][-1] == SNAPSHOT_END
    sizes = [len(r.payload) for r in chunks]
    assert len(sizes) >= 3 and max(sizes) <= CHUNK_BYTES, sizes
    copy = Store(2)
    Wal.open(tmp_path, copy)
    assert copy.encode_state() == store.encode_state()
