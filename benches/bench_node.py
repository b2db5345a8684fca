"""Node benchmarks (issues 3 and 13): idle RSS, RSS with 100k twins x 10 fields, peak RSS of a real node
process filled with a million twins x 10 fields through its API with the write-ahead log and snapshots on
(against the bare store in the same run), ingest throughput with the write-ahead log on versus off (the
price of durability), and recovery time for a 1 GB log.

Run: ``.venv/bin/python benches/bench_node.py [--log-gb 1.0] [--twins 1000000]``. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from bench_report import Goal, Row, emit

from drsdtp._core import Store, Wal
from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import parse_config
from drsdtp.core import BatchWriter
from drsdtp.node.node import Node

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))  # tests.daemon.floods: the real-node harness the memory tests use
FIELDS = 10
PER_DELTA = 1_000
SNAPSHOT_CHUNK_MB = 1  # crdt_core::wal::SNAPSHOT_CHUNK_BYTES


def rss_mb(pid: int | str = "self") -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(data_dir: str, wal: bool = True, history: bool = False) -> object:
    return parse_config(
        {
            "node_id": "bench",
            "data_dir": data_dir,
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "wal": {"enabled": wal, "snapshot_every": 10**9},
            "history": {"enabled": history},
        }
    )


def idle_rss() -> float:
    with tempfile.TemporaryDirectory() as d:
        cfg = pathlib.Path(d, "n.toml")
        cfg.write_text(
            f'node_id = "idle"\ndata_dir = "{d}/data"\n[listen]\napi = "127.0.0.1:0"\n'
            'metrics = "127.0.0.1:0"\npeer = "127.0.0.1:0"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "drsdtp", "run", "--config", str(cfg)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if "node ready" in line:
                break
        time.sleep(2)
        rss = rss_mb(proc.pid)
        status = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
        keys = ("RssAnon", "RssFile", "Threads")
        rows = (line.split(":", 1) for line in status.splitlines())
        split = {k: int(v.split()[0]) for k, v in rows if k in keys}
        maps = pathlib.Path(f"/proc/{proc.pid}/maps").read_text()
        print(
            f"idle node RSS breakdown: {split['RssAnon'] / 1024:.1f} MB anonymous (Python objects, malloc), "
            f"{split['RssFile'] / 1024:.1f} MB file-backed (libpython, grpc, OpenSSL, _core), "
            f"{split['Threads']} threads; numpy {'loaded' if '/numpy/' in maps else 'not loaded'}"
        )
        proc.terminate()
        proc.wait(30)
        return rss


def peak_mb(pid: int | str = "self") -> float:
    """The process's peak RSS so far (the kernel's high-water mark: no sample can miss it)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare_store_child(twins: int) -> None:
    """In a fresh process: the bare store (no node, no log) holding ``twins`` x 10 fields, batch-written."""
    before = rss_mb()
    store = Store(1)
    w = BatchWriter(store)
    fields = [f"f{k}" for k in range(FIELDS)]
    for start in range(0, twins, 1_000):
        n = min(1_000, twins - start)
        names = [f"twin-{t}" for t in range(start, start + n) for _ in fields]
        w.write(names, fields * n, np.random.default_rng(start).random(n * FIELDS))
    growth, peak, held = rss_mb() - before, peak_mb(), rss_mb()
    # The snapshot's own memory: the peak RSS while the log snapshots this store, over the RSS before it (the
    # kernel's high-water mark reset first), against the size of the state it wrote.
    with tempfile.TemporaryDirectory() as d:
        wal, _ = Wal.open(pathlib.Path(d), store)
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        at = rss_mb()
        wal.snapshot(store)
        snap_mb = peak_mb() - at
        state_mb = sum(p.stat().st_size for p in pathlib.Path(d).glob("snap-*.bin")) / 2**20
        wal.close()
    print(f"{growth:.1f} {peak:.1f} {held:.1f} {store.stats()['fields']} {snap_mb:.1f} {state_mb:.1f}")


