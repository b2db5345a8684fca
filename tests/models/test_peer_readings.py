"""Readings in a peer's delta become one reading batch, taken from the merge's own decode; bookkeeping and
quality scores stay out, and a delta that changed nothing (or was refused) gives none."""

from __future__ import annotations

import numpy as np

from drsdtp.adapters.base import ReadingBatch
from drsdtp.core import BatchWriter, Store, merge_with_readings
from drsdtp.errors import DecodeError
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
    members = origin.set_many("_members", {"edge-a": 1.0})  # the node's own bookkeeping: no reading
    # The second copy of the delta changes nothing: its readings are not new.
    outcomes, changed, merged = merge_with_readings(replica, [delta, members, delta])
    assert outcomes == [True, True, False] and changed == ["_members", "pump-1"]
    feed = PeerReadings(replica)
    seen: list[ReadingBatch] = []
    feed.observers.append(seen.append)
    feed.observe_merged(merged)
    (batch,) = seen
    names = [
        (replica.twin_name(int(t)), replica.field_name(int(f)))
        for t, f in zip(batch.twin_ids, batch.field_ids, strict=True)
    ]
    assert names == [("pump-1", "flow"), ("pump-1", "head")]
    assert batch.values.tolist() == [12.5, 31.0] and batch.source_ms.tolist() == [T0 - 7, T0 - 3]
    assert feed.readings == 2 and feed.failures == 0


def test_refused_bytes_give_no_readings_and_an_observer_failure_is_counted() -> None:
    replica = Store(2)
    outcomes, _, merged = merge_with_readings(replica, [b"\xff\x00 not a delta"])
    assert isinstance(outcomes[0], DecodeError) and len(merged.values) == 0
    origin = Store(1)
    _, _, merged = merge_with_readings(replica, [origin.set_many("pump-1", {"flow": 1.0})])
    feed = PeerReadings(replica)

    def broken(batch: ReadingBatch) -> None:
        raise ValueError("observer failed")

    feed.observers.append(broken)
    feed.observe_merged(merged)  # never raises: the peer stream must not stall on it
    assert feed.failures == 1 and feed.readings == 0
