"""Three real daemons (``drsdtp run``) replicating over gRPC on loopback, each ingesting its own simulated
plant: one is frozen with SIGSTOP and thawed, one is killed with SIGKILL mid-ingest and restarted on its
data. All converge to identical state, and the killed node still holds what it had made durable."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from drsdtp.client import connect, field_to_python
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.ingest.support import free_port

ROOT = pathlib.Path(__file__).parents[2]
NAMES = ("a", "b", "c")


class Daemon:
    def __init__(self, name: str, root: pathlib.Path, ports: dict[str, int]) -> None:
        self.name, self.api_port = name, free_port()
        self.dir = root / name
        self.dir.mkdir()
        peers = "".join(
            f'[[peers]]\nname = "edge-{p}"\naddress = "127.0.0.1:{port}"\n'
            for p, port in ports.items()
            if p != name
        )
        # A finite replay as fast as possible, then a paced tail, so the node is busy when it is killed.
        self.config = self.dir / "node.toml"
        self.config.write_text(f"""
node_id = "edge-{name}"
data_dir = "{self.dir / "data"}"
[listen]
api = "127.0.0.1:{self.api_port}"
metrics = "127.0.0.1:0"
peer = "127.0.0.1:{ports[name]}"
[wal]
snapshot_every = 200
[[adapters]]
type = "simulated"
name = "plant-{name}"
twin_prefix = "{name}/"
rooms = 4
seed = {NAMES.index(name)}
dt_s = 10.0
speedup = 200.0
steps = 400
{peers}""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir / "node.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        log.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def status(self) -> api_pb2.StatusReply | None:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            try:
                reply: api_pb2.StatusReply = await stub.Status(api_pb2.StatusRequest(), timeout=2)
                return reply
            except grpc.aio.AioRpcError:
                return None

    async def call(self, method: str, request: object) -> Any:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            return await getattr(stub, method)(request, timeout=10)

    async def twins(self) -> dict[str, dict[str, object]]:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            listing = await stub.ListTwins(api_pb2.ListTwinsRequest(), timeout=5)
            out = {}
            for t in listing.twins:
                twin = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=t.twin_id), timeout=5)
                out[t.twin_id] = {f.name: field_to_python(f) for f in twin.fields}
            return out


@pytest.fixture
async def fleet(tmp_path: pathlib.Path) -> AsyncIterator[dict[str, Daemon]]:
    ports = {n: free_port() for n in NAMES}
    nodes = {n: Daemon(n, tmp_path, ports) for n in NAMES}
    try:
        yield nodes
    finally:
        for d in nodes.values():
            d.stop()


async def eventually(check: object, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if await check():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.5)


@pytest.mark.integration
async def test_frozen_and_killed_daemons_converge(fleet: dict[str, Daemon]) -> None:
    for d in fleet.values():
        d.start()

    async def ingesting(name: str, at_least: int) -> bool:
        s = await fleet[name].status()
        return s is not None and s.received >= at_least

    await eventually(lambda: ingesting("c", 200), 60, "c ingests")
    snapshot = await fleet["a"].call(
        "TakeSnapshot", api_pb2.TakeSnapshotRequest(twin_id="a/room-1", reason="mid-run", actor="test")
    )
    fleet["b"].signal(signal.SIGSTOP)  # frozen: its peers' keepalive notices, deltas queue for it
    await asyncio.sleep(3)
    fleet["c"].signal(signal.SIGKILL)  # mid-ingest: no shutdown, no flush
    assert fleet["c"].proc is not None
    fleet["c"].proc.wait(10)
    fleet["b"].signal(signal.SIGCONT)
    fleet["c"].start()  # recovers its log, replays the rest of its plant, catches up with its peers

    async def converged() -> bool:
        statuses = await asyncio.gather(*(d.status() for d in fleet.values()))
        if any(s is None for s in statuses):
            return False
        # Every plant finished its replay (the restarted node replays its plant from the start).
        done = all(s.received >= 400 * 4 * 6 for s in statuses)  # type: ignore[union-attr]
        return done and len({s.state_digest for s in statuses if s is not None}) == 1

    await eventually(converged, 120, "all three daemons hold the same state")
    views = [await d.twins() for d in fleet.values()]
    assert views[0] == views[1] == views[2]
    assert {t.split("/")[0] for t in views[0]} == set(NAMES)
    assert all(len(fields) >= 7 for fields in views[0].values())  # 6 sensors + scope, on every room

    # A rollback on one node is a write like any other: every node ends up with the restored values.
    rolled = await fleet["a"].call(
        "Rollback",
        api_pb2.RollbackRequest(twin_id="a/room-1", snapshot_id=snapshot.id, reason="test", actor="test"),
    )
    restored = {
        c.name: field_to_python(c.after) for c in rolled.changed if not c.name.endswith(".q")
    }  # quality scores are the intelligence's to rewrite
    assert restored, "the plant moved on after the snapshot, so the rollback changes sensor values"

    async def rolled_back_everywhere() -> bool:
        views = [(await d.twins())["a/room-1"] for d in fleet.values()]
        return all(all(v.get(k) == want for k, want in restored.items()) for v in views)

    await eventually(rolled_back_everywhere, 30, "every node holds the restored values")


@pytest.mark.integration
def test_the_demo_runs_three_nodes_to_convergence_and_stops_cleanly(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "drsdtp",
            "demo",
            "--duration",
            "15",
            "--data-dir",
            str(tmp_path),
            "--api",
            f"127.0.0.1:{free_port()}",
            "--metrics",
            f"127.0.0.1:{free_port()}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "converged after" in result.stdout
    assert "edge-a" in result.stdout and "edge-c" in result.stdout
    # Each node stopped through its staged shutdown (SIGTERM), leaving a recoverable log behind.
    for name in ("edge-a", "edge-b", "edge-c"):
        assert "Traceback" not in (tmp_path / name / "node.log").read_text()
        assert list((tmp_path / name / "wal").glob("wal-*.log"))
