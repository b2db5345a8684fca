"""Crash safety of a real node process: SIGKILL under heavy ingest loses nothing that was acknowledged, and
recovery cuts a torn or corrupt log tail instead of trusting it."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from drsdtp.config import parse_config
from drsdtp.node.node import Node

ROOT = pathlib.Path(__file__).parents[2]


def config(data_dir: pathlib.Path) -> object:
    return parse_config(
        {
            "node_id": "crash-1",
            "data_dir": str(data_dir),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        }
    )


def run_until_acks(data_dir: pathlib.Path, acks: int) -> list[tuple[str, str, float]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.daemon.writer_proc", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    acked: list[tuple[str, str, float]] = []
    deadline = time.monotonic() + 60
    while len(acked) < acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ACK"):
            _, _, twin, field, value = line.split()
            acked.append((twin, field, float(value)))
    # Kill while writes are in flight: no shutdown, no flush.
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    for line in rest.splitlines():
        if line.startswith("ACK"):
            _, _, twin, field, value = line.split()
            acked.append((twin, field, float(value)))
    assert len(acked) >= acks, "the writer did not reach the ack target"
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


async def test_start_on_a_log_with_a_corrupt_record(tmp_path: pathlib.Path) -> None:
    await _write(tmp_path, 30)
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF  # inside the payload of the last record: its CRC no longer matches
    seg.write_bytes(bytes(data))
    state, report = await recovered(tmp_path)
    assert report["corrupt_records"] == 1
    assert all(state[("t", f"f{i}")] == float(i) for i in range(29))
    assert ("t", "f29") not in state
    # The node keeps working on top of the cut log, and the next start is clean.
    await _write(tmp_path, 31)
    state, report = await recovered(tmp_path)
    assert report["corrupt_records"] == 0 and state[("t", "f30")] == 30.0
