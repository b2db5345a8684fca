"""Readings learnt from peers: the numeric registers a peer's delta carried, as a reading batch.

Every delta a peer sends that changes this node's store is made durable and then its readings are handed
here: the replicator takes them from the merge's own decode (``drsdtp.core.merge_with_readings``: interned
ids and numpy columns, no Python step per field) and they become one :class:`ReadingBatch` (the register's
stamp is the source time the origin wrote it with) for the history and the twin intelligence, as if
ingested here. Only what replication carries reaches a replica: the latest value of each register per delta,
so a replica sees coalesced readings, not every reading the origin took.

Left out (by the engine, ``crdt_core::is_reading``): the node's own bookkeeping (twins and fields starting
with ``_``) and quality scores (``<f>.q``, the origin's verdict, read from the store by the insight service
instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from drsdtp._core import Store
from drsdtp.adapters.base import Quality, ReadingBatch
from drsdtp.core import MergedReadings
from drsdtp.errors import DrsdtpError

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["PeerReadings"]

log = logging.getLogger(__name__)

ReadingObserver = Callable[[ReadingBatch], None]


class PeerReadings:
    """Turns merged peer deltas into reading batches for ``observers`` (history, intelligence)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.observers: list[ReadingObserver] = []
        self.readings = 0
        self.failures = 0

    def observe_merged(self, merged: MergedReadings) -> None:
        """Called once the deltas ``merged`` came from are durable. Never raises: a failure here must not
        stall the peer stream (the deltas are already applied; only their way to history and intelligence
        is lost)."""
        n = len(merged.values)
        if not n:
            return
        try:
            batch = ReadingBatch(
                merged.twin_ids,
                merged.field_ids,
                merged.values,
                (merged.stamps >> np.uint64(16)).astype(np.int64),
                np.full(n, Quality.GOOD, np.uint8),
                np.zeros(n, np.bool_),
            )
            for observe in self.observers:
                observe(batch)
            self.readings += n
        except (DrsdtpError, ValueError, OverflowError) as exc:
            self.failures += 1
            log.warning("readings of a peer delta not passed on: %s", exc)
