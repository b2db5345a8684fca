"""Peer replication benchmarks, each node a separate process on loopback, ratios in the same run.

    .venv/bin/python benches/bench_replication.py            # every row, about five minutes on 2 cores
    .venv/bin/python benches/bench_replication.py --quick    # smaller sizes, a smoke run
    .venv/bin/python benches/bench_replication.py --only-latency   # the latency rows alone (1, 1b)

1. latency: 3 replicators, node a writes 10k field updates/s (batches of 10 every ms); p50/p99 from the
   write on a to its visibility on b (and c). Goal: p99 <= 2 ms. Measured from ``on_local_delta`` (no WAL:
   the node's group commit adds its fsync interval on top).
1b. the same through 3 real ``drsdtp run`` processes (WAL on, group commit as soon as a write waits): a
   client writes 10k field updates/s to a's API (100 fields a request) and Watch streams on a, b and c
   see them. Issue 13's goal: p99 at b <= 2 ms. The lag at a itself (API, WAL, Watch; no replication) is
   the baseline in the same run: b minus a, per update seen at both, is what replication adds (a's own
   path includes an fsync, which alone takes milliseconds on most disks, so b's absolute p99 cannot
   be below a's). The streams ask for many changes a message, as the SDK does: one gRPC write per change
   cost each node about a sixth of its CPU here and made the Watch itself the tail being measured.
2. throughput: 2 nodes, a writes numeric readings flat out (``write_batch`` of 1000, 100k distinct fields so
   joins cannot collapse overwrites) until b holds the last one (bare replicators, no WAL). Baseline in
   the same run: the same two-process gRPC bidi stream carrying one Python protobuf object per reading
   (batches of 100, window 16: the ~330k/s setup of research/env-baseline.md section 2.2).
2b. the same between 2 real ``drsdtp run`` processes (WAL, history, intelligence on): a client writes to a's
   API flat out, b holding a marker written after them ends the clock. Issue 13's goal: >= 5M field
   updates/s. The writer's API intake is the ceiling, so it is first measured alone (one node, no peer)
   through each real intake: NumericColumns (5,000 a request) and f64 report ops (3,000 a request, the
   SDK's bytes), each within the API's 64 KiB request bound, the client's bytes built ahead where they do
   not depend on the values (the client shares the 2 cores); node to node then uses the fastest of the
   same repetition, and says which. Beside it: the bare replicators of 2 (the ratio), a's own ingest
   rate (the feed: replication cannot outrun it) and the receiver's CPU seconds per million updates,
   node against bare replicator (its cost whatever the feed), also counted 4 s after the clock stopped
   (history folds what b took into blocks when its segments seal, maybe after the last update arrived).
2c. catch-up: the same 2 real nodes linked through TCP proxies; b is cut off while a's API takes the load
   of 2b, then the link heals and the clock runs from b seeing a up until b's state digest equals a's:
   replication itself (a's backlog, resent joined: overwrites collapse, so the fields carried are counted
   beside the updates), which a's API intake does not limit. 2b is the intake-limited live row.
3. heal: 5 nodes partitioned {n1,n2} | {n3,n4,n5} (TCP proxies cut), 100k divergent updates written on
   both sides; time from healing to identical digests everywhere, and the bytes on the wire for it.
   Goal: <= 2 s. The nodes here reconnect with a 0.5 s backoff cap; one more run uses the default cap.

Timestamps cross processes through CLOCK_MONOTONIC, which is system-wide on Linux.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import resource
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import bench_report
import grpc
import numpy as np
from bench_report import Goal, Row
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drsdtp.client.channel import connect  # noqa: E402
from drsdtp.client.writes import TwinWrite, request_bytes  # noqa: E402
from drsdtp.client.writes import report as report_op  # noqa: E402
from drsdtp.config import Address, PeerConfig  # noqa: E402
from drsdtp.core import BatchWriter, Store, replica_id  # noqa: E402
from drsdtp.gossip.limits import GossipLimits  # noqa: E402
from drsdtp.gossip.replicator import Replicator  # noqa: E402
from drsdtp.node.loop_lag import LoopLag  # noqa: E402
from drsdtp.protobytes import LENGTH, length_prefixed, tag, varint  # noqa: E402
from drsdtp.wire.v1 import api_pb2  # noqa: E402
from tests.api.nodes import ApiNode  # noqa: E402
from tests.gossip.procs import Proxy  # noqa: E402
from tests.ingest.support import free_port  # noqa: E402

LIMITS = GossipLimits(reconnect_max_s=0.5, tick_s=0.1)
WATCH_MAX_CHANGES = 512  # what the SDK asks for


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- the worker: one node per process --------------------------------------------------------------------


class Worker:
    def __init__(self) -> None:
        self.store: Store | None = None
        self.replicator: Replicator | None = None
        self.latencies: list[float] = []
        self.last: dict[tuple[str, str], object] = {}
        self.measuring = False
        self.done_at: float | None = None
        self.done = asyncio.Event()
        self.loop_lag = LoopLag()  # the same sampler a node runs: the bare side of the stall breakdown
        self.lag_before: list[tuple[float, int]] = []

    @property
    def rep(self) -> Replicator:
        assert self.replicator is not None
        return self.replicator

    def on_change(self, twins: set[str]) -> None:
        now = time.monotonic_ns()
        if "done" in twins:
            self.done_at = now / 1e9
            self.done.set()
        if not self.measuring:
            return
        assert self.store is not None
        for twin in twins:
            if twin.startswith("lat-"):
                for name, value in self.store.fields(twin).items():
                    if self.last.get((twin, name)) != value and isinstance(value, float):
                        self.last[(twin, name)] = value
                        self.latencies.append((now - value) / 1e6)

    async def serve(self) -> None:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        emit({"ready": True})
        while line := await reader.readline():
            command = json.loads(line)
            handler: Callable[..., Awaitable[dict[str, Any]]] = getattr(self, "cmd_" + command.pop("cmd"))
            emit(await handler(**command))
            if self.replicator is None and self.store is not None:
                return
        if self.replicator is not None:  # the driver went away
            await self.cmd_stop()

    async def cmd_start(self, name: str, peers: dict[str, int], **limits: Any) -> dict[str, Any]:
        self.store = Store(replica_id(name))
        seeds = [PeerConfig(p, Address("127.0.0.1", port)) for p, port in peers.items()]
        self.replicator = Replicator(
            self.store, name, Address("127.0.0.1", 0), seeds, ["default"], None,
            GossipLimits(**{**{f: getattr(LIMITS, f) for f in LIMITS.__slots__}, **limits}),
            on_change=self.on_change,
        )  # fmt: skip
        await self.replicator.__aenter__()
        await self.loop_lag.__aenter__()
        return {"port": self.replicator.port}

    async def cmd_wait_peers(self, peers: list[str]) -> dict[str, Any]:
        await self.rep.wait_for_peers(peers, 60)
        return {"ok": True}

    async def cmd_measure(self) -> dict[str, Any]:
        self.measuring, self.latencies = True, []
        self.lag_before = list(self.loop_lag.lag.snapshot().buckets)
        return {"ok": True}

    async def cmd_latencies(self) -> dict[str, Any]:
        self.measuring = False
        lag = stalls(self.lag_before, list(self.loop_lag.lag.snapshot().buckets))
        return {"latencies": self.latencies, "loop_lag": lag}

    async def cmd_load(self, rate: int, batch: int, seconds: float) -> dict[str, Any]:
        """Write ``rate`` updates/s in batches of ``batch``, each value the monotonic write time in ns."""
        assert self.store is not None
        writer = BatchWriter(self.store)
        fields = [f"f{j}" for j in range(batch)]
        interval = batch / rate
        start = time.monotonic()
        n = 0
        while (due := start + n * interval) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            twin = f"lat-{n % 100}"
            values = np.full(batch, float(time.monotonic_ns()))
            self.rep.on_local_delta(writer.write([twin] * batch, fields, values))
            n += 1
        return {"written": n * batch, "seconds": time.monotonic() - start}

    async def cmd_flood(self, updates: int, batch: int, prefix: str, twins: int) -> dict[str, Any]:
        """Write ``updates`` numeric readings as fast as replication takes them (backpressure: wait while
        the delta buffer holds more than a few batches), then a ``done`` marker."""
        assert self.store is not None
        writer = BatchWriter(self.store)
        per_twin = max(1, 100_000 // twins)
        keys = np.arange(updates) % (twins * per_twin)
        twin_ids = writer.twin_ids([f"{prefix}-{k // per_twin}" for k in range(twins * per_twin)])
        field_ids = writer.field_ids([f"f{k % per_twin}" for k in range(twins * per_twin)])
        values = np.random.default_rng(1).random(updates)
        src = np.zeros(batch, np.int64)
        start = time.monotonic_ns()
        for i in range(0, updates, batch):
            k = keys[i : i + batch]
            delta = self.store.write_batch(twin_ids[k], field_ids[k], values[i : i + batch], src[: len(k)])
            self.rep.on_local_delta(delta)
            while len(self.rep.core.log) > 32:  # noqa: ASYNC110 - backpressure: the buffer drains on acks
                await asyncio.sleep(0.0005)
            await asyncio.sleep(0)
        self.rep.on_local_delta(self.store.set("done", prefix, True))
        return {"start": start / 1e9, "end": time.monotonic_ns() / 1e9}

    async def cmd_write_local(self, updates: int, batch: int, prefix: str) -> dict[str, Any]:
        """Divergent writes for the partition benchmark: distinct twins per node, 100 fields each."""
        assert self.store is not None
        writer = BatchWriter(self.store)
        names = [f"{prefix}-{k // 100}" for k in range(updates)]
        fields = [f"f{k % 100}" for k in range(updates)]
        values = np.random.default_rng(2).random(updates)
        for i in range(0, updates, batch):
            self.rep.on_local_delta(
                writer.write(names[i : i + batch], fields[i : i + batch], values[i : i + batch])
            )
            while len(self.rep.core.log) > 64 and self.rep.connected_peers():  # noqa: ASYNC110 - as above
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
        return {"ok": True}

    async def cmd_wait_done(self, timeout_s: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            await self.done.wait()
        return {"done_at": self.done_at}

    async def cmd_digest(self) -> dict[str, Any]:
        assert self.store is not None
        return {
            "digest": hashlib.sha256(self.store.digest()).hexdigest(),
            "peers": self.rep.connected_peers(),
        }

    async def cmd_wire(self) -> dict[str, Any]:
        stats = self.rep.peer_stats().values()
        return {
            "bytes_sent": sum(s.bytes_sent for s in stats),
            "catchup_bytes_sent": sum(s.catchup_bytes_sent for s in stats),
            "deltas_sent": sum(s.deltas_sent for s in stats),
            "retransmits": sum(s.retransmits for s in stats),
        }

    async def cmd_cpu(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_s": usage.ru_utime + usage.ru_stime}

    async def cmd_stop(self) -> dict[str, Any]:
        await self.loop_lag.__aexit__(None, None, None)
        await self.rep.__aexit__(None, None, None)
        self.replicator = None
        return {"stopped": True}


# --- the baseline: one Python protobuf object per reading ------------------------------------------------


def baseline_messages() -> tuple[type[Message], type[Message], type[Message]]:
    """Reading / Batch / Ack of research/env-baseline.md A.2, built at run time (no generated code)."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="edgebench.proto", package="edgebench", syntax="proto3")
    reading = proto.message_type.add(name="Reading")
    reading.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    reading.field.add(name="value", number=2, type=f.TYPE_DOUBLE, label=f.LABEL_OPTIONAL)
    reading.field.add(name="ts", number=3, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    batch = proto.message_type.add(name="Batch")
    batch.field.add(
        name="readings", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED, type_name=".edgebench.Reading"
    )
    batch.field.add(name="seq", number=2, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    ack = proto.message_type.add(name="Ack")
    ack.field.add(name="seq", number=1, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    ack.field.add(name="count", number=2, type=f.TYPE_UINT32, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"edgebench.{n}"))
        for n in ("Reading", "Batch", "Ack")
    )


async def baseline_server() -> None:
    _, batch_cls, ack_cls = baseline_messages()

    async def stream(requests: Any, context: Any) -> Any:
        async for raw in requests:
            b: Any = batch_cls.FromString(raw)
            yield ack_cls(seq=b.seq, count=len(b.readings)).SerializeToString()

    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("edgebench.Gossip", {"Stream": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    emit({"ready": True, "port": port})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await server.stop(None)


async def baseline_client(port: int, readings: int, batch: int = 100, window: int = 16) -> dict[str, float]:
    reading_cls, batch_cls, _ = baseline_messages()
    build = 50_000
    t0 = time.perf_counter()
    for i in range(build // batch):
        now = time.time_ns()
        batch_cls(
            readings=[reading_cls(key=f"temp_{j}", value=23.5 + j, ts=now) for j in range(batch)], seq=i
        ).SerializeToString()
    build_rate = build / (time.perf_counter() - t0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream("/edgebench.Gossip/Stream")()
        sem = asyncio.Semaphore(window)
        batches = readings // batch

        async def read_acks() -> None:
            for _ in range(batches):
                await call.read()
                sem.release()

        reader = asyncio.create_task(read_acks())
        t0 = time.perf_counter()
        for i in range(batches):
            await sem.acquire()
            now = time.time_ns()
            message: Any = batch_cls(
                readings=[reading_cls(key=f"temp_{j}", value=23.5 + j, ts=now) for j in range(batch)], seq=i
            )
            await call.write(message.SerializeToString())
        await reader
        elapsed = time.perf_counter() - t0
        await call.done_writing()
    return {"readings_per_s": readings / elapsed, "build_only_per_s": build_rate}


# --- the driver ------------------------------------------------------------------------------------------


class Proc:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    log_path = Path(tempfile.gettempdir()) / "bench_replication.log"

    async def __aenter__(self) -> Proc:
        with self.log_path.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                *(sys.executable, __file__, *self.args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                limit=1 << 26,
            )
        self.hello = await self.read()
        return self

    async def read(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.args} exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **kwargs}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read()

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_nodes(
    names: list[str], links: Callable[[str, str], int] | None = None, **limits: Any
) -> list[Proc]:
    """Workers started one after the other; each seeds the ones before it (or a proxy port via ``links``)."""
    procs: list[Proc] = []
    ports: dict[str, int] = {}
    for name in names:
        proc = await Proc("--worker").__aenter__()
        peers = {p: (links(name, p) if links else port) for p, port in ports.items()}
        ports[name] = (await proc.call("start", name=name, peers=peers, **limits))["port"]
        procs.append(proc)
    for name, proc in zip(names, procs, strict=True):
        await proc.call("wait_peers", peers=[n for n in names if n != name])
    return procs


async def stop_nodes(procs: list[Proc]) -> None:
    for proc in procs:
        await proc.call("stop")
        await proc.__aexit__()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


STALL_MS = (10, 50)  # the breakdown's thresholds (bounds of the nodes' duration histograms' buckets)


def stalls(before: Sequence[Sequence[float]], after: Sequence[Sequence[float]]) -> dict[str, Any]:
    """What a duration histogram (cumulative ``(bound s, count)`` pairs) took in between two readings: how
    many above each of ``STALL_MS``, and the bucket bounds holding the 99th percentile and the worst (so
    ``worst_ms`` 50 means between the next lower bound and 50 ms)."""
    counts = [(bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1] if counts else 0
    out: dict[str, Any] = {"n": total}
    for ms in STALL_MS:
        at = next(c for bound, c in counts if abs(bound - ms / 1000) < 1e-9)
        out[f"over_{ms}ms"] = total - at
    out["p99_ms"] = next((b * 1e3 for b, c in counts if c >= 0.99 * total), None) if total else None
    out["worst_ms"] = next((b * 1e3 for b, c in counts if c == total), None) if total else None
    return out


async def bench_latency(seconds: float) -> dict[str, Any]:
    procs = await start_nodes(["a", "b", "c"])
    a, b, c = procs
    await b.call("measure")
    await c.call("measure")
    written = await a.call("load", rate=10_000, batch=10, seconds=seconds)
    await asyncio.sleep(0.5)
    seen_b, seen_c = await b.call("latencies"), await c.call("latencies")
    lat_b, lat_c = seen_b["latencies"], seen_c["latencies"]
    await stop_nodes(procs)
    return {
        "written": written["written"],
        "rate_per_s": round(written["written"] / written["seconds"]),
        "seen_at_b": len(lat_b),
        "b_p50_ms": round(pct(lat_b, 50), 3),
        "b_p99_ms": round(pct(lat_b, 99), 3),
        "b_max_ms": round(max(lat_b), 3),
        "c_p50_ms": round(pct(lat_c, 50), 3),
        "c_p99_ms": round(pct(lat_c, 99), 3),
        "b_loop_lag": seen_b["loop_lag"],  # the stall breakdown, as the nodes report theirs
    }


async def bench_throughput(updates: int, join_min_entries: int) -> dict[str, Any]:
    procs = await start_nodes(["a", "b"], join_min_entries=join_min_entries)
    a, b = procs
    cpu_before = (await b.call("cpu"))["cpu_s"]
    flood = await a.call("flood", updates=updates, batch=1000, prefix="tp", twins=1000)
    done = await b.call("wait_done", timeout_s=300)
    cpu = (await b.call("cpu"))["cpu_s"] - cpu_before
    await stop_nodes(procs)
    seconds = done["done_at"] - flood["start"]
    return {
        "updates": updates,
        "seconds": round(seconds, 3),
        "updates_per_s": round(updates / seconds),
        "receiver_cpu_s_per_m": round(cpu / updates * 1e6, 3),
    }


async def bench_baseline(readings: int) -> dict[str, Any]:
    async with Proc("--baseline-server") as server:
        result = await baseline_client(server.hello["port"], readings)
        assert server.process is not None and server.process.stdin is not None
        server.process.stdin.write(b"\n")
        await server.process.stdin.drain()
    return {k: round(v) for k, v in result.items()}


async def bench_heal(updates: int, **limits: Any) -> dict[str, Any]:
    names = ["n1", "n2", "n3", "n4", "n5"]
    side = {"n1": 0, "n2": 0, "n3": 1, "n4": 1, "n5": 1}
    # Every node reaches every other through its own proxy (configured seeds take precedence over the
    # addresses the nodes advertise in the membership twin, so nothing bypasses the proxies).
    proxies: dict[tuple[str, str], Proxy] = {}
    for x in names:
        for y in names:
            if x != y:
                proxies[(x, y)] = Proxy(0)
                await proxies[(x, y)].start()
    procs: list[Proc] = []
    ports: dict[str, int] = {}
    for name in names:
        proc = await Proc("--worker").__aenter__()
        peers = {p: proxies[(name, p)].port for p in names if p != name}
        ports[name] = (await proc.call("start", name=name, peers=peers, **limits))["port"]
        for other in names:
            if other != name:
                proxies[(other, name)].target_port = ports[name]
        procs.append(proc)
    for name, proc in zip(names, procs, strict=True):
        await proc.call("wait_peers", peers=[n for n in names if n != name])
    for (x, y), proxy in proxies.items():
        if side[x] != side[y]:
            proxy.block()
    per_node = updates // len(names)
    await asyncio.gather(
        *(
            p.call("write_local", updates=per_node, batch=1000, prefix=n)
            for n, p in zip(names, procs, strict=True)
        )
    )

    async def digests() -> list[str]:
        return [(await p.call("digest"))["digest"] for p in procs]

    # Each side converges internally first; the divergence is then only across the cut.
    async with asyncio.timeout(120):
        while True:
            d = await digests()
            if len(set(d[:2])) == 1 and len(set(d[2:])) == 1 and d[0] != d[2]:
                break
            await asyncio.sleep(0.05)
    before = [await p.call("wire") for p in procs]
    healed_at = time.monotonic()
    for proxy in proxies.values():
        proxy.unblock()
    async with asyncio.timeout(120):
        while len(set(await digests())) != 1:  # noqa: ASYNC110 - polls other processes
            await asyncio.sleep(0.01)
    converge_s = time.monotonic() - healed_at
    after = [await p.call("wire") for p in procs]
    await stop_nodes(procs)
    for proxy in proxies.values():
        await proxy.close()

    def total(key: str) -> int:
        return sum(x[key] - y[key] for x, y in zip(after, before, strict=True))

    return {
        "divergent_updates": per_node * len(names),
        "converge_s": round(converge_s, 3),
        "wire_bytes": total("bytes_sent"),
        "catchup_payload_bytes": total("catchup_bytes_sent"),
        "deltas_sent": total("deltas_sent"),
    }


class LatencyNode(ApiNode):
    """A real ``drsdtp run`` process with its write-ahead log (group commit as soon as a write waits:
    ``fsync_interval_ms`` 0), peers reached directly."""

    def configure(self, peers: dict[str, int], extra: str = "") -> None:
        text = "".join(f'[[peers]]\nname = "{n}"\naddress = "127.0.0.1:{p}"\n' for n, p in peers.items())
        self.metrics_port = free_port()
        self.config.write_text(
            f'node_id = "{self.node_id}"\ndata_dir = "{self.dir / "data"}"\n'
            f'[listen]\napi = "127.0.0.1:{self.api_port}"\nmetrics = "127.0.0.1:{self.metrics_port}"\n'
            f'peer = "127.0.0.1:{self.peer_port}"\n[wal]\nenabled = true\nfsync_interval_ms = 0\n'
            f"[limits]\napi_max_requests = 256\n{extra}{text}"
        )


async def bench_node_latency(seconds: float, rate: int = 10_000, batch: int = 100) -> dict[str, Any]:
    """3 real nodes (WAL on). A client writes ``rate`` field updates/s to a through the API (requests of
    ``batch`` fields: 10 per twin, each value the CLOCK_MONOTONIC send time), and Watch streams on a, b and
    c see them: the lag at a is the local path (API, WAL commit, Watch), the baseline; at b and c it adds
    the replication (a's log to the peer's merge)."""
    with tempfile.TemporaryDirectory() as tmp:
        nodes = [LatencyNode(n, Path(tmp)) for n in ("a", "b", "c")]
        for node in nodes:
            node.configure({o.node_id: o.peer_port for o in nodes if o is not node})
        try:
            await asyncio.gather(*(n.start() for n in nodes))
            return await _node_latency(nodes, seconds, rate, batch)
        finally:
            for node in nodes:
                node.stop()


async def _node_latency(
    nodes: Sequence[LatencyNode], seconds: float, rate: int, batch: int
) -> dict[str, Any]:
    twins = [f"lat-{i}" for i in range(100)]
    fields, per_request = [f"f{j}" for j in range(10)], batch // 10
    # Per node: (twin, value) -> lag, so an update seen at a and at b gives what replication added to it.
    lags: dict[str, dict[tuple[str, float], float]] = {n.name: {} for n in nodes}
    measuring = asyncio.Event()

    def write(stub: Any, k: int, value: float) -> Any:
        ops = [api_pb2.FieldOp(field=f, report=api_pb2.FieldValue(f64=value)) for f in fields]
        chosen = [twins[(k + i) % len(twins)] for i in range(per_request)]
        request = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=t, ops=ops) for t in chosen])
        return stub.Write(request, timeout=30)

    async def watch(node: ApiNode) -> None:
        async with node.stub() as stub:
            # Many changes a message, as the SDK asks: one gRPC write per change would cost each node
            # about a sixth of its CPU at 10k changes/s (py-spy) and put the Watch itself on the tail.
            request = api_pb2.WatchRequest(prefix="lat-", fields=["f0"], max_changes=WATCH_MAX_CHANGES)
            async for message in stub.Watch(request):
                if not measuring.is_set():
                    continue
                now, seen = time.monotonic(), lags[node.name]
                for change in message.changes or [message]:
                    if change.origin == "snapshot":
                        continue
                    for f in change.twin.fields:
                        if f.name == "f0":
                            seen[(change.twin.twin_id, f.f64)] = now - f.f64

    async def held(node: ApiNode) -> int:
        return len((await node.call("ListTwins", api_pb2.ListTwinsRequest(prefix="lat-"))).twins)

    async with nodes[0].stub() as stub:
        create = [api_pb2.TwinWrite(twin_id=t, create=api_pb2.CreateTwin()) for t in twins]
        await stub.Write(api_pb2.WriteRequest(twins=create), timeout=30)
        for node in nodes[1:]:  # every twin replicated everywhere before measuring
            async with asyncio.timeout(60):
                while await held(node) < len(twins):  # noqa: ASYNC110 - polls another process
                    await asyncio.sleep(0.1)
        watchers = [asyncio.create_task(watch(n)) for n in nodes]
        await asyncio.sleep(1.0)  # the streams' snapshots are sent
        cpu_before = {n.name: cpu_s(n) for n in nodes}
        gc_before = {n.name: gc_collections(n) for n in nodes}
        hist_before = {n.name: histograms(n) for n in nodes}
        measuring.set()
        interval, in_flight = batch / rate, asyncio.Semaphore(128)
        start, n, pending = time.monotonic(), 0, set()
        while (due := start + n * interval) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await in_flight.acquire()
            task = asyncio.ensure_future(write(stub, n * per_request, time.monotonic()))
            task.add_done_callback(lambda _: in_flight.release())
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        written_s = time.monotonic() - start
        await asyncio.gather(*pending)
        await asyncio.sleep(0.5)
        measuring.clear()
        measured_s = time.monotonic() - start
        # Each node's busy cores (all threads) and collector runs (gen 0, 1, 2) while measured: a node near
        # one core, or a gen-2 run, shows up in the tail.
        cores = {n.name: round((cpu_s(n) - cpu_before[n.name]) / measured_s, 2) for n in nodes}
        gcs = {n.name: [x - y for x, y in zip(gc_collections(n), gc_before[n.name], strict=True)]
               for n in nodes}  # fmt: skip
        # Where a tail can go inside a node: its loop stalled (any cause), a collection, a WAL fsync.
        hists = {n.name: histograms(n) for n in nodes}
        breakdown = {n.name: {k: stalls(hist_before[n.name][k], h) for k, h in hists[n.name].items()}
                     for n in nodes}  # fmt: skip
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    out: dict[str, Any] = {"written": n * batch, "rate_per_s": round(n * batch / written_s)}
    local = lags[nodes[0].name]
    for name, seen in lags.items():
        ms = [x * 1e3 for x in seen.values()]
        out[f"{name}_cores"], out[f"{name}_gc"] = cores[name], gcs[name]
        out[f"{name}_stalls"] = breakdown[name]
        out[f"{name}_seen"] = len(ms)
        out[f"{name}_p50_ms"] = round(pct(ms, 50), 3) if ms else None
        out[f"{name}_p99_ms"] = round(pct(ms, 99), 3) if ms else None
        if name != nodes[0].name:  # per update seen at both: the lag here minus the lag at the writer
            added = [(lag - local[k]) * 1e3 for k, lag in seen.items() if k in local]
            out[f"{name}_added_p50_ms"] = round(pct(added, 50), 3) if added else None
            out[f"{name}_added_p99_ms"] = round(pct(added, 99), 3) if added else None
    return out


INTAKES = ("columns", "ops")  # the real API intakes the throughput rows measure (fields a request below)
PER_REQUEST = {"columns": 5000, "ops": 3000}  # each within the API's 64 KiB request bound
SETTLE_S = 4.0  # after node to node: the receiver's history fold of what it took


class Intake:
    """The Write requests of one intake as their wire bytes, built before the clock starts where they do not
    depend on the values, so the client (on the same 2 cores) costs the nodes as little as it can:
    ``columns``: NumericColumns, 50 twins x 100 fields a request (the twins' and fields' names and index
    columns cached per twin group, the values packed straight from numpy); ``ops``: 30 twins x 100 f64
    reports a request, written by the SDK (``drsdtp.client.writes.request_bytes``, the same bytes as
    protobuf's)."""

    def __init__(self, kind: str, twins: list[str], fields: list[str]) -> None:
        self.kind, self.twins, self.fields = kind, twins, fields
        self.per_request = PER_REQUEST[kind]
        self.group = self.per_request // len(fields)  # twins a request
        self.values = np.random.default_rng(1).random(self.per_request)
        self._prefix: dict[int, bytes] = {}

    def _chosen(self, k: int) -> list[str]:
        first = (k * self.group) % len(self.twins)
        return [self.twins[(first + i) % len(self.twins)] for i in range(self.group)]

    def message(self, k: int) -> api_pb2.WriteRequest:
        """Request ``k`` built by the protobuf runtime (to check :meth:`body` against)."""
        values = (self.values + k).tolist()
        if self.kind == "ops":
            return api_pb2.WriteRequest(twins=[
                api_pb2.TwinWrite(twin_id=t, ops=[
                    api_pb2.FieldOp(field=f, report=api_pb2.FieldValue(f64=values[i * len(self.fields) + j]))
                    for j, f in enumerate(self.fields)
                ]) for i, t in enumerate(self._chosen(k))
            ])  # fmt: skip
        cols = api_pb2.NumericColumns(
            twin_ids=self._chosen(k), fields=self.fields,
            twin=np.repeat(np.arange(self.group), len(self.fields)).tolist(),
            field=np.tile(np.arange(len(self.fields)), self.group).tolist(), values=values,
        )  # fmt: skip
        return api_pb2.WriteRequest(columns=cols)

    def body(self, k: int) -> bytes:
        values = self.values + k
        if self.kind == "ops":
            n = len(self.fields)
            rows = [values[i * n : (i + 1) * n].tolist() for i in range(self.group)]
            twins = [
                TwinWrite(t, tuple(report_op(f, v) for f, v in zip(self.fields, row, strict=True)))
                for t, row in zip(self._chosen(k), rows, strict=True)
            ]
            return request_bytes(twins)
        first = (k * self.group) % len(self.twins)
        prefix = self._prefix.get(first)
        if prefix is None:
            cols = api_pb2.NumericColumns
            twin = np.repeat(np.arange(self.group), len(self.fields)).astype(np.uint64)
            field = np.tile(np.arange(len(self.fields)), self.group).astype(np.uint64)
            prefix = b"".join(
                [tag(cols, "twin_ids", LENGTH) + length_prefixed(t.encode()) for t in self._chosen(k)]
                + [tag(cols, "fields", LENGTH) + length_prefixed(f.encode()) for f in self.fields]
                + [tag(cols, "twin", LENGTH) + length_prefixed(b"".join(varint(x) for x in twin.tolist())),
                   tag(cols, "field", LENGTH) + length_prefixed(b"".join(varint(x) for x in field.tolist())),
                   tag(cols, "values", LENGTH) + varint(8 * len(values))]
            )  # fmt: skip
            self._prefix[first] = prefix
        columns = prefix + values.astype("<f8").tobytes()
        return tag(api_pb2.WriteRequest, "columns", LENGTH) + length_prefixed(columns)


async def bench_node_throughput(updates: int, intake: str, in_flight: int = 8) -> dict[str, Any]:
    """2 real ``drsdtp run`` processes (WAL on): a client writes to a's API flat out through ``intake``
    (1000 twins x 100 fields so joins cannot collapse overwrites), then a marker twin; done when b holds the
    marker. a's own ingest rate (the last write acknowledged) is in the same run: replication cannot be
    measured faster than the writer feeds it; b's CPU seconds per million updates is the receiver's cost
    whatever the feed."""
    with tempfile.TemporaryDirectory() as tmp:
        a, b = LatencyNode("a", Path(tmp)), LatencyNode("b", Path(tmp))
        a.configure({b.node_id: b.peer_port})
        b.configure({a.node_id: a.peer_port})
        try:
            await asyncio.gather(a.start(), b.start())
            return await _node_throughput(a, b, updates, intake, in_flight)
        finally:
            a.stop()
            b.stop()


async def bench_node_catchup(updates: int, intake: str, in_flight: int = 8) -> dict[str, Any]:
    """2 real ``drsdtp run`` processes (WAL on) linked through TCP proxies: b is cut off, a client writes
    ``updates`` to a's API flat out (the load of :func:`bench_node_throughput`), then the link heals and
    the clock runs until b's state digest equals a's: b rejoining after a partition and catching up a's
    backlog, which a's API intake does not limit."""
    with tempfile.TemporaryDirectory() as tmp:
        a, b = LatencyNode("a", Path(tmp)), LatencyNode("b", Path(tmp))
        to_a, to_b = Proxy(a.peer_port), Proxy(b.peer_port)
        await to_a.start()
        await to_b.start()
        a.configure({b.node_id: to_b.port})
        b.configure({a.node_id: to_a.port})
        try:
            await asyncio.gather(a.start(), b.start())
            return await _node_throughput(a, b, updates, intake, in_flight, cut=(to_a, to_b))
        finally:
            a.stop()
            b.stop()
            await to_a.close()
            await to_b.close()


async def bench_writer_alone(updates: int, intake: str, in_flight: int = 8) -> dict[str, Any]:
    """The writer's API ceiling through ``intake`` without replication: the same client load into one real
    node without peers (its WAL, history and intelligence on). Node to node cannot be faster than this."""
    with tempfile.TemporaryDirectory() as tmp:
        a = LatencyNode("a", Path(tmp))
        a.configure({})
        try:
            await a.start()
            return await _node_throughput(a, None, updates, intake, in_flight)
        finally:
            a.stop()


async def _node_throughput(
    a: LatencyNode,
    b: LatencyNode | None,
    updates: int,
    intake: str,
    in_flight: int,
    cut: Sequence[Proxy] = (),
) -> dict[str, Any]:
    """The client load of :func:`bench_node_throughput`; with ``b`` None, only a's own ingest; with ``cut``
    (the proxies between a and b), b is cut off while a takes the load, then the cut heals and the clock
    (:func:`_catch_up`) runs until b's state equals a's."""
    twins, fields = [f"tp-{i}" for i in range(1000)], [f"f{j}" for j in range(100)]
    load = Intake(intake, twins, fields)
    for k in (0, 7):  # the hand-built bytes are the request protobuf would send, within the API's bound
        body = load.body(k)
        assert api_pb2.WriteRequest.FromString(body) == load.message(k), intake
        assert len(body) < 64 * 1024 - 512, (intake, len(body))

    async def held(node: ApiNode, prefix: str) -> int:
        return int((await node.call("ListTwins", api_pb2.ListTwinsRequest(prefix=prefix, limit=1))).total)

    async with a.stub() as stub:
        for i in range(0, len(twins), 100):
            create = [api_pb2.TwinWrite(twin_id=t, create=api_pb2.CreateTwin()) for t in twins[i : i + 100]]
            await stub.Write(api_pb2.WriteRequest(twins=create), timeout=30)
        async with asyncio.timeout(60):  # replication is up and b holds every twin before the clock starts
            while b is not None and await held(b, "tp-") < len(twins):  # noqa: ASYNC110 - polls b
                await asyncio.sleep(0.1)
        requests = updates // load.per_request
        queue: asyncio.Queue[int] = asyncio.Queue()
        for k in range(requests):
            queue.put_nowait(k)
        channel, _ = connect(Address("127.0.0.1", a.api_port))
        write = channel.unary_unary(
            "/drsdtp.wire.v1.TwinApi/Write", response_deserializer=api_pb2.WriteReply.FromString
        )

        async def writer() -> None:
            while not queue.empty():
                await write(load.body(queue.get_nowait()), timeout=60)

        for proxy in cut:
            proxy.block()
        receiver = b or a
        idle_before = cpu_s(receiver)
        await asyncio.sleep(1.0)
        idle_per_s = cpu_s(receiver) - idle_before  # the receiver's own timers while nothing arrives
        cpu_before, gc_before = cpu_s(receiver), gc_collections(receiver)
        writer_cpu_before, client_cpu_before = cpu_s(a), time.process_time()
        start = time.monotonic()
        async with channel:
            await asyncio.gather(*(writer() for _ in range(in_flight)))
        written_s = time.monotonic() - start
        writer_cpu = cpu_s(a) - writer_cpu_before
        client_cpu = time.process_time() - client_cpu_before
        n = requests * load.per_request
        common = {
            "intake": intake,
            "updates": n,
            "writer_ingest_per_s": round(n / written_s),
            "writer_cpu_s_per_m": round(writer_cpu / n * 1e6, 3),
            # The bench's own client (building and sending the requests) shares the 2 cores.
            "client_cpu_s_per_m": round(client_cpu / n * 1e6, 3),
        }
        if b is None:
            return common
        if cut:
            return {**common, **await _catch_up(a, b, cut, n, idle_per_s)}
        marker = api_pb2.TwinWrite(twin_id="tp-done", create=api_pb2.CreateTwin())
        await stub.Write(api_pb2.WriteRequest(twins=[marker]), timeout=30)
    async with b.stub() as stub_b, asyncio.timeout(300):
        while not (await stub_b.ListTwins(api_pb2.ListTwinsRequest(prefix="tp-done"))).twins:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # polls another process
    seconds = time.monotonic() - start
    receiver_cpu = cpu_s(b) - cpu_before
    gc_after = gc_collections(b)
    # History folds what b received into blocks when its segments seal, maybe after the clock stopped:
    # its CPU is counted again once that has settled, less what b spends idle in as long.
    await asyncio.sleep(SETTLE_S)
    settled_cpu = cpu_s(b) - cpu_before - idle_per_s * SETTLE_S
    return {
        **common,
        "seconds": round(seconds, 3),
        "updates_per_s": round(n / seconds),
        "receiver_cpu_s_per_m": round(receiver_cpu / n * 1e6, 3),
        # Cores the receiver kept busy (all its threads): well below 1 while the writer is the limit.
        "receiver_cores": round(receiver_cpu / seconds, 2),
        "receiver_cpu_s_per_m_settled": round(settled_cpu / n * 1e6, 3),  # SETTLE_S after the clock
        # The cyclic collector's runs in b while it received (gen 0, 1, 2): start-up's are not counted.
        "receiver_gc_collections": [x - y for x, y in zip(gc_after, gc_before, strict=True)],
    }


async def _catch_up(
    a: LatencyNode, b: LatencyNode, cut: Sequence[Proxy], n: int, idle_per_s: float
) -> dict[str, Any]:
    """Heals ``cut`` and times b from the link being up again (b reports a up: the nodes' reconnect
    backoff, up to 2 s, is not replication) until its state digest is a's: replication itself, not a's
    API intake. a resends what b has not acknowledged joined (its delta log holds the backlog), so
    overwrites of a field collapse on the way: the distinct fields carried are counted beside."""
    status = await a.call("Status", api_pb2.StatusRequest())
    want, fields = status.state_digest, int(status.fields)
    cpu_before, writer_cpu_before = cpu_s(b), cpu_s(a)
    healed = time.monotonic()
    for proxy in cut:
        proxy.unblock()
    async with b.stub() as stub, asyncio.timeout(300):
        while True:
            reply = await stub.Status(api_pb2.StatusRequest())
            if reply.state_digest == want or any(p.up for p in reply.peers):
                break
            await asyncio.sleep(0.005)  # polls another process
        start = time.monotonic()
        while reply.state_digest != want:
            await asyncio.sleep(0.005)
            reply = await stub.Status(api_pb2.StatusRequest())
    seconds = time.monotonic() - start
    receiver_cpu, sender_cpu = cpu_s(b) - cpu_before, cpu_s(a) - writer_cpu_before
    await asyncio.sleep(SETTLE_S)
    settled_cpu = cpu_s(b) - cpu_before - idle_per_s * SETTLE_S
    return {
        "backlog_fields": fields,
        "seconds": round(seconds, 3),
        "reconnect_s": round(start - healed, 3),
        "updates_per_s": round(n / seconds),
        "fields_per_s": round(fields / seconds),
        "receiver_cpu_s_per_m": round(receiver_cpu / n * 1e6, 3),
        "receiver_cores": round(receiver_cpu / seconds, 2),
        "receiver_cpu_s_per_m_settled": round(settled_cpu / n * 1e6, 3),
        "sender_cpu_s_per_m": round(sender_cpu / n * 1e6, 3),
    }


def scrape(node: LatencyNode) -> str:
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=10).read().decode())


