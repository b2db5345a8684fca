"""Floods for a real node process (``drsdtp run``): every external input driven at once, each by a real
client (paho through mosquitto, a raw gRPC peer, gRPC API clients, frozen Watch client processes), and the
node's resident set sampled throughout. Used by the memory budget test and ``benches/bench_memory.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import random
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import paho.mqtt.client as paho

from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.core import Store, replica_id
from drsdtp.wire.v1 import api_pb2
from drsdtp.wire.v1.peer_pb2 import DeltaBatch, PeerMessage
from tests.gossip.support import pushing_peer
from tests.ingest.support import free_port, terminate

ROOT = pathlib.Path(__file__).parents[2]


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class Daemon:
    """A ``drsdtp run`` process on free ports; ``toml`` is the config body after the [listen] table."""

    workdir: pathlib.Path
    body: str
    node_id: str = "budget-1"
    api_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> pathlib.Path:
        return self.workdir / "node.toml"

    def write_config(self) -> pathlib.Path:
        self.config_path.write_text(
            f'node_id = "{self.node_id}"\ndata_dir = "{self.workdir / "data"}"\n'
            f'[listen]\napi = "127.0.0.1:{self.api_port}"\npeer = "127.0.0.1:{self.peer_port}"\n'
            f'metrics = "127.0.0.1:{self.metrics_port}"\n' + self.body
        )
        return self.config_path

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        self.write_config()
        with (self.workdir / "node.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config_path)],
                cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        return self.proc

    async def start(self) -> None:
        proc = self.spawn()
        for _ in range(600):  # until the API answers (a liveness cap, not a timing assertion)
            assert proc.poll() is None, f"the node exited; see {self.workdir / 'node.log'}"
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.status(deadline_s=1)
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the node's API never answered; see {self.workdir / 'node.log'}")

    async def status(self, deadline_s: float = 10) -> api_pb2.StatusReply:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            reply: api_pb2.StatusReply = await stub.Status(api_pb2.StatusRequest(), timeout=deadline_s)
            return reply

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        terminate(self.proc)


class RssSampler:
    """Samples a process's RSS every ``interval_s`` until stopped; keeps the peak and the series."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            rss = rss_bytes(self.pid)
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            await asyncio.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def mqtt_flood(port: int, stop: threading.Event, *, keys: int, oversized_bytes: int, seed: int = 1) -> None:
    """Publishes through the broker until ``stop``: first ``keys`` distinct keys (one twin each) at QoS 0,
    then a mix forever: values for known and for new keys, QoS 0 and 1, garbage and oversized payloads."""
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
        client_id=f"flood-{seed}",
    )
    client.max_queued_messages_set(10_000)  # the publisher's own queue: bounded, the broker is the buffer
    client.connect("127.0.0.1", port)
    client.loop_start()
    rng = random.Random(seed)
    try:
        for i in range(keys):
            client.publish(f"q0/t{i:06d}/v", str(float(i)), qos=0)
            if i % 1000 == 0 and stop.is_set():
                return
        n = 0
        while not stop.is_set():
            n += 1
            key = rng.randrange(2 * keys)  # half of them beyond the key cap
            client.publish(f"q0/t{key:06d}/v", str(rng.random()), qos=0)
            client.publish(f"q1/t{key % 500:06d}/w", str(rng.random()), qos=1)
            if n % 10 == 0:
                client.publish(f"q0/t{key:06d}/v", b"not a number \xff", qos=0)
            if n % 50 == 0:
                client.publish(f"q0/t{key:06d}/v", b"9" * oversized_bytes, qos=1)
    finally:
        client.loop_stop()
        client.disconnect()


async def peer_flood(port: int, stop: asyncio.Event, *, twins: int, fields: int, batch: int) -> int:
    """A peer that sends DeltaBatches as fast as the node takes them, on ``twins`` twins of ``fields``
    fields each (rewritten over and over), and never acknowledges what the node sends it. Returns the
    deltas sent."""
    store = Store(replica_id("flooder"))
    sent = 0
    async with pushing_peer(port, "flooder") as peer:
        while not stop.is_set():
            deltas = [
                store.set_many(
                    f"peer-{(sent + k) % twins:04d}",
                    {f"f{j}": float(sent + k) for j in range(fields)},
                )
                for k in range(batch)
            ]
            await peer.send(PeerMessage(deltas=DeltaBatch(from_seq=sent, to_seq=sent + batch, deltas=deltas)))
            sent += batch
    return sent


async def api_abuse(port: int, stop: asyncio.Event) -> dict[str, int]:
    """Garbage and oversized request bodies on every method, and real requests, several at once, until
    ``stop``. Returns the status codes seen, by name."""
    service = api_pb2.DESCRIPTOR.services_by_name["TwinApi"]
    seen: dict[str, int] = {}
    channel, stub = connect(Address("127.0.0.1", port))

    async def one(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        seen[code] = seen.get(code, 0) + 1

    async with channel:
        while not stop.is_set():
            calls: list[object] = []
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                for body in (b"\xff\xff\xff garbage", b"\x0a" + b"\xff" * (100 << 10)):  # 100 KiB: over 64
                    if method.server_streaming:
                        calls.append(channel.unary_stream(path)(body, timeout=5).read())
                    else:
                        calls.append(channel.unary_unary(path)(body, timeout=5))
            # Real requests too, several at once (not ListTwins: it scans every twin without yielding, so a
            # loop of them would only measure how long the event loop is blocked).
            calls += [stub.Status(api_pb2.StatusRequest(), timeout=10) for _ in range(8)]
            calls += [stub.GetTwin(api_pb2.GetTwinRequest(twin_id="t000001"), timeout=10) for _ in range(8)]
            await asyncio.gather(*(one(c) for c in calls))
    return seen


@contextlib.asynccontextmanager
async def frozen_watchers(
    port: int, streams: int, channels: int = 1
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``tests/daemon/watch_client.py`` process that sends ``streams`` Watch calls over ``channels``
    connections and freezes itself right away; killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.daemon.watch_client", str(port), str(streams),
        "--channels", str(channels), "--freeze-at-once",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line, "the watch client exited early"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
