"""How the Watch service groups changes into messages: a stream that fell behind catches up in one message,
each twin once at its latest state, never losing or reordering a change (the service on a real store and
feed, each stream writing through its own coroutine as a face does)."""

from __future__ import annotations

import asyncio

from drsdtp._core import Store
from drsdtp.api.convert import twin_message
from drsdtp.api.feed import ChangeFeed
from drsdtp.api.services.watch import WatchService
from drsdtp.api.watch_limits import WatchGate, WatchLimits
from drsdtp.wire.v1 import api_pb2

TWINS = [f"t{i}" for i in range(5)]


class Reader:
    """One stream's messages, decoded; while ``hold`` is clear its write is not taken (a slow client)."""

    def __init__(self) -> None:
        self.messages: list[list[tuple[str, float, int]]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.got = asyncio.Event()

    async def write(self, data: bytes, cursor: int) -> None:
        message = api_pb2.TwinChange.FromString(data)
        self.messages.append(
            [(c.twin.twin_id, c.twin.fields[0].f64, c.cursor) for c in list(message.changes) or [message]]
        )
        self.got.set()
        await self.hold.wait()

    async def next(self) -> list[tuple[str, float, int]]:
        await asyncio.wait_for(self.got.wait(), 10)
        self.got.clear()
        return self.messages[-1]


def step(store: Store, feed: ChangeFeed, value: float) -> None:
    for twin in TWINS:
        store.set_many(twin, {"v": value})
    feed.publish(TWINS, "local")


async def test_a_stream_that_fell_behind_gets_what_it_missed_in_one_message_each_twin_once() -> None:
    store = Store(1)
    feed = ChangeFeed(names=store)
    step(store, feed, 0.0)
    service = WatchService(store, feed, WatchGate(WatchLimits()), twin_message)
    request = api_pb2.WatchRequest(prefix="t", fields=["v"], max_changes=512, resume_after=feed.seq)
    fast, slow = Reader(), Reader()
    slow.hold.clear()
    streams = [asyncio.create_task(service.stream(request, "me", r.write, "proto")) for r in (fast, slow)]
    try:
        await asyncio.sleep(0)
        step(store, feed, 1.0)
        first = await fast.next()
        assert first == await slow.next()  # one message of the step, built once for both
        assert [(t, v) for t, v, _ in first] == [(t, 1.0) for t in TWINS]
        for value in (2.0, 3.0):  # the fast stream reads each step; the slow one's write is still pending
            step(store, feed, value)
            assert [(t, v) for t, v, _ in await fast.next()] == [(t, value) for t in TWINS]
        slow.hold.set()
        caught_up = await slow.next()
        # Both later steps in one message: each twin once, at its latest state, in the feed's order.
        assert [(t, v) for t, v, _ in caught_up] == [(t, 3.0) for t in TWINS]
        assert [c for _, _, c in caught_up] == sorted(c for _, _, c in caught_up)
        assert caught_up[-1][2] == feed.seq
        assert (len(fast.messages), len(slow.messages)) == (3, 2)
        # And on from there as every stream is.
        step(store, feed, 4.0)
        assert await slow.next() == await fast.next()
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
