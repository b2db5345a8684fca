"""Watch streams cannot grow the node: clients that stop reading (a frozen process, so not even its gRPC
library reads) are cut off with RESOURCE_EXHAUSTED and the last position sent, while the node's memory
stays flat and other watchers are served; streams over the node's and the caller's caps are refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from drsdtp.api.services.watch import POSITION_KEY
from drsdtp.client import connect
from drsdtp.config import Address, NodeConfig, parse_config
from drsdtp.metrics import read_rss_bytes
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.gossip.support import eventually

ROOT = pathlib.Path(__file__).parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# What one stalled stream may hold in the node: a page of 512 twin ids, one message, gRPC's call state.
PER_STREAM_BYTES = 64 << 10
ALLOCATOR_SLACK = 24 << 20


def watch_config(tmp: pathlib.Path, **limits: object) -> NodeConfig:
    return parse_config(
        {
            "node_id": "watch-1",
            "data_dir": str(tmp),
            "history": {"enabled": False},
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "limits": limits,
        }
    )


async def fill(node: Node, twins: int, fields: int, value_bytes: int) -> None:
    """``twins`` twins of ``fields`` text fields each, durable and announced like any local write."""
    for start in range(0, twins, 500):
        names = [f"twin-{i:06d}" for i in range(start, min(twins, start + 500))]
        values: dict[str, float | int | bool | str | bytes] = {
            f"f{k}": "x" * value_bytes for k in range(fields)
        }
        await node.commit_all([(node.store.set_many(t, values), [t]) for t in names], "local")


@contextlib.asynccontextmanager
async def watch_client(port: int, streams: int, *flags: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``tests/daemon/watch_client.py``: opens the streams, then freezes itself (unless --no-freeze)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.daemon.watch_client", str(port), str(streams), *flags,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def json_line(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line, "the watch client exited early"
    result: dict[str, object] = json.loads(line)
    return result


# One change a message (v1 readers), and up to 512 (the SDK's request: bigger messages in flight).
@pytest.mark.parametrize("max_changes", [0, 512], ids=["v1", "batched"])
async def test_never_reading_watchers_are_cut_off_while_memory_stays_bounded(
    tmp_path: pathlib.Path, max_changes: int
) -> None:
    streams = 60
    cfg = watch_config(tmp_path, api_max_watchers=64, api_max_watchers_per_caller=64, api_watch_stall_s=1.0)
    async with Node(cfg) as node:
        # 20k twins of ~700 bytes: a snapshot far larger than what flow control and socket buffers let
        # through to a client that does not read, and a twin listing (~1.4 MB) each stream used to hold.
        await fill(node, 20_000, 10, 40)
        base = read_rss_bytes()
        assert base is not None
        peak = base

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, read_rss_bytes() or 0)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        async with watch_client(node.api.port, streams, f"--max-changes={max_changes}") as frozen:
            assert await json_line(frozen) == {"opened": streams, "refused": []}
            await eventually(lambda: node.api.watchers.cut_off == streams, 60, "every frozen stream cut off")
            # The node serves on: a reading watcher gets the whole snapshot.
            channel, stub = connect(Address("127.0.0.1", node.api.port))
            async with channel:
                call = stub.Watch(api_pb2.WatchRequest(prefix="twin-0199"))
                got = [(await call.read()).twin.twin_id for _ in range(100)]
                call.cancel()
            assert got == [f"twin-0199{i:02d}" for i in range(100)]
            sampler.cancel()
            growth = peak - base
            bound = streams * PER_STREAM_BYTES + ALLOCATOR_SLACK
            assert growth < bound, f"RSS grew {growth >> 20} MiB with {streams} stalled streams"
            # Thawed, the client reads what was sent, then the reason and the last position.
            assert frozen.pid is not None
            os.kill(frozen.pid, signal.SIGCONT)
            results = [await json_line(frozen) for _ in range(streams)]
        for r in results:
            assert r["code"] == "RESOURCE_EXHAUSTED", r
            assert "limits.api_watch_stall_s" in str(r["details"]) and "not reading" in str(r["details"])
            position = r["trailing"][POSITION_KEY]  # type: ignore[index]
            assert position.startswith("snapshot:twin-") and position in str(r["details"])
            # Everything up to the position was sent; the write that was cut off may still arrive after it.
            assert position.removeprefix("snapshot:") in r["last_two"], r  # type: ignore[operator]
        await eventually(lambda: node.api.watchers.open == 0, 30, "the cut streams' slots given back")


async def test_watch_streams_over_the_node_cap_are_refused(tmp_path: pathlib.Path) -> None:
    cfg = watch_config(tmp_path, api_max_watchers=3, api_max_watchers_per_caller=3)
    async with Node(cfg) as node:
        await fill(node, 3, 1, 4)
        async with watch_client(node.api.port, 5, "--channels", "5") as client:
            assert await json_line(client) == {
                "opened": 3,
                "refused": ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"],
            }
            assert node.api.watchers.refused == {"node": 2}
            channel, stub = connect(Address("127.0.0.1", node.api.port))
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Watch(api_pb2.WatchRequest()).read()
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "too many Watch streams on this node (3 open" in str(refused.value.details())
                assert "limits.api_max_watchers = 3" in str(refused.value.details())
                # Unary requests are not affected by the Watch cap.
                assert (await stub.Status(api_pb2.StatusRequest())).node_id == "watch-1"
        # The frozen client was killed: its connection closed and its slots came back.
        await eventually(lambda: node.api.watchers.open == 0, 30, "slots of a killed client given back")
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            first = await stub.Watch(api_pb2.WatchRequest()).read()
            assert first.origin == "snapshot"


async def test_watch_streams_over_the_caller_cap_are_refused(tmp_path: pathlib.Path) -> None:
    cfg = watch_config(tmp_path, api_max_watchers=10, api_max_watchers_per_caller=2)
    async with Node(cfg) as node:
        await fill(node, 3, 1, 4)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            calls = [stub.Watch(api_pb2.WatchRequest()) for _ in range(2)]
            for call in calls:
                assert (await call.read()).origin == "snapshot"
            # Another connection from the same address is the same caller.
            other, other_stub = connect(Address("127.0.0.1", node.api.port))
            async with other:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await other_stub.Watch(api_pb2.WatchRequest()).read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too many Watch streams from ipv4:127.0.0.1 (2 open" in str(refused.value.details())
            assert node.api.watchers.refused == {"caller": 1}
            calls[0].cancel()
            await eventually(lambda: node.api.watchers.open == 1, 30, "a cancelled stream's slot")
            assert (await stub.Watch(api_pb2.WatchRequest()).read()).origin == "snapshot"
