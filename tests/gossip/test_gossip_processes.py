"""Real node processes on loopback: writes on all of them, one node cut off and brought back, one killed with
SIGKILL in the middle of its writes and restarted, one frozen with SIGSTOP (its peers notice through
keepalive) and thawed. All converge, and no acknowledged write is lost."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .procs import NodeProcess, Proxy
from .support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NAMES = ("n1", "n2", "n3", "n4")


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.nodes = {n: NodeProcess(n, tmp / n, tmp) for n in NAMES}
        # proxies[(a, b)]: the path a dials to reach b
        self.proxies: dict[tuple[str, str], Proxy] = {}

    async def start(self) -> None:
        # Fixed listen ports are not needed: start the nodes' proxies first, pointing nowhere yet.
        for a in NAMES:
            for b in NAMES:
                if a != b:
                    proxy = Proxy(0)
                    await proxy.start()
                    self.proxies[(a, b)] = proxy
        await asyncio.gather(*(self.boot(n) for n in NAMES))

    async def boot(self, name: str, port: int = 0) -> None:
        peers = {b: self.proxies[(name, b)].port for b in NAMES if b != name}
        await self.nodes[name].start(peers, port)
        for a in NAMES:
            if a != name:
                self.proxies[(a, name)].target_port = self.nodes[name].port

    def isolate(self, name: str, blocked: bool) -> None:
        for (a, b), proxy in self.proxies.items():
            if name in (a, b):
                proxy.block() if blocked else proxy.unblock()

    async def converged(self, timeout_s: float) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            while True:
                states = [await node.state() for node in self.nodes.values()]
                if len({s["digest"] for s in states}) == 1:
                    return states
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes.values()))
        for proxy in self.proxies.values():
            await proxy.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        await c.start()
        yield c
    finally:
        await c.close()


async def test_cut_off_and_killed_nodes_converge_without_losing_acknowledged_writes(cluster: Cluster) -> None:
    nodes = cluster.nodes
    # Writes on every node while all are connected.
    await asyncio.gather(*(node.write(0, 40) for node in nodes.values()))

    # n3 is cut off; everyone keeps writing, n3 included (its writes stay local for now).
    cluster.isolate("n3", True)
    await asyncio.gather(*(node.write(40, 200) for node in nodes.values()))

    # n2 freezes (SIGSTOP) for longer than the keepalive timeout while the others write, then thaws.
    nodes["n2"].signal(signal.SIGSTOP)
    await asyncio.gather(*(nodes[n].write(240, 50) for n in ("n1", "n4")))
    await asyncio.sleep(5)
    nodes["n2"].signal(signal.SIGCONT)

    # n4 is killed with SIGKILL in the middle of a long run of writes, then restarted on its data.
    n4 = nodes["n4"]
    await n4.send({"cmd": "write", "first": 300, "count": 100_000})
    await eventually(lambda: len(n4.acked) >= 400, timeout_s=60, what="n4 acknowledges writes")
    n4.kill()
    assert await n4.wait() == -9
    acked_before_kill = set(n4.acked)
    await cluster.boot("n4")
    assert n4.replayed >= 3 * len(acked_before_kill)  # every acknowledged write is in its log
    await asyncio.gather(*(node.write(1000, 20) for name, node in nodes.items() if name != "n3"))

    # n3 comes back.
    cluster.isolate("n3", False)
    await asyncio.gather(*(node.write(2000, 20) for node in nodes.values()))

    states = await cluster.converged(timeout_s=90)
    final_ids = set(states[0]["ids"])
    for name, node in nodes.items():
        acked = {f"{name}:{i}" for i in node.acked}
        lost = acked - final_ids
        assert not lost, f"{len(lost)} acknowledged writes of {name} lost, e.g. {sorted(lost)[:5]}"
        counter = states[0]["counters"][name]
        # Every acknowledged write incremented once; a write durable but not yet acknowledged at the
        # kill may count too.
        assert counter >= len(node.acked), (name, counter, len(node.acked))
    assert acked_before_kill <= n4.acked
    # The restarted n4 replayed its durable log: nothing it acknowledged before the kill is missing.
    assert {f"n4:{i}" for i in acked_before_kill} <= final_ids
