"""The client SDK against the raw generated stub, in the same run, on the same real ``drsdtp run`` process
(loopback): what the SDK's typed results, error mapping and resuming watch cost over the ceiling.

    .venv/bin/python benches/bench_sdk.py            # about a minute
    .venv/bin/python benches/bench_sdk.py --quick    # a smoke run

1. write round trip to a durable ack (one reported field a request, sequential, wal.fsync_interval_ms = 0):
   p50/p99 for the raw stub, AsyncClient and the blocking Client, interleaved with a bare append + fdatasync
   on the same disk: the floor a durable ack cannot beat (a p99 above 2 ms there says why). Goal p99 <= 2 ms.
2. batched writes, 4 in flight: requests of 1,000 field ops (100 twins x 10) and of 4,000 column rows
   (100 twins x 40 fields): fields/s, raw vs SDK. Goal >= 500k/s. Beside each rate, the CPU the node and
   this client spent per million fields: on a loaded machine the rate follows the core the node gets, the
   CPU per field much less. The SDK joins concurrent writes into one request (it prints
   how many writes a request carried); the raw stub sends each alone. Then requests of 1,000 ops of every
   common kind (f64 reports, counter increments, set adds and removes, f64 desired values; and the same
   without the set's ops): the bulk path beside the f64 ops'.
3. 100 watchers while a writer changes 10k fields/s (100 twins every 10 ms; the value is the send time):
   delivery lag p50/p99, raw streams (one change a message as v1 clients ask, and up to 512 a message,
   the SDK's default) vs SDK watches (a stream each, and the SDK's default: watches asking the same share
   one stream), and what the SDK spends per change. Goal p99 <= 20 ms.
4. memory per idle watcher: the node's RSS per idle SDK watch on a stream of its own (goal <= 64 KB), and
   the client's own (RSS, and the Python heap by tracemalloc).

    .venv/bin/python benches/bench_sdk.py --batched     # only section 2
    .venv/bin/python benches/bench_sdk.py --breakdown   # where a durable write's round trip goes
    .venv/bin/python benches/bench_sdk.py --round-trip  # only section 1
    .venv/bin/python benches/bench_sdk.py --small-cutover  # the small write path vs the bulk path, by rows

``--breakdown`` runs only the round trip, on a node started with ``DRSDTP_STAGES=1`` (drsdtp.stages), each
raw write asking for its stage timestamps: client send, the guard's start, admitted, planned, applied,
appended to the log, the group committer woken, the fsync handed to its worker thread, started, done, the
committer back on the loop, the writer woken, audited, reply returned, client received. Per stage: p50 and
p99, and its mean share of the slowest 1 % of round trips (where the tail goes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benches"))

import grpc_echo  # noqa: E402
from bench_api_write import Node, create, op, rss_kb  # noqa: E402

from drsdtp import stages  # noqa: E402
from drsdtp.client import (  # noqa: E402
    AsyncClient,
    Client,
    Columns,
    Op,
    TwinWrite,
    Watch,
    add,
    desire,
    increment,
    remove,
    report,
)
from drsdtp.client.types import Change  # noqa: E402
from drsdtp.wire.v1 import api_pb2  # noqa: E402
from tests.ingest.support import free_port  # noqa: E402


def pct(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


FLOOR = "bare append + fdatasync of 256 bytes on the same disk (the floor)"


async def round_trips(
    node: Node, sdk: AsyncClient, blocking: Client, n: int, scratch: Path
) -> dict[str, tuple[float, float]]:
    await create(node.stub, ["rt-raw", "rt-sdk", "rt-sync"])
    floor = FLOOR
    took: dict[str, list[float]] = {"raw stub": [], "AsyncClient": [], "Client (blocking)": [], floor: []}
    probe = os.open(scratch / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = bytes(256)

    def append_and_sync() -> None:
        os.write(probe, record)
        os.fdatasync(probe)

    async def bare(i: int) -> None:
        # What the log's group commit does for one small write (append, then sync_data), in a worker
        # thread as the node runs it: no durable ack can be faster than this on this disk.
        await asyncio.to_thread(append_and_sync)

    async def raw(i: int) -> None:
        request = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="rt-raw", ops=[op("v", float(i))])])
        await node.stub.Write(request)

    async def async_sdk(i: int) -> None:
        await sdk.report("rt-sdk", {"v": float(i)})

    async def sync_sdk(i: int) -> None:
        # The blocking client from a thread, as a script would call it (the thread hop is part of its cost).
        await asyncio.to_thread(blocking.report, "rt-sync", {"v": float(i)})

    kinds: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
        ("raw stub", raw),
        ("AsyncClient", async_sdk),
        ("Client (blocking)", sync_sdk),
        (floor, bare),
    ]
    try:
        for i in range(n):
            for name, call in kinds:  # interleaved: the machine's noise falls on each alike
                started = time.perf_counter()
                await call(i)
                took[name].append(time.perf_counter() - started)
    finally:
        os.close(probe)
    return {name: pct(samples[n // 10 :]) for name, samples in took.items()}  # after a warm-up


async def breakdown(node: Node, n: int, scratch: Path) -> None:
    """The raw stub's durable round trip stage by stage (see the module's docstring), interleaved with the
    bare append + fdatasync as in :func:`round_trips`."""
    await create(node.stub, ["rt-stages"])
    probe = os.open(scratch / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = bytes(256)

    def append_and_sync() -> None:
        os.write(probe, record)
        os.fdatasync(probe)

    traces: list[list[tuple[str, int]]] = []
    bare: list[float] = []
    echoes: list[float] = []
    ask = ((stages.HEADER, "1"),)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "benches" / "grpc_echo.py"), str(port)])  # noqa: ASYNC220
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    echo = channel.unary_unary(grpc_echo.METHOD)
    try:
        await channel.channel_ready()
        node_cpu, echo_cpu = cpu_s(node.proc.pid), cpu_s(server.pid)
        for i in range(n):
            started = time.perf_counter()
            await echo(b"")
            echoes.append(time.perf_counter() - started)
            request = api_pb2.WriteRequest(
                twins=[api_pb2.TwinWrite(twin_id="rt-stages", ops=[op("v", float(i))])]
            )
            sent = time.monotonic_ns()
            call = node.stub.Write(request, metadata=ask)
            await call
            received = time.monotonic_ns()
            trailing = dict(await call.trailing_metadata() or ())
            got = trailing.get(stages.HEADER)
            if not isinstance(got, str):
                raise RuntimeError("the node sent no stages: is it started with DRSDTP_STAGES=1?")
            traces.append([("sent", sent), *stages.parse(got), ("received", received)])
            started = time.perf_counter()
            await asyncio.to_thread(append_and_sync)
            bare.append(time.perf_counter() - started)
        node_cpu, echo_cpu = cpu_s(node.proc.pid) - node_cpu, cpu_s(server.pid) - echo_cpu
    finally:
        os.close(probe)
        await channel.close()
        server.terminate()
        server.wait(30)
    traces, bare, echoes = traces[n // 10 :], bare[n // 10 :], echoes[n // 10 :]  # after a warm-up
    names = [name for name, _ in traces[0]]
    kept = [t for t in traces if [name for name, _ in t] == names]
    total = np.array([(t[-1][1] - t[0][1]) / 1e6 for t in kept])
    steps = np.array([[(b[1] - a[1]) / 1e6 for a, b in itertools.pairwise(t)] for t in kept])
    slow = total >= np.percentile(total, 99)
    print(f"durable round trip by stage ({len(kept)} of {len(traces)} writes with every stage; ms):")
    print(f"  {'stage':<40} {'p50':>7} {'p99':>7} {'slowest 1 %':>12}")
    for k, (a, b) in enumerate(itertools.pairwise(names)):
        col = steps[:, k]
        print(
            f"  {a + ' -> ' + b:<40} {np.percentile(col, 50):7.3f} {np.percentile(col, 99):7.3f} "
            f"{col[slow].mean():12.3f}"
        )
    print(
        f"  {'total':<40} {np.percentile(total, 50):7.3f} {np.percentile(total, 99):7.3f} "
        f"{total[slow].mean():12.3f}"
    )
    b50, b99 = pct(bare)
    print(f"  {FLOOR}: p50 {b50:.3f}, p99 {b99:.3f}")
    e50, e99 = pct(echoes)
    print(f"  a bare grpc.aio server's empty reply (benches/grpc_echo.py): p50 {e50:.3f}, p99 {e99:.3f}")
    print(
        f"  CPU per call: the node {node_cpu / n * 1e6:.0f} µs a durable write, the bare server "
        f"{echo_cpu / n * 1e6:.0f} µs an empty reply (user + system, all threads)"
    )


def small_cutover(quick: bool) -> None:
    """A write of n f64 reports to one twin, planned and applied in this process on a bare store: the
    small path (drsdtp.api.write_small, from the protobuf message) against the bulk path (from the
    native columns), each from the request body, best of 3 runs. Where the small path stops winning is
    where ``write_small.MAX_ROWS`` belongs."""
    from drsdtp._core import Store, decode_write
    from drsdtp.api import write_bulk, write_small
    from drsdtp.api.write_plan import Applied

    load = os.getloadavg()[0]
    print(
        f"small vs bulk path, one twin, plan + apply from the body (µs a write, best of 3, load {load:.1f}):"
    )
    for n in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        store = Store(1)
        store.set_many("rt", {"x": 0.0})
        count = (100 if quick else 400) + (2000 if not quick else 200) // n
        bodies = [
            api_pb2.WriteRequest(
                twins=[api_pb2.TwinWrite(twin_id="rt", ops=[op(f"v{k}", float(i + k)) for k in range(n)])]
            ).SerializeToString()
            for i in range(count)
        ]
        best = {"small": math.inf, "bulk": math.inf}
        for _ in range(3):
            started = time.perf_counter()
            for body in bodies:
                cols = decode_write(body)
                assert not isinstance(cols, str)
                planned = write_bulk.plan(store, write_bulk.BulkWrite(cols, body), lambda _: None, 1024)
                assert planned is not None
                write_bulk.apply(store, planned, Applied())
            best["bulk"] = min(best["bulk"], (time.perf_counter() - started) / count * 1e6)
            started = time.perf_counter()
            for body in bodies:
                request = api_pb2.WriteRequest.FromString(body)
                small = write_small.plan(store, request, lambda _: None, 1024, max_rows=n)
                assert small is not None and write_small.apply(store, small, Applied())
            best["small"] = min(best["small"], (time.perf_counter() - started) / count * 1e6)
        mark = " (small path)" if n <= write_small.MAX_ROWS else ""
        print(
            f"  {n:4d} rows: small {best['small']:7.1f}, bulk {best['bulk']:7.1f}, "
            f"bulk/small {best['bulk'] / best['small']:.2f}{mark}"
        )


async def rate(writers: int, seconds: float, one: Callable[[int, int], Awaitable[int]]) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer(k: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            wrote = await one(k, i)  # not `done += await ...`: that reads `done` before the await
            done += wrote

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    return done / (time.perf_counter() - started)


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def costed(
    node: Node, seconds: float, one: Callable[[int, int], Awaitable[int]]
) -> tuple[float, float, float]:
    """:func:`rate`, and the node's and this process's CPU seconds per million fields while it ran."""
    node_before, own_before, started = cpu_s(node.proc.pid), time.process_time(), time.perf_counter()
    fields_s = await rate(4, seconds, one)
    fields = fields_s * (time.perf_counter() - started) / 1e6
    node_cpu, own_cpu = cpu_s(node.proc.pid) - node_before, time.process_time() - own_before
    return fields_s, node_cpu / fields, own_cpu / fields


async def batched(node: Node, sdk: AsyncClient, seconds: float) -> dict[str, tuple[float, float, float]]:
    twins = [f"b{i}" for i in range(100)]
    await create(node.stub, twins)

    async def raw(k: int, i: int) -> int:
        ops = [op(f"f{j}", float(i * 4 + k)) for j in range(10)]
        await node.stub.Write(
            api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=t, ops=ops) for t in twins])
        )
        return 1000

    async def with_sdk(k: int, i: int) -> int:
        ops = tuple(report(f"f{j}", float(i * 4 + k)) for j in range(10))
        await sdk.write([TwinWrite(t, ops) for t in twins])
        return 1000

    fields = [f"g{j}" for j in range(40)]
    rows = len(twins) * len(fields)
    twin_col = np.repeat(np.arange(len(twins)), len(fields)).tolist()
    field_col = np.tile(np.arange(len(fields)), len(twins)).tolist()

    async def raw_columns(k: int, i: int) -> int:
        cols = api_pb2.NumericColumns(
            twin_ids=twins, fields=fields, twin=twin_col, field=field_col, values=[float(i * 4 + k)] * rows
        )
        await node.stub.Write(api_pb2.WriteRequest(columns=cols))
        return rows

    async def sdk_columns(k: int, i: int) -> int:
        await sdk.write([], columns=Columns(twins, fields, twin_col, field_col, [float(i * 4 + k)] * rows))
        return rows

    fresh = [f"x{i}" for i in range(100)]  # twins without a set (see mixed_pb)
    await create(node.stub, fresh)

    async def raw_mixed(k: int, i: int) -> int:
        await node.stub.Write(
            api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=t, ops=mixed_pb(i * 4 + k)) for t in twins])
        )
        return 1000

    async def raw_no_sets(k: int, i: int) -> int:
        ops = mixed_pb(i * 4 + k, sets=False)
        await node.stub.Write(
            api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=t, ops=ops) for t in fresh])
        )
        return 1000

    async def sdk_mixed(k: int, i: int) -> int:
        ops = mixed_sdk(i * 4 + k)
        await sdk.write([TwinWrite(t, ops) for t in twins])
        return 1000

    coalescer = sdk.coalescer
    assert coalescer is not None
    before = coalescer.requests, coalescer.writes
    measured = {
        "ops, raw stub": await costed(node, seconds, raw),
        "ops, SDK": await costed(node, seconds, with_sdk),
    }
    requests, writes = coalescer.requests - before[0], coalescer.writes - before[1]
    # The SDK joins concurrent writes into one request (drsdtp.client.coalesce).
    print(f"batched writes, ops, SDK: {writes / max(requests, 1):.2f} writes a request ({requests} requests)")
    return measured | {
        # Every common kind of op (see mixed_pb): each twin's 10 ops, 5 of them f64 reports.
        "mixed ops, raw stub": await costed(node, seconds, raw_mixed),
        "mixed ops, SDK": await costed(node, seconds, sdk_mixed),
        "mixed ops without set ops, raw stub": await costed(node, seconds, raw_no_sets),
        "columns, raw stub": await costed(node, seconds, raw_columns),
        "columns, SDK": await costed(node, seconds, sdk_columns),
    }


def mixed_pb(i: int, sets: bool = True) -> list[api_pb2.FieldOp]:
    """A twin's 10 ops of every common kind (5 f64 reports, 2 increments, a set add and remove, a desire);
    without ``sets``, two more reports instead of the set's ops: what the set's deltas cost beside the rest
    of the path (their context once grew with every write of their twin)."""
    value = float(i)
    tags = (
        [
            api_pb2.FieldOp(field="tags", add=f"e{i % 8}"),
            api_pb2.FieldOp(field="tags", remove=f"e{(i + 4) % 8}"),
        ]
        if sets
        else [api_pb2.FieldOp(field=f"f{j}", report=api_pb2.FieldValue(f64=value + j)) for j in (5, 6)]
    )
    return [
        *(api_pb2.FieldOp(field=f"f{j}", report=api_pb2.FieldValue(f64=value + j)) for j in range(5)),
        api_pb2.FieldOp(field="n", increment=1),
        api_pb2.FieldOp(field="m", increment=-2),
        *tags,
        api_pb2.FieldOp(field="sp", desire=api_pb2.FieldValue(f64=value)),
    ]


def mixed_sdk(i: int) -> tuple[Op, ...]:
    """:func:`mixed_pb`'s ops through the SDK's helpers."""
    value = float(i)
    return (
        *(report(f"f{j}", value + j) for j in range(5)),
        increment("n", 1),
        increment("m", -2),
        add("tags", f"e{i % 8}"),
        remove("tags", f"e{(i + 4) % 8}"),
        desire("sp", value),
    )


async def drive(node: Node, twins: list[str], seconds: float) -> None:
    """10k field changes/s: every twin's ``sent`` field set to the send time every 10 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        request = api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id=t, ops=[op("sent", time.monotonic())]) for t in twins]
        )
        await node.stub.Write(request)
        await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
    await asyncio.sleep(1)


