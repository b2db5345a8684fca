"""Watches of one client that ask the same share one stream (the node counts one against its per-caller
limit), and one of them that stops reading is cut loose without holding up the others: it hands out what it
was queued, then resumes alone after its cursor (or, without reconnect, raises saying so)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp.client import AsyncClient, ResourceExhaustedError, Watch
from drsdtp.client.watch import PENDING
from tests.api.nodes import ApiNode
from tests.client.conftest import started


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node that admits two Watch streams per caller."""
    node: ApiNode = started(
        Path(tmp_path_factory.mktemp("share")), "share", "[limits]\napi_max_watchers_per_caller = 2\n"
    )
    try:
        yield f"127.0.0.1:{node.api_port}"
    finally:
        node.stop()


async def test_watches_asking_the_same_share_one_stream(limited: str) -> None:
    async with AsyncClient(limited, timeout=10) as client:
        await client.create("room-share", model="room", values={"temp_1": 1.0})
        shared = [client.watch(["room-share"], fields=["temp_1"]) for _ in range(3)]
        alone = client.watch(["room-share"], fields=["temp_1"], share=False)
        firsts = await asyncio.gather(*(anext(w) for w in [*shared, alone]))
        assert [(c.origin, c.twin["temp_1"]) for c in firsts] == [("snapshot", 1.0)] * 4
        # The node's two streams are taken: the shared one and ``alone``'s.
        refused = client.watch(["room-share"], share=False, reconnect=False)
        with pytest.raises(ResourceExhaustedError, match="api_max_watchers_per_caller"):
            await anext(refused)
        await client.report("room-share", {"temp_1": 2.0})
        seconds = await asyncio.gather(*(anext(w) for w in shared))
        assert [(c.origin, c.twin["temp_1"]) for c in seconds] == [("local", 2.0)] * 3
        assert len({w.cursor for w in shared}) == 1
        # A watch opened after the stream's first message gets a snapshot of its own, on its own stream.
        await shared[0].aclose()  # the others still hold the shared stream
        await alone.aclose()
        late = client.watch(["room-share"], fields=["temp_1"])
        assert (await anext(late)).origin == "snapshot"
        for w in [*shared[1:], late]:
            await w.aclose()


async def test_a_watch_that_stops_reading_is_cut_loose_and_resumes_alone(target: str) -> None:
    async with AsyncClient(target, timeout=10) as client:
        await client.create("room-cut", model="room", values={"temp_1": 0.0})
        fast, slow = (client.watch(["room-cut"], fields=["temp_1"]) for _ in range(2))
        fast_once, slow_once = (
            client.watch(["room-cut"], fields=["temp_1"], reconnect=False) for _ in range(2)
        )
        for w in (fast, slow, fast_once, slow_once):
            assert (await anext(w)).origin == "snapshot"
        writes = PENDING + 8
        for value in range(1, writes + 1):
            # Each change read by the fast watches before the next is written: a message of its own.
            await client.report("room-cut", {"temp_1": float(value)})
            for w in (fast, fast_once):
                assert (await asyncio.wait_for(anext(w), 10)).twin["temp_1"] == float(value)
        assert fast.reconnects == 0 and fast_once.reconnects == 0
        # The slow watch hands out what was queued for it, in order, then resumes after its cursor: the
        # twin's latest state, nothing skipped between.
        queued = [(await anext(slow)).twin["temp_1"] for _ in range(PENDING)]
        assert queued == [float(v) for v in range(1, PENDING + 1)]
        resumed = await asyncio.wait_for(anext(slow), 10)
        assert (resumed.origin, resumed.twin["temp_1"]) == ("local", float(writes))
        assert slow.reconnects == 1 and slow.cursor == resumed.cursor == fast.cursor
        # Without reconnect it says what happened and where to resume.
        queued = [(await anext(slow_once)).twin["temp_1"] for _ in range(PENDING)]
        assert queued == [float(v) for v in range(1, PENDING + 1)]
        cursor = slow_once.cursor
        with pytest.raises(ResourceExhaustedError, match=f"cut loose; resume after cursor {cursor}"):
            await anext(slow_once)
        with pytest.raises(StopAsyncIteration):
            await anext(slow_once)
        # The fast ones go on.
        await client.report("room-cut", {"temp_1": -1.0})
        for w in (fast, fast_once, slow):
            assert (await asyncio.wait_for(anext(w), 10)).twin["temp_1"] == -1.0
        watches: list[Watch] = [fast, slow, fast_once, slow_once]
        for w in watches:
            await w.aclose()
