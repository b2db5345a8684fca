"""Node benchmarks (issue 3): idle RSS, RSS with 100k twins x 10 fields, ingest throughput with the
write-ahead log on versus off (the price of durability), and recovery time for a 1 GB log.

Run: ``.venv/bin/python benches/bench_node.py [--log-gb 1.0]``. Prints figures; not a test.
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

from drsdtp._core import Store, Wal
from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import parse_config
from drsdtp.core import BatchWriter
from drsdtp.node.node import Node

ROOT = pathlib.Path(__file__).parents[1]


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
        proc.terminate()
        proc.wait(30)
        return rss


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
    ap = argparse.ArgumentParser()
    ap.add_argument("--log-gb", type=float, default=1.0)
    args = ap.parse_args()
    idle = idle_rss()
    print(
        f"idle node RSS: {idle:.1f} MB (goal <= 60 MB; ThingsBoard Edge plans 256-512 MB: "
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
    gb, secs, records = recovery(args.log_gb)
    print(f"recovery of a {gb:.2f} GB log ({records:,} records): {secs:.1f} s ({gb / secs:.2f} GB/s)")


if __name__ == "__main__":
    main()