async def watch_raw(
    node: Node, twins: list[str], count: int, seconds: float, max_changes: int
) -> tuple[float, float, float]:
    """Delivery lag of each change. The changes of one message arrive together, in the order they were
    written: each is counted at the lag of the message's first (oldest) one, an upper bound that keeps the
    reader's own work per message, not per change (a million changes a second is more than one Python
    process decodes, see ``sdk_decode_us``). Also: this process's CPU µs per change delivered to a watcher
    while the writer ran (the writer's own included, as in :func:`watch_sdk`)."""
    lags: list[float] = []
    counts: list[int] = []
    stop = asyncio.Event()
    request = api_pb2.WatchRequest(prefix="w", fields=["sent"], max_changes=max_changes)
    calls = [node.stub.Watch(request) for _ in range(count)]

    async def read(call: object) -> None:
        async for message in call:  # type: ignore[attr-defined]
            now = time.monotonic()
            first = message.changes[0] if message.changes else message
            if first.origin != "snapshot" and not stop.is_set() and first.twin.fields:
                lags.append(now - first.twin.fields[0].f64)  # the only field asked for: "sent"
                counts.append(len(message.changes) or 1)

    readers = [asyncio.create_task(read(c)) for c in calls]
    await asyncio.sleep(2)
    cpu = time.process_time()
    await drive(node, twins, seconds)
    cpu = time.process_time() - cpu
    stop.set()
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return (*pct(np.repeat(lags, counts).tolist()), cpu / max(sum(counts), 1) * 1e6)