async def node_fill(twins: int) -> tuple[float, float, float, int, int]:
    """A real ``drsdtp run`` process (WAL on, a snapshot every 16 MiB of log, history off) filled with
    ``twins`` new twins x 10 fields by a peer (the fastest way in: one delta per 1,000 twins, merged, logged
    and snapshotted as any peer's). Returns its idle RSS, peak RSS, RSS once settled (MB), the snapshots it
    took and the fields it holds."""
    import contextlib

    import grpc

    from drsdtp.core import replica_id
    from drsdtp.wire.v1.peer_pb2 import DeltaBatch, PeerMessage
    from tests.daemon.floods import Daemon
    from tests.gossip.support import pushing_peer

    with tempfile.TemporaryDirectory() as d:
        body = "[wal]\nsegment_bytes = 16777216\n[history]\nenabled = false\n"
        node = Daemon(pathlib.Path(d), body, node_id="million")
        await node.start()
        try:
            idle = rss_mb(node.pid)
            source = Store(replica_id("filler"))
            w = BatchWriter(source)
            fields = [f"f{k}" for k in range(FIELDS)]
            async with pushing_peer(node.peer_port, "filler") as peer:
                for k, start in enumerate(range(0, twins, PER_DELTA)):
                    n = min(PER_DELTA, twins - start)
                    names = [f"twin-{t}" for t in range(start, start + n) for _ in fields]
                    delta = w.write(names, fields * n, np.random.default_rng(start).random(n * FIELDS))
                    await peer.send(PeerMessage(deltas=DeltaBatch(from_seq=k, to_seq=k + 1, deltas=[delta])))
                held = 0
                for _ in range(6000):  # until the node holds them all (a cap, not a timing)
                    with contextlib.suppress(grpc.aio.AioRpcError):  # a node busy merging answers late
                        held = (await node.status(deadline_s=60)).fields
                    if held >= twins * FIELDS:
                        break
                    await asyncio.sleep(0.1)
            del source, w
            await asyncio.sleep(3)  # let a snapshot under way finish, then read what stays
            return idle, peak_mb(node.pid), rss_mb(node.pid), snapshots(node.workdir / "data"), held
        finally:
            node.stop()


def snapshots(data_dir: pathlib.Path) -> int:
    """Snapshots the node took: each one starts a log segment, and the newest kept is named after it."""
    numbers = [int(p.name[len("snap-") : -len(".bin")]) for p in (data_dir / "wal").glob("snap-*.bin")]
    return max(numbers, default=1) - 1


