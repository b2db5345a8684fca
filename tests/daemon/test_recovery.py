"""Recovery of a real node's write-ahead log damaged while the node was stopped: a 4-byte flip in the middle
of the log, and separately both snapshots damaged. The restarted daemon (``drsdtp run``) keeps every
acknowledged write the damage did not hit, says what it lost (``/readyz`` 503 with the reason, the
``drsdtp_recovery_*`` metrics, ``drsdtp recover``), keeps the damaged bytes in the quarantine, becomes ready
once ``drsdtp recover --accept`` acknowledged it (audited), and stays ready across a restart."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsdtp._core import decode_state
from drsdtp.client import connect, field_to_python
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.daemon.walfiles import CHUNK, DELTA, RECORD_HEADER, flip, records
from tests.gossip.support import eventually
from tests.ingest.support import free_port

ROOT = pathlib.Path(__file__).parents[2]
Write = tuple[str, str, float]


def write_acked(data_dir: pathlib.Path, batches: int, snapshot_every: int) -> list[Write]:
    """Runs the writer to completion (a clean exit); returns the writes it acknowledged."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.daemon.writer_proc", str(data_dir), "--batches", str(batches),
         "--snapshot-every", str(snapshot_every)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-2000:]
    acked = []
    for line in done.stdout.splitlines():
        if line.startswith("ACK "):
            _, _, twin, field, value = line.split()
            acked.append((twin, field, float(value)))
    assert len(acked) == batches * 50
    return acked


def writes_in(payload: bytes) -> set[tuple[str, str]]:
    return {(t, f) for t, fields in decode_state(payload).items() for f in fields}


class Daemon:
    """``drsdtp run`` on a data dir (the writer's node id), with its API and metrics on free ports."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root, self.api_port, self.metrics_port = root, free_port(), free_port()
        self.config = root / "node.toml"
        self.config.write_text(f"""
node_id = "crash-1"
data_dir = "{root / "data"}"
[listen]
api = "127.0.0.1:{self.api_port}"
metrics = "127.0.0.1:{self.metrics_port}"
peer = "127.0.0.1:0"
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.root / "node.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config)],
                cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip

    async def __aenter__(self) -> Daemon:
        self.start()
        await eventually(lambda: self.http("/healthz")[0] == 200, 60, "the daemon serving its metrics port")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert code == 0, (self.root / "node.log").read_text()[-3000:]

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        _, body = self.http("/metrics")
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == name:
                    return float(s.value)
        raise AssertionError(f"no metric {name}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drsdtp", *args, "--api", f"127.0.0.1:{self.api_port}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    async def state(self) -> dict[tuple[str, str], object]:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            listing = await stub.ListTwins(api_pb2.ListTwinsRequest(), timeout=10)
            out = {}
            for t in listing.twins:
                twin = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=t.twin_id), timeout=10)
                out.update({(t.twin_id, f.name): field_to_python(f) for f in twin.fields})
            return out


def missing(acked: list[Write], state: dict[tuple[str, str], object]) -> set[tuple[str, str]]:
    return {(t, f) for t, f, v in acked if state.get((t, f)) != v}


async def accept_and_restart(root: pathlib.Path, daemon: Daemon) -> dict[tuple[str, str], object]:
    """`drsdtp recover --accept` makes the node ready (audited); returns the state it then holds."""
    shown = await asyncio.to_thread(daemon.cli, "recover", "--json")
    assert shown.returncode == 0, shown.stderr
    events = json.loads(shown.stdout)["events"]
    assert [e["accepted"] for e in events] == [False]
    refused = await asyncio.to_thread(daemon.cli, "recover", "--accept")
    assert refused.returncode == 2 and "--reason" in refused.stderr
    done = await asyncio.to_thread(
        daemon.cli, "recover", "--accept", "-m", "twins restored from peers", "--actor", "ops@site"
    )
    assert done.returncode == 0, done.stderr
    assert daemon.http("/readyz") == (200, "ready\n")
    assert daemon.metric("drsdtp_recovery_unaccepted") == 0
    audit = json.loads((await asyncio.to_thread(daemon.cli, "audit", "--json")).stdout)
    assert any(r["action"] == "recovery" and r["actor"] == "ops@site" for r in audit["records"]), audit
    return await daemon.state()


