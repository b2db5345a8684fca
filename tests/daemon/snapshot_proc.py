"""A node that snapshots a large store over and over, for the crash-mid-snapshot test.

usage: python -m tests.daemon.snapshot_proc <data_dir> <twins>

It writes ``twins`` twins x 10 fields (durable), takes one snapshot and prints GOOD, writes one more field on
every twin (durable), prints MORE, then snapshots in a loop until it is killed: a SIGKILL then almost surely
lands while a snapshot file is being written or verified.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

from drsdtp.config import parse_config
from drsdtp.core import BatchWriter
from drsdtp.node.node import Node

FIELDS = 10
BATCH_TWINS = 5_000


def value(twin: int, field: int) -> float:
    return float(twin * 100 + field)


async def write(node: Node, writer: BatchWriter, twins: int, fields: range) -> None:
    for start in range(0, twins, BATCH_TWINS):
        ids = range(start, min(start + BATCH_TWINS, twins))
        names = [f"twin-{t}" for t in ids for _ in fields]
        keys = [f"f{f}" for _ in ids for f in fields]
        values = np.array([value(t, f) for t in ids for f in fields])
        await node.commit(writer.write(names, keys, values), [], "ingest")


async def main(data_dir: str, twins: int) -> None:
    config = parse_config(
        {
            "node_id": "snap-1",
            "data_dir": data_dir,
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "wal": {"snapshot_every": 10**9},
            "history": {"enabled": False},
        }
    )
    async with Node(config) as node:
        writer = BatchWriter(node.store)
        await write(node, writer, twins, range(FIELDS))
        await node.durable.snapshot()
        print("GOOD", flush=True)
        await write(node, writer, twins, range(FIELDS, FIELDS + 1))
        print("MORE", flush=True)
        while True:
            await node.durable.snapshot()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