# The node's duration histograms a latency tail can come from, by the breakdown's name for each.
TAIL_HISTOGRAMS = {
    "loop_lag": "drsdtp_event_loop_lag_seconds",
    "gc_pause": "drsdtp_gc_pause_seconds",
    "fsync": "drsdtp_wal_fsync_latency_seconds",
}


def histograms(node: LatencyNode) -> dict[str, list[tuple[float, float]]]:
    """Each of ``TAIL_HISTOGRAMS`` so far: cumulative ``(bound s, count)`` pairs, from the node's metrics."""
    text = scrape(node)
    return {
        key: [(float(le), float(n)) for le, n in
              re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.MULTILINE)]
        for key, name in TAIL_HISTOGRAMS.items()
    }  # fmt: skip


def gc_collections(node: LatencyNode) -> list[int]:
    """The node's collector runs so far by generation, from its metrics endpoint."""
    text = scrape(node)
    runs = dict(re.findall(r'^drsdtp_gc_collections_total\{generation="(\d)"\} (\S+)$', text, re.MULTILINE))
    return [round(float(runs[str(g)])) for g in range(3)]


def cpu_s(node: ApiNode) -> float:
    """CPU seconds (user + system) the node's process used so far."""
    assert node.proc is not None
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median ``key`` (whole runs, so their figures stay consistent)."""
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


async def throughputs(
    quick: bool, reps: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Bare replicators, the writer node alone through each intake, real nodes through the intake that
    was fastest alone in the same repetition (live, then catching up after a partition), and the
    protobuf baseline alternate, so all see the same machine load; the median run of each (of each intake
    for the writer alone)."""
    size = 200_000 if quick else 2_000_000
    tps, nodes, catchups, bases = [], [], [], []
    alones: dict[str, list[dict[str, Any]]] = {i: [] for i in INTAKES}
    for _ in range(reps):
        tps.append(await bench_throughput(size, GossipLimits().join_min_entries))
        print(json.dumps({"throughput": tps[-1]}), flush=True)
        for intake in INTAKES:
            alones[intake].append(await bench_writer_alone(size, intake))
            print(json.dumps({"writer_alone": alones[intake][-1]}), flush=True)
        fastest = max(INTAKES, key=lambda i: alones[i][-1]["writer_ingest_per_s"])
        nodes.append(await bench_node_throughput(size, fastest))
        print(json.dumps({"throughput_real_nodes": nodes[-1]}), flush=True)
        catchups.append(await bench_node_catchup(size, fastest))
        print(json.dumps({"catchup_real_nodes": catchups[-1]}), flush=True)
        bases.append(await bench_baseline(100_000 if quick else 300_000))
        print(json.dumps({"baseline_protobuf_per_reading": bases[-1]}), flush=True)
    return (
        median_run(tps, "updates_per_s"),
        median_run(nodes, "updates_per_s"),
        {i: median_run(runs, "writer_ingest_per_s") for i, runs in alones.items()},
        median_run(bases, "readings_per_s"),
        median_run(catchups, "updates_per_s"),
    )


