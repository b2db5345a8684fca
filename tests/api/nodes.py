"""Real ``drsdtp run`` processes for the API tests, each reaching each peer through a cuttable proxy
(``tests.gossip.procs.Proxy``), so a test can partition them without root."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc
from tests.gossip.procs import Proxy
from tests.ingest.support import free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiNode:
    def __init__(self, name: str, root: Path, *, model: str | None = "room") -> None:
        """``model``: the asset model of the ``room-*`` twins (None: none, so the node runs no intelligence
        on them)."""
        self.name, self.node_id, self.model = name, f"node-{name}", model
        self.api_port, self.peer_port = free_port(), free_port()
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.config = self.dir / "node.toml"
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, peers: dict[str, int], extra: str = "") -> None:
        """``peers``: node id -> the port this node reaches it on."""
        text = "".join(f'[[peers]]\nname = "{n}"\naddress = "127.0.0.1:{p}"\n' for n, p in peers.items())
        twins = f'[[twins]]\nmatch = "room-*"\nmodel = "{self.model}"\n' if self.model else ""
        self.config.write_text(
            f'node_id = "{self.node_id}"\ndata_dir = "{self.dir / "data"}"\n'
            f'[listen]\napi = "127.0.0.1:{self.api_port}"\nmetrics = "127.0.0.1:0"\n'
            f'peer = "127.0.0.1:{self.peer_port}"\n[wal]\nfsync_interval_ms = 2\n'
            f"{twins}{extra}{text}"
        )

    def spawn(self) -> None:
        log = (self.dir / "node.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        log.close()

    async def start(self) -> None:
        """Spawns the process and returns once its API answers."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (
                f"{self.name} exited: {(self.dir / 'node.log').read_text()[-2000:]}"
            )
            try:
                await self.call("Status", api_pb2.StatusRequest(), deadline_s=2)
                return
            except grpc.aio.AioRpcError:
                assert time.monotonic() < deadline, f"{self.name} did not answer in time"
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @asynccontextmanager
    async def stub(self) -> AsyncIterator[api_pb2_grpc.TwinApiStub]:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            yield stub

    async def call(self, method: str, request: object, deadline_s: float = 20) -> Any:
        async with self.stub() as stub:
            return await getattr(stub, method)(request, timeout=deadline_s)

    async def get(self, twin: str) -> api_pb2.Twin | None:
        try:
            got = await self.call("GetTwin", api_pb2.GetTwinRequest(twin_id=twin))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        assert isinstance(got, api_pb2.Twin)
        return got


class Cluster:
    """Nodes that reach each other through proxies: ``cut``/``heal`` a pair."""

    def __init__(self, root: Path, names: list[str], extra: str = "") -> None:
        self.nodes = {n: ApiNode(n, root) for n in names}
        self.extra = extra
        self.proxies: dict[tuple[str, str], Proxy] = {}

    async def start(self) -> None:
        for a, b in itertools.permutations(self.nodes, 2):
            proxy = Proxy(self.nodes[b].peer_port)
            await proxy.start()
            self.proxies[(a, b)] = proxy
        for a, node in self.nodes.items():
            node.configure(
                {self.nodes[b].node_id: self.proxies[(a, b)].port for b in self.nodes if b != a}, self.extra
            )
        await asyncio.gather(*(n.start() for n in self.nodes.values()))

    def cut(self, a: str, b: str) -> None:
        self.proxies[(a, b)].block()
        self.proxies[(b, a)].block()

    def heal(self, a: str, b: str) -> None:
        self.proxies[(a, b)].unblock()
        self.proxies[(b, a)].unblock()

    async def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for proxy in self.proxies.values():
            await proxy.close()


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.2)
