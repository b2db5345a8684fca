"""Crash safety of a real node process: SIGKILL under heavy ingest loses nothing that was acknowledged, and
recovery cuts a torn or corrupt log tail instead of trusting it."""

from __future__ import annotations

import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from drsdtp.config import parse_config
from drsdtp.node.node import Node
from tests.daemon.walfiles import DELTA, RECORD_HEADER, flip, records

ROOT = pathlib.Path(__file__).parents[2]


def config(data_dir: pathlib.Path) -> object:
    return parse_config(
        {
            "node_id": "crash-1",
            "data_dir": str(data_dir),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        }
    )


def _parse_ack(line: str) -> tuple[str, str, float] | None:
    if not line.startswith("ACK"):
        return None
    _, _, twin, field, value = line.split()
    return twin, field, float(value)


def run_until_acks(data_dir: pathlib.Path, acks: int) -> list[tuple[str, str, float]]:
    """Runs the writer until ``acks`` readings were acknowledged (at most 60 s), then SIGKILLs it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.daemon.writer_proc", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    # A thread reads the pipe so the deadline holds even when the writer stops printing.
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    acked: list[tuple[str, str, float]] = []
    ready = False
    deadline = time.monotonic() + 60
    while len(acked) < acks and (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        ready = ready or line.strip() == "READY"
        if (ack := _parse_ack(line)) is not None:
            acked.append(ack)
    # Kill while writes are in flight: no shutdown, no flush.
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=30)
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if (ack := _parse_ack(line)) is not None:
            acked.append(ack)
    assert ready, "the writer never became ready"
    assert len(acked) >= acks, f"the writer stalled: {len(acked)} of {acks} acknowledgements in 60 s"
    return acked


async def recovered(data_dir: pathlib.Path) -> tuple[dict[tuple[str, str], Any], dict[str, int]]:
    async with Node(config(data_dir)) as node:  # type: ignore[arg-type]
        store = node.store
        state = {(t, f): v for t in store.twins() for f, v in store.fields(t).items()}
        return state, node.durable.stats.recovery


@pytest.mark.integration
async def test_sigkill_under_heavy_ingest_loses_no_acknowledged_write(tmp_path: pathlib.Path) -> None:
    acked = run_until_acks(tmp_path, 20_000)
    state, report = await recovered(tmp_path)
    missing = [a for a in acked if state.get((a[0], a[1])) != a[2]]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}; recovery {report}"
    # The log was snapshotted and truncated along the way, so recovery used a snapshot.
    assert report["snapshot_seq"] > 0
    # A second crash on top of the recovered state still loses nothing.
    more = run_until_acks(tmp_path, 5_000)
    state, _ = await recovered(tmp_path)
    assert all(state.get((t, f)) == v for t, f, v in acked[-1000:] + more)


def _segments(data_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((data_dir / "wal").glob("wal-*.log"))


async def _write(data_dir: pathlib.Path, n: int) -> None:
    async with Node(config(data_dir)) as node:  # type: ignore[arg-type]
        for i in range(n):
            await node.commit(node.store.set("t", f"f{i}", float(i)), ["t"], "local")


async def test_start_on_a_log_with_a_torn_tail(tmp_path: pathlib.Path) -> None:
    await _write(tmp_path, 30)
    seg = _segments(tmp_path)[-1]
    good = seg.stat().st_size
    torn = b"\xd7\x40\x00\x00\x00\x01\x02"  # a record header cut short by a power loss
    with seg.open("ab") as f:
        f.write(torn)
    state, report = await recovered(tmp_path)
    assert report["truncated_bytes"] == 7
    # The torn bytes were cut: whatever the node appended after recovery starts where good data ended.
    assert seg.read_bytes()[good : good + 7] != torn
    assert all(state[("t", f"f{i}")] == float(i) for i in range(30))


async def test_start_on_a_log_whose_last_record_was_damaged_after_a_clean_stop(
    tmp_path: pathlib.Path,
) -> None:
    await _write(tmp_path, 30)
    seg = _segments(tmp_path)[-1]
    last = [r for r in records(seg) if r.kind == DELTA][-1]
    flip(seg, last.offset + RECORD_HEADER + 2)  # its payload CRC no longer matches
    state, report = await recovered(tmp_path)
    # The node stopped cleanly (the log ends with a Close record): this is damage to acknowledged data, not a
    # torn write. Reported, and the records before it kept.
    assert (report["loss_suspected"], report["records_skipped"], report["truncated_bytes"]) == (1, 1, 0)
    assert all(state[("t", f"f{i}")] == float(i) for i in range(29))
    assert ("t", "f29") not in state
    assert len(list((tmp_path / "wal" / "quarantine").iterdir())) == 1
    # The node keeps working, and the fresh snapshot recovery took makes the next start clean.
    await _write(tmp_path, 31)
    state, report = await recovered(tmp_path)
    assert report["corrupt_records"] == 0 and state[("t", "f30")] == 30.0