def million(twins: int) -> list[Row]:
    """The node's peak RSS filled with ``twins`` x 10 fields, and the memory a snapshot of them takes."""
    out = subprocess.run(
        [sys.executable, __file__, "bare-store-child", str(twins)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    bare_growth, bare_peak, snap_mb, state_mb = float(out[0]), float(out[1]), float(out[4]), float(out[5])
    idle, peak, settled, snaps, fields = asyncio.run(node_fill(twins))
    print(
        f"{twins:,} twins x {FIELDS} fields through a node (from a peer, WAL, {snaps} snapshots): peak RSS "
        f"{peak:,.0f} MB (goal <= 1,000 MB), {settled:,.0f} MB after, idle {idle:.0f} MB; bare store in the "
        f"same run: +{bare_growth:,.0f} MB (peak {bare_peak:,.0f} MB); the node holds {fields:,} fields; "
        f"node peak / bare store peak {peak / bare_peak:.2f}x, growth over idle / bare growth "
        f"{(peak - idle) / max(bare_growth, 1):.2f}x; a snapshot of the bare store ({state_mb:,.0f} MB on "
        f"disk, chunks of {SNAPSHOT_CHUNK_MB} MB) raised its RSS by {snap_mb:,.1f} MB at most"
    )
    # The goal's row only at the goal's size (a smaller run is a smoke test, not the figure).
    what = "1M twins x 10 fields" if twins == 1_000_000 else f"{twins:,} twins x {FIELDS} fields"
    return [
        Row.of(
            f"{what} through a node, peak RSS",
            peak,
            "MB",
            Goal("<=", 1000),
            baseline=bare_peak,
            baseline_name="bare store peak",
        ),
        # O(chunk): a bound that does not grow with the state (16 chunks), the state's size beside it.
        Row.of(
            f"{what}, snapshot memory",
            snap_mb,
            "MB",
            Goal("<=", 16 * SNAPSHOT_CHUNK_MB),
            baseline=state_mb,
            baseline_name="state on disk",
        ),
    ]


def twins_rss_child() -> None:
    """In a fresh process: RSS growth of a node store holding 100k twins x 10 fields."""

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            async with Node(config(d)) as node:  # type: ignore[arg-type]
                before = rss_mb()
                w = BatchWriter(node.store)
                fields = [f"f{k}" for k in range(10)]
                for start in range(0, 100_000, 1_000):
                    twins = [f"twin-{t}" for t in range(start, start + 1_000) for _ in fields]
                    names = fields * 1_000
                    values = np.random.default_rng(start).random(10_000)
                    await node.commit(w.write(twins, names, values), [], "x")
                print(f"{rss_mb() - before:.1f} {node.store.stats()['fields']}")

    asyncio.run(main())


async def ingest_rate(wal: bool, seconds: float = 5.0, workers: int = 8, batch: int = 1_000) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with Node(config(d, wal)) as node:  # type: ignore[arg-type]
            w = BatchWriter(node.store)
            twins = [f"twin-{i % 100}" for i in range(batch)]
            fields = [f"s{i // 100}" for i in range(batch)]
            done = 0
            end = time.monotonic() + seconds

            async def worker(k: int) -> None:
                nonlocal done
                rng = np.random.default_rng(k)
                while time.monotonic() < end:
                    await node.commit(w.write(twins, fields, rng.random(batch)), [], "ingest")
                    done += batch

            start = time.monotonic()
            async with asyncio.TaskGroup() as tg:
                for k in range(workers):
                    tg.create_task(worker(k))
            return done / (time.monotonic() - start)


async def sink_rate(journal: bool, seconds: float = 5.0, workers: int = 8, batch: int = 1_000) -> float:
    """Readings/s through the ingest sink (store write, history, WAL commit) with history on, with its
    journal in the log (the default) or without it (history as before the journal: not crash-safe)."""
    with tempfile.TemporaryDirectory() as d:
        async with Node(config(d, True, True)) as node:  # type: ignore[arg-type]
            assert node.history is not None
            if not journal:
                node.history._journal_to = None  # the comparison point only; no setting turns it off
            store = node.store
            twin_ids = np.array([store.intern_twin(f"twin-{i % 100}") for i in range(batch)], np.uint32)
            field_ids = np.array([store.intern_field(f"s{i // 100}") for i in range(batch)], np.uint32)
            done = 0
            end = time.monotonic() + seconds

            async def worker(k: int) -> None:
                nonlocal done
                rng = np.random.default_rng(k)
                while time.monotonic() < end:
                    now = int(time.time() * 1000)
                    await node.intake.sink.apply(
                        ReadingBatch(
                            twin_ids,
                            field_ids,
                            rng.random(batch),
                            np.full(batch, now, np.int64),
                            np.zeros(batch, np.uint8),
                            np.zeros(batch, np.bool_),
                        )
                    )
                    done += batch

            start = time.monotonic()
            async with asyncio.TaskGroup() as tg:
                for k in range(workers):
                    tg.create_task(worker(k))
            return done / (time.monotonic() - start)


def recovery(log_gb: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as d:
        s = Store(1)
        wal, _ = Wal.open(pathlib.Path(d), s)
        w = BatchWriter(s)
        twins = [f"twin-{i % 1000}" for i in range(1000)]
        fields = [f"s{i // 1000}" for i in range(1000)]
        rng = np.random.default_rng(0)
        written = 0
        while written < log_gb * 1e9:
            delta = w.write(twins, fields, rng.random(1000))
            wal.append(delta)
            written += len(delta) + 28  # the record header
            if wal.pending_bytes > 64 << 20:
                wal.commit()
        wal.commit()
        size = sum(f.stat().st_size for f in pathlib.Path(d).glob("wal-*.log"))
        os.sync()
        fresh = Store(1)
        t = time.perf_counter()
        _, report = Wal.open(pathlib.Path(d), fresh)
        secs = time.perf_counter() - t
        assert fresh.encode_state() == s.encode_state()
        return size / 1e9, secs, report["records"]


def main() -> None:
    if sys.argv[1:] == ["twins-rss-child"]:
        twins_rss_child()
        return
    if sys.argv[1:2] == ["bare-store-child"]:
        bare_store_child(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--log-gb", type=float, default=1.0)
    ap.add_argument("--twins", type=int, default=1_000_000, help="twins (x 10 fields) to fill a node with")
    ap.add_argument("--only-million", action="store_true", help="only the million-twins figure")
    args = ap.parse_args()
    if args.only_million:
        emit("bench_node", million(args.twins))
        return
    idle = idle_rss()
    print(
        f"idle node RSS: {idle:.1f} MB (goal <= 45 MB; ThingsBoard Edge plans 256-512 MB: "
        f"{256 / idle:.1f}x less)"
    )
    out = subprocess.run(
        [sys.executable, __file__, "twins-rss-child"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    print(
        f"100k twins x 10 fields: +{float(out[0]):.1f} MB RSS for {out[1]} fields "
        f"({float(out[0]) * 1e6 / 100_000:.0f} B per twin)"
    )
    on = asyncio.run(ingest_rate(True))
    off = asyncio.run(ingest_rate(False))
    print(
        f"ingest through the node, 8 writers x 1,000-reading batches: WAL on {on:,.0f} readings/s, "
        f"off {off:,.0f} readings/s (durability costs {100 * (1 - on / off):.0f}%)"
    )
    journal_on = asyncio.run(sink_rate(True))
    journal_off = asyncio.run(sink_rate(False))
    print(
        f"ingest sink with history, 8 writers x 1,000 readings: journal in the log {journal_on:,.0f} "
        f"readings/s, without {journal_off:,.0f} readings/s (crash-safe history costs "
        f"{100 * (1 - journal_on / journal_off):.0f}%)"
    )
    rows = [Row.of("idle node RSS", idle, "MB", Goal("<=", 45)), *million(args.twins)]
    gb, secs, records = recovery(args.log_gb)
    print(f"recovery of a {gb:.2f} GB log ({records:,} records): {secs:.1f} s ({gb / secs:.2f} GB/s)")
    emit("bench_node", rows)


if __name__ == "__main__":
    main()
