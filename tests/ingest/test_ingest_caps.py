"""Caps on the twins and fields ingestion may create, against a real store (the engine's)."""

from __future__ import annotations

import numpy as np

from drsdtp._core import Store
from drsdtp.adapters.base import ReadingBatch, SourceBatch
from drsdtp.core import BatchWriter, replica_id
from drsdtp.ingest.caps import FIELD_CAP, TWIN_CAP, KeyCaps
from drsdtp.ingest.options import IngestOptions
from drsdtp.ingest.pipeline import Pipeline, wall_ms


class StoreSink:
    """Writes what it is given into the store, as the node's sink does."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self, batch: ReadingBatch) -> None:
        b = batch.select(batch.has_value())
        self.store.write_batch(b.twin_ids, b.field_ids, b.values, b.source_ms)


def readings(*keys: tuple[str, str]) -> SourceBatch:
    now = wall_ms()  # the store stamps readings with their time: it must not be ahead of the clock
    out = SourceBatch(now)
    for i, (twin, field) in enumerate(keys):
        out.add(twin, field, float(i), now)
    return out


def pipeline(store: Store, caps: KeyCaps, max_keys: int = 1000) -> Pipeline:
    return Pipeline("a", IngestOptions(max_keys=max_keys), StoreSink(store), store, caps=caps)


async def test_one_batch_of_new_twins_cannot_slip_past_the_cap() -> None:
    store = Store(replica_id("n"))
    p = pipeline(store, KeyCaps(store, max_twins=3, max_fields=100))
    await p.apply_direct(readings(*((f"t{i}", "v") for i in range(10))))
    assert sorted(store.twins()) == ["t0", "t1", "t2"]
    assert p.stats.invalid_by_reason == {TWIN_CAP: 7}
    # Existing twins keep updating; a new field on one of them is still allowed (the field cap is far).
    await p.apply_direct(readings(("t0", "v"), ("t1", "w"), ("t9", "v")))
    assert store.get("t1", "w") == 1.0
    assert p.stats.invalid_by_reason == {TWIN_CAP: 8}


async def test_the_field_cap_counts_what_the_store_holds_including_metadata() -> None:
    store = Store(replica_id("n"))
    store.set("t0", "_scope", "default")  # what the node adds to every twin it creates
    caps = KeyCaps(store, max_twins=100, max_fields=6, meta_fields=lambda twin: 1)
    p = pipeline(store, caps)
    await p.apply_direct(readings(("t0", "a"), ("t0", "b"), ("t1", "a"), ("t1", "b"), ("t2", "a")))
    # t0: _scope + a + b = 3; t1: (its _scope reserved) + a = 5; t1.b would be the 6th; t2 needs 2.
    assert (caps.fields, p.stats.invalid_by_reason) == (6, {FIELD_CAP: 1})
    assert store.get("t1", "b") is not None and store.get("t2", "a") is None


async def test_state_from_peers_counts_but_is_never_refused() -> None:
    peer = Store(replica_id("peer"))
    delta = BatchWriter(peer).write([f"p{i}" for i in range(5)], ["v"] * 5, np.arange(5.0))
    store = Store(replica_id("n"))
    store.merge(delta)  # replicated: more twins than the cap allows
    caps = KeyCaps(store, max_twins=3, max_fields=100)
    p = pipeline(store, caps)
    await p.apply_direct(readings(("p4", "v"), ("p0", "w"), ("new", "v")))
    assert store.get("p4", "v") == 0.0 and store.get("p0", "w") == 1.0  # held keys, and their twins, flow
    assert "new" not in store
    assert p.stats.invalid_by_reason == {TWIN_CAP: 1}


async def test_a_new_caps_object_on_the_same_store_starts_from_the_count_on_disk() -> None:
    store = Store(replica_id("n"))
    first = pipeline(store, KeyCaps(store, max_twins=2, max_fields=100))
    await first.apply_direct(readings(("a", "v"), ("b", "v")))
    # What a restart does: the store recovered, new caps and a new (empty) key table.
    second = pipeline(store, KeyCaps(store, max_twins=2, max_fields=100), max_keys=1)
    await second.apply_direct(readings(("c", "v"), ("a", "v"), ("b", "v")))
    assert sorted(store.twins()) == ["a", "b"]
    assert second.stats.invalid_by_reason == {TWIN_CAP: 1}
    assert second.stats.applied == 2


def test_reservations_are_released_and_recounted() -> None:
    store = Store(replica_id("n"))
    now = [0.0]
    caps = KeyCaps(store, max_twins=2, max_fields=100, clock=lambda: now[0])
    assert caps.admit("a", "v") is None
    assert caps.admit("b", "v") is None
    assert caps.admit("c", "v") == TWIN_CAP  # a and b are reserved, not yet written
    caps.release("b", "v")  # b's name could not be interned after all
    assert caps.twins == 1
    store.set("a", "v", 1.0)
    now[0] += 5
    caps.refresh()
    assert (caps.twins, caps.fields) == (1, 1)  # a counted once: from the store, no longer reserved
    assert caps.admit("c", "v") is None
    assert caps.admit("a", "v") is None  # held: admitted without counting again
    assert caps.twins == 2