async def latencies(quick: bool, reps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bare replicators and real nodes alternate; the median run of each by its p99 at b. One p99 of a
    10 s run moves with whatever else the machine ran in that moment: the median of a few is steadier."""
    bare, nodes = [], []
    for _ in range(reps):
        bare.append(await bench_latency(2.0 if quick else 5.0))
        print(json.dumps({"latency": bare[-1]}), flush=True)
        nodes.append(await bench_node_latency(2.0 if quick else 10.0))
        print(json.dumps({"latency_real_nodes": nodes[-1]}), flush=True)
    return median_run(bare, "b_p99_ms"), median_run(nodes, "b_added_p99_ms")


async def drive(quick: bool, only_throughput: bool = False, only_latency: bool = False) -> None:
    Proc.log_path.write_text("")
    print(f"node logs: {Proc.log_path}", flush=True)
    reps = 1 if quick else 3
    if only_latency:  # the latency rows alone (replicators, then nodes), e.g. on a quiet machine
        lat, node_lat = await latencies(quick, reps)
        print(f"\nsummary (latency: the run with the median p99 of {reps})")
        print_latency(lat, node_lat)
        return
    if only_throughput:  # a development loop: the throughput rows alone, not reported
        await throughputs(quick, reps)
        return
    lat, node_lat = await latencies(quick, reps)
    # Throughput and its baseline alternate, so both see the same machine load; medians of the runs.
    tp, node_tp, alones, base, catchup = await throughputs(quick, reps)
    heals = []
    for _ in range(reps):
        heals.append(await bench_heal(20_000 if quick else 100_000))
        print(json.dumps({"heal": heals[-1]}), flush=True)
    heal = median_run(heals, "converge_s")
    # The same with the default reconnect cap (2 s): a dialler may sleep up to that before it retries.
    default_cap = await bench_heal(
        20_000 if quick else 100_000, reconnect_max_s=GossipLimits().reconnect_max_s
    )
    print(json.dumps({"heal_default_reconnect_cap": default_cap}), flush=True)
    report(lat, node_lat, tp, node_tp, alones, base, catchup, heal, max(h["converge_s"] for h in heals), reps)
    print(
        f"  with the default {GossipLimits().reconnect_max_s} s reconnect cap instead of "
        f"{LIMITS.reconnect_max_s} s: {default_cap['converge_s']} s"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_latency(lat: dict[str, Any], node_lat: dict[str, Any]) -> None:
    print(
        f"latency a->b at {lat['rate_per_s']:,} updates/s: p50 {lat['b_p50_ms']} ms, p99 {lat['b_p99_ms']} ms"
        f" (goal p99 <= 2 ms: {verdict(lat['b_p99_ms'] <= 2)})"
    )
    print(
        f"latency with 3 real nodes (WAL on), client write on a -> Watch at b, {node_lat['rate_per_s']:,} "
        f"updates/s: p50 {node_lat['b_p50_ms']} ms, p99 {node_lat['b_p99_ms']} ms; at a itself (no "
        f"replication): p50 {node_lat['a_p50_ms']} ms, p99 {node_lat['a_p99_ms']} ms; added by replication "
        f"(b minus a per update): p50 {node_lat['b_added_p50_ms']} ms, p99 {node_lat['b_added_p99_ms']} ms"
    )
    print("  where a tail can go, in the measured window (counts above 10 / 50 ms; the worst one's bucket):")
    print(f"    bare replicator b: loop lag {describe(lat['b_loop_lag'])}")
    for name in ("a", "b", "c"):
        parts = node_lat[f"{name}_stalls"]
        print(
            f"    node {name}: loop lag {describe(parts['loop_lag'])}; gc pauses "
            f"{describe(parts['gc_pause'])}; WAL fsyncs {describe(parts['fsync'])}, "
            f"p99 <= {parts['fsync']['p99_ms']} ms"
        )


def lagged(part: dict[str, Any]) -> float:
    """The share (%) of a loop lag sampler's samples over 10 ms (windows differ in length, shares do not)."""
    return round(100 * part["over_10ms"] / part["n"], 2) if part["n"] else 0.0


def describe(part: dict[str, Any]) -> str:
    """One histogram's share of a window: how many samples, how many above each threshold, the worst."""
    above = " / ".join(str(part[f"over_{ms}ms"]) for ms in STALL_MS)
    return f"{part['n']:.0f} samples, {above} above, worst <= {part['worst_ms']} ms"


def report(
    lat: dict[str, Any],
    node_lat: dict[str, Any],
    tp: dict[str, Any],
    node_tp: dict[str, Any],
    alones: dict[str, dict[str, Any]],
    base: dict[str, Any],
    catchup: dict[str, Any],
    heal: dict[str, Any],
    slowest: float,
    reps: int,
) -> None:
    ratio = tp["updates_per_s"] / base["readings_per_s"]
    print(f"\nsummary (medians of {reps} runs where repeated; latency: the run with the median p99)")
    print_latency(lat, node_lat)
    print(
        f"throughput a->b: {tp['updates_per_s']:,} field updates/s (goal >= 1M: "
        f"{verdict(tp['updates_per_s'] >= 1e6)}), {ratio:.1f}x the protobuf-per-reading stream at "
        f"{base['readings_per_s']:,}/s (building those objects alone: {base['build_only_per_s']:,}/s)"
    )
    node_rate, intake = node_tp["updates_per_s"], node_tp["intake"]
    alone = alones[intake]
    print(
        "the writer's API intake with no peer (its ceiling, client bytes built ahead): "
        + "; ".join(
            f"{i} {r['writer_ingest_per_s']:,}/s at {r['writer_cpu_s_per_m']} s of node CPU per million "
            f"({PER_REQUEST[i]:,} a request; client {r['client_cpu_s_per_m']} s)"
            for i, r in alones.items()
        )
    )
    print(
        f"throughput with 2 real nodes (WAL on), client {intake} (the fastest intake alone) into a's API "
        f"-> b: {node_rate:,} field updates/s (goal >= 5M: {verdict(node_rate >= 5e6)}), "
        f"{node_tp['updates_per_s'] / tp['updates_per_s']:.2f}x the bare replicators; a's own ingest "
        f"{node_tp['writer_ingest_per_s']:,}/s, and {alone['writer_ingest_per_s']:,}/s with no peer (the "
        f"writer's API ceiling: {node_rate / alone['writer_ingest_per_s']:.2f}x of it reached b); writer CPU "
        f"per million updates {node_tp['writer_cpu_s_per_m']} s ({alone['writer_cpu_s_per_m']} s with no "
        f"peer); receiver CPU per million updates: node {node_tp['receiver_cpu_s_per_m']} s "
        f"({node_tp['receiver_cpu_s_per_m_settled']} s counting {SETTLE_S:g} s after, its "
        f"history fold settled) "
        f"({node_tp['receiver_cores']} cores busy), bare replicator {tp['receiver_cpu_s_per_m']} s; the "
        f"receiver node's gc collections (gen 0, 1, 2) while receiving: {node_tp['receiver_gc_collections']}"
    )
    print(
        f"catch-up with 2 real nodes (WAL on): b cut off while a's API took {catchup['updates']:,} updates "
        f"({catchup['intake']}), then healed: b's state equal to a's after {catchup['seconds']} s, "
        f"{catchup['updates_per_s']:,} updates/s (goal >= 5M: {verdict(catchup['updates_per_s'] >= 5e6)}; "
        f"the resend is joined, so overwrites collapse: a holds {catchup['backlog_fields']:,} fields, "
        f"{catchup['fields_per_s']:,} fields/s), {catchup['updates_per_s'] / node_rate:.1f}x the live row; "
        f"CPU per million updates: receiver {catchup['receiver_cpu_s_per_m']} s "
        f"({catchup['receiver_cpu_s_per_m_settled']} s settled, {catchup['receiver_cores']} cores busy), "
        f"sender {catchup['sender_cpu_s_per_m']} s"
    )
    print(
        f"heal of a 2|3 partition, {heal['divergent_updates']:,} divergent updates: converged in "
        f"{heal['converge_s']} s (slowest {slowest} s; goal <= 2 s: {verdict(heal['converge_s'] <= 2)}); "
        f"{heal['wire_bytes']:,} bytes on the wire, {heal['catchup_payload_bytes']:,} of them catch-up state"
    )
    bench_report.emit(
        "bench_replication",
        [
            Row.of(f"replication throughput node to node, real nodes (WAL on), API {intake}", node_rate,
                   "updates/s", Goal(">=", 5e6), baseline=tp["updates_per_s"],
                   baseline_name="bare replicators"),
            Row.of("replication catch-up after a partition, real nodes (WAL on), a's backlog to b",
                   catchup["updates_per_s"], "updates/s", Goal(">=", 5e6), baseline=node_rate,
                   baseline_name="node to node, live (intake-limited)"),
            *(Row.of(f"writer's API intake, {i}, one node without peers (a ceiling of node to node)",
                     r["writer_ingest_per_s"], "updates/s", baseline=node_rate, baseline_name="node to node")
              for i, r in alones.items()),
            Row.of("replication throughput, bare replicators", tp["updates_per_s"], "updates/s",
                   baseline=base["readings_per_s"], baseline_name="protobuf/reading"),
            Row.of("receiver CPU per million updates, real node (WAL, history, intelligence)",
                   node_tp["receiver_cpu_s_per_m"], "s", baseline=tp["receiver_cpu_s_per_m"],
                   baseline_name="bare replicator"),
            Row.of("the same, its history fold settled (4 s after)", node_tp["receiver_cpu_s_per_m_settled"],
                   "s", baseline=tp["receiver_cpu_s_per_m"], baseline_name="bare replicator"),
            Row.of("replication latency p99, 3 nodes, WAL on, 10k/s", node_lat["b_p99_ms"], "ms",
                   Goal("<=", 2), baseline=node_lat["a_p99_ms"], baseline_name="same write at a"),
            Row.of("replication-added latency p99 (b minus a per update), 3 nodes, WAL on",
                   node_lat["b_added_p99_ms"], "ms", Goal("<=", 2)),
            Row.of("replication latency p99, 3 replicators, no WAL", lat["b_p99_ms"], "ms", Goal("<=", 2)),
            Row.of("receiving node's event-loop lags over 10 ms, share of its samples while measured",
                   lagged(node_lat["b_stalls"]["loop_lag"]), "%", baseline=lagged(lat["b_loop_lag"]),
                   baseline_name="bare replicator b"),
            Row.of("partition heal, 100k divergent updates", heal["converge_s"], "s", Goal("<=", 2)),
        ],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only-throughput", action="store_true", help="the throughput rows alone")
    parser.add_argument("--only-latency", action="store_true", help="the latency rows alone")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(Worker().serve())
    elif args.baseline_server:
        asyncio.run(baseline_server())
    else:
        asyncio.run(drive(args.quick, args.only_throughput, args.only_latency))


if __name__ == "__main__":
    main()