async def watch_sdk(
    node: Node, sdk: AsyncClient, twins: list[str], count: int, seconds: float, share: bool
) -> tuple[float, float, float]:
    """Delivery lag of each change read from SDK watches, and this process's CPU µs per change delivered
    to a watch (the writer's own included, as in :func:`watch_raw`)."""
    lags: list[float] = []
    stop = asyncio.Event()
    watches: list[Watch] = [sdk.watch(prefix="w", fields=["sent"], share=share) for _ in range(count)]

    async def read(watch: Watch) -> None:
        async for change in watch:
            if change.origin != "snapshot" and not stop.is_set():
                now = time.monotonic()
                sent = change.twin.get("sent")
                if isinstance(sent, float):
                    lags.append(now - sent)

    readers = [asyncio.create_task(read(w)) for w in watches]
    await asyncio.sleep(2)
    cpu = time.process_time()
    await drive(node, twins, seconds)
    cpu = time.process_time() - cpu
    stop.set()
    for w in watches:
        await w.aclose()
    await asyncio.gather(*readers, return_exceptions=True)
    return (*pct(lags), cpu / max(len(lags), 1) * 1e6)


def sdk_decode_us(changes: int = 100, rounds: int = 200, watches: int = 100) -> tuple[float, float]:
    """What the SDK's watch spends on this machine per change: to turn a message into typed changes (once
    per stream, shared by its watches), and for each watch to read the watched value, as ``watch_sdk``
    does (µs; a field is decoded when first read)."""
    twin = api_pb2.Twin(
        twin_id="w42", version=1 << 60, fields=[api_pb2.FieldValue(name="sent", f64=1.5, stamp=1 << 50)]
    )
    one = api_pb2.TwinChange(twin=twin, origin="local", cursor=1 << 60)
    data = api_pb2.TwinChange(changes=[one] * changes).SerializeToString()
    decoding = reading = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        decoded = [Change.from_pb(c) for c in api_pb2.TwinChange.FromString(data).changes]
        decoding += time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(watches):
            for change in decoded:
                change.twin.get("sent")
        reading += time.perf_counter() - started
    return decoding / (rounds * changes) * 1e6, reading / (rounds * changes * watches) * 1e6


