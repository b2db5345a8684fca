"""Readings in a peer's delta become one reading batch; bookkeeping and quality scores stay out."""

from __future__ import annotations

import numpy as np

from drsdtp.adapters.base import ReadingBatch
from drsdtp.core import BatchWriter, Store
from drsdtp.node.peer_readings import PeerReadings

T0 = 1_700_000_000_000


def test_a_peer_delta_becomes_a_batch_with_source_times() -> None:
    origin, replica = Store(1), Store(2)
    origin.set_manual_time(T0)
    delta = BatchWriter(origin).write(
        ["pump-1", "pump-1", "pump-1"],
        ["flow", "head", "flow.q"],
        np.array([12.5, 31.0, 0.9]),
        np.array([T0 - 7, T0 - 3, T0 - 1]),
    )
    replica.merge(delta)
    feed = PeerReadings(replica, 1 << 20)
    seen: list[ReadingBatch] = []
    feed.observers.append(seen.append)
    feed.observe(delta)
    feed.observe(origin.set_many("_members", {"edge-a": 1.0}))  # the node's own bookkeeping: no reading
    (batch,) = seen
    names = [
        (replica.twin_name(int(t)), replica.field_name(int(f)))
        for t, f in zip(batch.twin_ids, batch.field_ids, strict=True)
    ]
    assert names == [("pump-1", "flow"), ("pump-1", "head")]
    assert batch.values.tolist() == [12.5, 31.0] and batch.source_ms.tolist() == [T0 - 7, T0 - 3]
    assert feed.readings == 2 and feed.failures == 0


def test_bad_bytes_are_counted_and_never_raise() -> None:
    feed = PeerReadings(Store(2), 1 << 20)
    feed.observers.append(lambda batch: None)
    feed.observe(b"\xff\x00 not a delta")
    assert feed.failures == 1 and feed.readings == 0