@pytest.mark.integration
async def test_a_flip_mid_log_costs_one_record_and_is_reported_until_accepted(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    acked = write_acked(data, batches=240, snapshot_every=10**9)
    (seg,) = sorted((data / "wal").glob("wal-*.log"))
    deltas = [r for r in records(seg) if r.kind == DELTA]
    victim = deltas[len(deltas) // 2]
    after = set().union(*(writes_in(r.payload) for r in deltas if r.offset > victim.offset))
    flip(seg, victim.offset + RECORD_HEADER + 10)
    damaged = seg.read_bytes()[victim.offset : victim.end]

    async with Daemon(tmp_path) as daemon:
        status, body = daemon.http("/readyz")
        assert status == 503 and "acknowledged data may be lost" in body and "recover --accept" in body, body
        assert daemon.metric("drsdtp_recovery_records_skipped") == 1
        assert daemon.metric("drsdtp_recovery_loss_suspected") == 1
        assert daemon.metric("drsdtp_recovery_unaccepted") == 1
        assert daemon.metric("drsdtp_recovery_bytes_quarantined") == len(damaged)
        state = await daemon.state()
        # Only the damaged record's writes are gone; every write after it is back.
        assert len(after) > 1000
        assert not after - state.keys()
        assert missing(acked, state) == writes_in(victim.payload)
        # The damaged bytes, exactly, and the report are in the quarantine.
        (entry,) = (data / "wal" / "quarantine").iterdir()
        (copy,) = entry.glob("*.bin")
        assert copy.read_bytes() == damaged
        report = json.loads((entry / "report.json").read_text())
        assert report["records_skipped"] == 1 and report["loss_suspected"] is True
        assert report["damage"][0]["offset"] == victim.offset
        status_doc = json.loads((await asyncio.to_thread(daemon.cli, "status", "--json")).stdout)
        assert status_doc["ready"].startswith("no: write-ahead log recovery needs an operator")
        accepted = await accept_and_restart(tmp_path, daemon)
    async with Daemon(tmp_path) as daemon:
        # The acknowledgement persists and the fresh snapshot made this start clean.
        assert daemon.http("/readyz") == (200, "ready\n")
        assert daemon.metric("drsdtp_recovery_records_skipped") == 0
        assert await daemon.state() == accepted


@pytest.mark.integration
async def test_both_snapshots_damaged_keep_every_write_the_log_holds(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    acked = write_acked(data, batches=240, snapshot_every=20)
    snaps = sorted((data / "wal").glob("snap-*.bin"))
    assert len(snaps) == 2, snaps
    oldest = int(snaps[0].stem.split("-")[1])
    live = [s for s in sorted((data / "wal").glob("wal-*.log")) if int(s.stem.split("-")[1]) >= oldest]
    in_log = set().union(*(writes_in(r.payload) for s in live for r in records(s) if r.kind == DELTA))
    damaged = {}
    for snap in snaps:
        chunk = next(r for r in records(snap) if r.kind == CHUNK)
        flip(snap, chunk.offset + RECORD_HEADER + 10)
        damaged[snap.name] = snap.read_bytes()

    async with Daemon(tmp_path) as daemon:
        status, body = daemon.http("/readyz")
        assert status == 503 and "acknowledged data may be lost" in body, body
        assert daemon.metric("drsdtp_recovery_snapshots_rejected") == 2
        assert daemon.metric("drsdtp_recovery_loss_suspected") == 1
        state = await daemon.state()
        # Every write the log holds is back; what is missing is only what the damaged snapshots alone held.
        assert len(in_log) > 500
        assert not in_log - state.keys()
        lost = missing(acked, state)
        assert not lost & in_log
        (entry,) = (data / "wal" / "quarantine").iterdir()
        assert {c.name: c.read_bytes() for c in entry.glob("snap-*.bin")} == damaged
        report = json.loads((entry / "report.json").read_text())
        assert sorted(s["file"] for s in report["snapshots_rejected"]) == sorted(damaged)
        accepted = await accept_and_restart(tmp_path, daemon)
    async with Daemon(tmp_path) as daemon:
        assert daemon.http("/readyz") == (200, "ready\n")
        assert await daemon.state() == accepted
