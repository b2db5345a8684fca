"""A node under heavy ingest for the crash and recovery tests: concurrent batch writes, each acknowledged on
stdout ("ACK <batch> <twin> <field> <value>" per reading) only after ``Node.commit`` returned (durable).

usage: python -m tests.daemon.writer_proc <data_dir> [--batches N] [--snapshot-every K]

Without ``--batches`` it writes until killed; with it, it writes N batches, prints DONE and exits cleanly
(the log is closed as ``drsdtp run`` closes it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np

from drsdtp.config import parse_config
from drsdtp.core import BatchWriter
from drsdtp.node.node import Node

BATCH = 50
WORKERS = 8


async def main(data_dir: str, batches: int, snapshot_every: int) -> None:
    config = parse_config(
        {
            "node_id": "crash-1",
            "data_dir": data_dir,
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "wal": {"fsync_interval_ms": 2, "snapshot_every": snapshot_every},
        }
    )
    async with Node(config) as node:
        writer = BatchWriter(node.store)
        out = sys.stdout

        async def worker(w: int) -> None:
            for batch in range(w, batches, WORKERS):
                twins = [f"load-{i}" for i in range(BATCH)]
                fields = [f"b{batch}" for _ in range(BATCH)]
                values = np.arange(BATCH, dtype=np.float64) + batch
                delta = writer.write(twins, fields, values)
                await node.commit(delta, sorted(set(twins)), "ingest")
                out.write(
                    "".join(
                        f"ACK {batch} {t} {f} {v}\n" for t, f, v in zip(twins, fields, values, strict=True)
                    )
                )
                out.flush()

        print("READY", flush=True)
        async with asyncio.TaskGroup() as tg:
            for w in range(WORKERS):
                tg.create_task(worker(w))
    print("DONE", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--batches", type=int, default=10**9)
    ap.add_argument("--snapshot-every", type=int, default=100)
    args = ap.parse_args()
    asyncio.run(main(args.data_dir, args.batches, args.snapshot_every))