async def idle_memory(node: Node, sdk: AsyncClient, count: int) -> tuple[float, float, float]:
    """KB per idle SDK watch (each received its one-twin snapshot, then nothing): the node's RSS, this
    process's RSS, and the Python heap of this process (tracemalloc)."""
    await create(node.stub, ["idle"])
    gc.collect()
    node_before, own_before = rss_kb(node.proc.pid), rss_kb(os.getpid())
    tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    watches = [sdk.watch(["idle"], share=False) for _ in range(count)]  # a stream each, as apart
    await asyncio.gather(*(anext(w) for w in watches))  # every stream open and its snapshot read
    await asyncio.sleep(1)
    gc.collect()
    heap = (tracemalloc.get_traced_memory()[0] - heap_before) / count / 1024
    tracemalloc.stop()
    node_kb = (rss_kb(node.proc.pid) - node_before) / count
    own_kb = (rss_kb(os.getpid()) - own_before) / count
    for w in watches:
        await w.aclose()
    return node_kb, own_kb, heap


async def report_batched(node: Node, sdk: AsyncClient, secs: float) -> None:
    measured = await batched(node, sdk, secs)
    for name, (fields_s, node_s, own_s) in measured.items():
        print(
            f"batched writes, {name} (4 in flight): {fields_s:,.0f} fields/s; CPU s per "
            f"million fields: node {node_s:.2f}, client {own_s:.2f}"
        )
    for kind in ("raw stub", "SDK"):
        mixed, f64 = measured[f"mixed ops, {kind}"][0], measured[f"ops, {kind}"][0]
        print(f"batched writes, mixed ops against f64 ops, {kind}: {mixed / f64:.2f}x (same run)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smoke run (small counts, short phases)")
    parser.add_argument("--breakdown", action="store_true", help="only the round trip, stage by stage")
    parser.add_argument(
        "--small-cutover", action="store_true", help="only the small write path vs the bulk path by rows"
    )
    parser.add_argument("--batched", action="store_true", help="only the batched writes (section 2)")
    parser.add_argument(
        "--round-trip", action="store_true", help="only the durable write round trip (section 1)"
    )
    args = parser.parse_args()
    if args.small_cutover:
        small_cutover(args.quick)
        return
    if args.breakdown:
        with tempfile.TemporaryDirectory() as tmp:
            node = Node(Path(tmp), 0, env={"DRSDTP_STAGES": "1"})
            try:
                await node.ready()
                await breakdown(node, 300 if args.quick else 3000, Path(tmp))
            finally:
                await node.close()
        return
    n, secs, watchers = (200, 1.5, 20) if args.quick else (3000, 8.0, 100)
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp), 0)
        try:
            await node.ready()
            target = f"127.0.0.1:{node.port}"
            async with AsyncClient(target, timeout=30) as sdk:
                if args.batched:
                    await report_batched(node, sdk, secs)
                    return
                # The blocking client runs its own event loop: closed before the throughput phases, as a
                # second gRPC event loop in the process slows every call of the first (measured: 3x).
                with Client(target, timeout=30) as blocking:
                    print(f"load average before the round trips {os.getloadavg()[0]:.1f}")
                    trips = await round_trips(node, sdk, blocking, n, Path(tmp))
                    print(f"load average after them {os.getloadavg()[0]:.1f}")
                    for name, (p50, p99) in trips.items():
                        print(f"write round trip, durable ack, {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
                    floor_p99 = trips[FLOOR][1]
                    print(
                        f"write round trip goal p99 <= 2 ms; this disk's fdatasync p99 {floor_p99:.2f} ms: "
                        + (
                            "the goal is below the floor here"
                            if floor_p99 > 2
                            else "the floor is below the goal"
                        )
                    )
                if args.round_trip:
                    return
                await report_batched(node, sdk, secs)
                twins = [f"w{i}" for i in range(100)]
                await create(node.stub, twins)
                for name, max_changes in (("one change a message (v1)", 0), ("max_changes 512", 512)):
                    p50, p99, us = await watch_raw(node, twins, watchers, secs, max_changes)
                    print(
                        f"{watchers} watchers, 10k changes/s, raw stub, {name}: "
                        f"lag p50 {p50:.1f} ms, p99 {p99:.1f} ms; client CPU {us:.2f} µs a change delivered"
                    )
                for name, share in (("one stream each (share=False)", False), ("sharing one stream", True)):
                    p50, p99, us = await watch_sdk(node, sdk, twins, watchers, secs, share)
                    print(
                        f"{watchers} watchers, 10k changes/s, SDK watch, {name}: "
                        f"lag p50 {p50:.1f} ms, p99 {p99:.1f} ms; client CPU {us:.2f} µs a change delivered"
                    )
                decode_us, read_us = sdk_decode_us(watches=watchers)
                need = (decode_us + read_us * watchers) * 10_000 / 1e6
                print(
                    f"SDK watch: {decode_us:.2f} µs per change to a typed Change (once per stream), "
                    f"{read_us:.2f} µs for each watch to read its value: {watchers} watchers sharing a "
                    f"stream of 10k changes/s need {need:.2f} s of client CPU a second"
                )
                idle = 50 if args.quick else 190  # the node admits 200 streams (bench_api_write's config)
                node_kb, own_kb, heap_kb = await idle_memory(node, sdk, idle)
                print(
                    f"per idle SDK watch ({idle} open): node RSS {node_kb:.1f} KB; "
                    f"client RSS {own_kb:.1f} KB, of which Python heap {heap_kb:.1f} KB"
                )
        finally:
            await node.close()
    print(f"(cores: {os.cpu_count()}; client and node share them; threads: {threading.active_count()})")


if __name__ == "__main__":
    asyncio.run(main())
