"""A minimal node process for the real-process replication tests, until the daemon (``drsdtp run``) exists.

It runs a Store, a Replicator and a tiny durable log: deltas appended to a file and fsynced in groups,
replayed on start (a torn tail is cut). A local write is acknowledged only once its delta is durable, and
only then handed to the replicator. Received deltas are persisted through the same log before they are
acknowledged to the peer.

Control: one JSON command per line on stdin, JSON lines on stdout::

    {"cmd": "write", "first": 0, "count": 100}  -> {"acked": i} per durable write, then {"done": true}
    {"cmd": "state"}                             -> {"digest": ..., "ids": [...], "counters": {...}, ...}
    {"cmd": "stop"}                              -> {"stopped": true}, then the process exits

Each write ``i`` is three events: add ``"<node>:<i>"`` to the OR-set ``ids`` of twin ``set-<i % 8>``,
increment the node's counter in twin ``counters``, and set register ``k<i>`` of twin ``reg-<node>``.

Usage: ``python -m tests.gossip.node_proc --name n1 --data DIR --port 0 --peer n2=127.0.0.1:7402 ...``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import struct
import sys
import zlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from drsdtp.config import Address, PeerConfig
from drsdtp.core import Store, replica_id
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.replicator import Replicator

log = logging.getLogger("node_proc")

_HEADER = struct.Struct("<II")  # length, crc32


class DurableLog:
    """Append-only delta log with group commit (one fsync per batch of appends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.replayed = self._replay()
        self._file = path.open("ab")
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self.fsyncs = 0

    def _replay(self) -> list[bytes]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        out, pos = [], 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break  # a torn or corrupt tail: cut it, never trust it
            out.append(body)
            pos += _HEADER.size + length
        if pos < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(pos)
        return out

    def append(self, delta: bytes) -> Awaitable[None]:
        """Queue ``delta`` (synchronously, so a later ``sync()`` covers it); the result resolves once
        it is on disk."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((delta, future))
        self._wake.set()
        return future

    def sync(self) -> Awaitable[None]:
        """Resolves once everything appended so far (a batch being written included) is durable."""
        return self.append(b"")

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            records = b"".join(_HEADER.pack(len(d), zlib.crc32(d)) + d for d, _ in batch if d)
            await asyncio.to_thread(self._write, records)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write(self, records: bytes) -> None:
        if records:
            self._file.write(records)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.fsyncs += 1


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        data = Path(args.data)
        data.mkdir(parents=True, exist_ok=True)
        self.store = Store(replica_id(self.name))
        self.log = DurableLog(data / "deltas.log")
        for delta in self.log.replayed:
            self.store.merge(delta)
        peers = []
        for spec in args.peer:
            name, _, address = spec.partition("=")
            host, _, port = address.rpartition(":")
            peers.append(PeerConfig(name, Address(host, int(port))))
        # Short timers: the tests freeze and cut nodes and expect prompt detection and reconnection.
        limits = GossipLimits(
            repair_interval_s=5.0,
            retransmit_after_s=5.0,
            tick_s=0.25,
            reconnect_max_s=1.0,
            keepalive_time_s=2.0,
            keepalive_timeout_s=2.0,
        )
        self.replicator = Replicator(
            self.store, self.name, Address("127.0.0.1", args.port), peers, ["default"], None, limits,
            persist=self.log.append, sync=self.log.sync,
        )  # fmt: skip

    async def write(self, first: int, count: int) -> None:
        for i in range(first, first + count):
            deltas = [
                self.store.add(f"set-{i % 8}", "ids", f"{self.name}:{i}"),
                self.store.increment("counters", self.name, 1),
                self.store.set(f"reg-{self.name}", f"k{i}", i),
            ]
            for delta in deltas:
                await self.log.append(delta)
            for delta in deltas:
                self.replicator.on_local_delta(delta)
            _emit({"acked": i})
        _emit({"done": True})

    def state(self) -> dict[str, Any]:
        ids: set[str] = set()
        for twin in self.store.twins():
            if twin.startswith("set-"):
                value = self.store.get(twin, "ids")
                if isinstance(value, frozenset):
                    ids |= value
        counters = self.store.fields("counters") if "counters" in self.store else {}
        return {
            "digest": hashlib.sha256(self.store.encode_state()).hexdigest(),
            "ids": sorted(ids),
            "counters": {k: v for k, v in counters.items() if isinstance(v, int)},
            "peers": self.replicator.connected_peers(),
        }

    async def serve(self) -> None:
        async with asyncio.TaskGroup() as tg:
            log_task = tg.create_task(self.log.run())  # before the replicator: it persists at start
            async with self.replicator:
                await self._serve_commands()
            await self.log.sync()
            log_task.cancel()
        _emit({"stopped": True})

    async def _serve_commands(self) -> None:
        _emit({"ready": True, "port": self.replicator.port, "replayed": len(self.log.replayed)})
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "write":
                await self.write(command["first"], command["count"])
            elif command["cmd"] == "state":
                _emit(self.state())
            elif command["cmd"] == "stop":
                break


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--peer", action="append", default=[], help="name=host:port")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(Node(args).serve())


if __name__ == "__main__":
    main()
