"""Application API v2 benchmarks against a real ``drsdtp run`` process on loopback, through the raw generated
stub (the ceiling any SDK on top of it can reach; the SDK's own column belongs beside it).

    .venv/bin/python benches/bench_api_write.py            # about a minute
    .venv/bin/python benches/bench_api_write.py --quick    # a smoke run

1. write round trip to a durable ack (one reported field per request, sequential): p50/p99. Goal p99 <= 2 ms.
   The node's group commit runs with ``wal.fsync_interval_ms`` = 0 (commit as soon as a write waits) and, for
   comparison, the default 5 ms.
2. batched writes: requests of 1,000 field ops (100 twins x 10), and of 4,000 rows of NumericColumns (100
   twins x 40 fields), 4 in flight: fields/s. Goal >= 500k/s.
3. watchers: 100 Watch streams while a writer changes 10k twin fields/s (100 twins every 10 ms, the value is
   the send time): p99 delivery lag. Goal <= 20 ms. Then the node's RSS per idle watcher. Goal <= 64 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drsdtp.wire.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from tests.ingest.support import free_port  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Node:
    def __init__(self, root: Path, fsync_ms: int, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        cfg = root / f"node-{fsync_ms}.toml"
        cfg.write_text(
            f'node_id = "bench"\ndata_dir = "{root / f"data-{fsync_ms}"}"\n'
            f'[listen]\napi = "127.0.0.1:{self.port}"\nmetrics = "127.0.0.1:0"\npeer = "127.0.0.1:0"\n'
            f"[wal]\nfsync_interval_ms = {fsync_ms}\n[history]\nenabled = false\n"
            "[limits]\napi_max_watchers = 200\napi_max_watchers_per_caller = 200\napi_max_requests = 64\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drsdtp", "run", "--config", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=None if env is None else os.environ | env,
        )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = api_pb2_grpc.TwinApiStub(self.channel)

    async def ready(self) -> None:
        for _ in range(300):
            try:
                await self.stub.Status(api_pb2.StatusRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        raise RuntimeError("the node did not start")

    async def close(self) -> None:
        await self.channel.close()
        self.proc.terminate()
        self.proc.wait(30)


def op(field: str, value: float) -> api_pb2.FieldOp:
    return api_pb2.FieldOp(field=field, report=api_pb2.FieldValue(f64=value))


async def create(stub: api_pb2_grpc.TwinApiStub, twins: list[str]) -> None:
    for i in range(0, len(twins), 100):
        await stub.Write(
            api_pb2.WriteRequest(
                twins=[api_pb2.TwinWrite(twin_id=t, create=api_pb2.CreateTwin()) for t in twins[i : i + 100]]
            )
        )


async def round_trip(node: Node, n: int) -> tuple[float, float]:
    await create(node.stub, ["rt"])
    took = []
    for i in range(n):
        request = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="rt", ops=[op("v", float(i))])])
        started = time.perf_counter()
        await node.stub.Write(request)
        took.append(time.perf_counter() - started)
    ms = np.array(took[n // 10 :]) * 1000  # after a warm-up
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


async def batched(node: Node, seconds: float) -> float:
    twins = [f"b{i}" for i in range(100)]
    await create(node.stub, twins)
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer(k: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            ops = [op(f"f{j}", float(i * 4 + k)) for j in range(10)]
            request = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=t, ops=ops) for t in twins])
            await node.stub.Write(request)
            done += 1000

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(4)))
    return done / (time.perf_counter() - started)


async def batched_columns(node: Node, seconds: float) -> float:
    twins = [f"c{i}" for i in range(100)]
    await create(node.stub, twins)
    fields = [f"f{j}" for j in range(40)]
    rows = len(twins) * len(fields)
    twin_col = np.repeat(np.arange(len(twins)), len(fields)).tolist()
    field_col = np.tile(np.arange(len(fields)), len(twins)).tolist()
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer(k: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            cols = api_pb2.NumericColumns(
                twin_ids=twins,
                fields=fields,
                twin=twin_col,
                field=field_col,
                values=[float(i * 4 + k)] * rows,
            )
            await node.stub.Write(api_pb2.WriteRequest(columns=cols))
            done += rows

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(4)))
    return done / (time.perf_counter() - started)


async def watchers(node: Node, count: int, seconds: float) -> tuple[float, float, float]:
    twins = [f"w{i}" for i in range(100)]
    await create(node.stub, twins)
    lags: list[float] = []
    base_rss = rss_kb(node.proc.pid)
    calls = [node.stub.Watch(api_pb2.WatchRequest(prefix="w")) for _ in range(count)]
    stop = asyncio.Event()

    async def read(call: grpc.aio.UnaryStreamCall) -> None:
        async for change in call:
            if change.origin == "snapshot" or stop.is_set():
                continue
            now = time.monotonic()
            lags.extend(now - f.f64 for f in change.twin.fields if f.name == "sent")

    readers = [asyncio.create_task(read(c)) for c in calls]
    await asyncio.sleep(2)  # snapshots done: the streams are idle
    idle_kb = (rss_kb(node.proc.pid) - base_rss) / count
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        request = api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id=t, ops=[op("sent", time.monotonic())]) for t in twins]
        )
        await node.stub.Write(request)
        await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
    await asyncio.sleep(1)
    stop.set()
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    ms = np.array(lags) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), idle_kb


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, secs = (300, 2.0) if args.quick else (3000, 8.0)
    with tempfile.TemporaryDirectory() as tmp:
        for fsync_ms in (0, 5):
            node = Node(Path(tmp), fsync_ms)
            try:
                await node.ready()
                p50, p99 = await round_trip(node, n)
                print(
                    f"write round trip, durable ack, fsync_interval_ms={fsync_ms}: "
                    f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
                )
                if fsync_ms:
                    continue
                rate = await batched(node, secs)
                print(f"batched writes as ops (1,000 fields a request, 4 in flight): {rate:,.0f} fields/s")
                rate = await batched_columns(node, secs)
                print(
                    f"batched writes as columns (4,000 fields a request, 4 in flight): {rate:,.0f} fields/s"
                )
                lag50, lag99, idle = await watchers(node, 100, secs)
                print(f"100 watchers, 10k changes/s: delivery lag p50 {lag50:.1f} ms, p99 {lag99:.1f} ms")
                print(f"node RSS per idle watcher: {idle:.1f} KB")
            finally:
                await node.close()
    print(f"(cores: {os.cpu_count()}; client and node share them)")


if __name__ == "__main__":
    asyncio.run(main())
