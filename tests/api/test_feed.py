"""The change feed: one shared log, each watcher only a cursor; changes coalesce per twin, in order."""

from __future__ import annotations

import asyncio

from drsdtp._core import Store
from drsdtp.api.feed import ChangeFeed


async def test_a_subscription_sees_later_changes_oldest_first_each_twin_once() -> None:
    feed = ChangeFeed()
    feed.publish(["before"], "local")
    sub = feed.subscribe()
    feed.publish(["a", "b"], "ingest")
    feed.publish(["a"], "peer")  # supersedes the first change of a: a moves behind b
    feed.publish(["c"], "local")
    batch = await sub.next_batch(10)
    assert [(c.twin, c.origin) for c in batch] == [("b", "ingest"), ("a", "peer"), ("c", "local")]
    assert [c.seq for c in batch] == [3, 4, 5]  # each change's number; the first change of a was superseded


async def test_batches_are_bounded_and_continue_where_they_stopped() -> None:
    feed = ChangeFeed()
    sub = feed.subscribe()
    feed.publish([f"t{i}" for i in range(7)], "ingest")
    first = await sub.next_batch(3)
    second = await sub.next_batch(3)
    third = await sub.next_batch(3)
    assert [c.twin for c in first + second + third] == [f"t{i}" for i in range(7)]
    assert [len(first), len(second), len(third)] == [3, 3, 1]


async def test_a_waiting_subscription_wakes_on_publish_and_others_are_independent() -> None:
    feed = ChangeFeed()
    reader, idle = feed.subscribe(), feed.subscribe()
    waiting = asyncio.create_task(reader.next_batch(10))
    await asyncio.sleep(0)
    assert not waiting.done()
    feed.publish([], "ingest")  # nothing changed: no wake-up
    await asyncio.sleep(0)
    assert not waiting.done()
    feed.publish(["x"], "ingest")
    assert [(c.twin, c.origin) for c in await asyncio.wait_for(waiting, 5)] == [("x", "ingest")]
    # The idle subscription was not consumed by the reader.
    feed.publish(["y"], "peer")
    assert [(c.twin, c.origin) for c in await idle.next_batch(10)] == [("x", "ingest"), ("y", "peer")]


async def test_the_log_stays_bounded_by_the_twins_however_far_a_watcher_falls_behind() -> None:
    feed = ChangeFeed()
    never_read = [feed.subscribe() for _ in range(100)]
    for round_ in range(200):
        feed.publish([f"t{i}" for i in range(50)], "ingest")
        assert len(feed) <= 2 * 50 + 1024 + 50, f"log grew to {len(feed)} in round {round_}"
    # A subscription that never read still gets every twin once, in the order of their latest change.
    batch = await never_read[0].next_batch(1000)
    assert [(c.twin, c.origin) for c in batch] == [(f"t{i}", "ingest") for i in range(50)]
    assert never_read[0].cursor == feed.seq == 200 * 50


def test_a_feed_on_the_store_keeps_twins_by_id_and_reads_back_their_names() -> None:
    store = Store(1)
    feed = ChangeFeed(names=store)
    feed.publish(["b", "a"], "local")
    feed.publish(["b"], "peer")
    changes, cursor = feed.read(0, 10)
    assert [(c.twin, c.origin) for c in changes] == [("a", "local"), ("b", "peer")]
    assert cursor == feed.seq
    # The names live in the store's interner only; the feed holds numbers.
    assert store.intern_twin("a") == 1
