"""Readings learnt from peers: the numeric registers a peer's delta carried, as a reading batch.

Every delta a peer sends that changes this node's store is made durable and then handed here; its numeric
LWW entries (``crdt_core::numeric_entries``) become one :class:`ReadingBatch` (the register's stamp is the
source time the origin wrote it with) for the history and the twin intelligence, as if ingested here. Only
what replication carries reaches a replica: the latest value of each register per delta, so a replica sees
coalesced readings, not every reading the origin took.

Left out: the node's own bookkeeping (twins and fields starting with ``_``) and quality scores (``<f>.q``,
the origin's verdict, read from the store by the insight service instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from drsdtp._core import Store, numeric_entries
from drsdtp.adapters.base import Quality, ReadingBatch
from drsdtp.errors import DrsdtpError

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["PeerReadings"]

log = logging.getLogger(__name__)

ReadingObserver = Callable[[ReadingBatch], None]


def _wanted(twin: str, field: str) -> bool:
    return not (twin.startswith("_") or field.startswith("_") or field.endswith(".q"))


class PeerReadings:
    """Turns merged peer deltas into reading batches for ``observers`` (history, intelligence)."""

    def __init__(self, store: Store, max_message_bytes: int) -> None:
        self.store = store
        self.max_message_bytes = max_message_bytes
        self.observers: list[ReadingObserver] = []
        self.readings = 0
        self.failures = 0

    def observe(self, delta: bytes) -> None:
        """Called once ``delta`` is merged and durable. Never raises: a failure here must not stall the peer
        stream (the delta is already applied; only its readings' way to history and intelligence is lost)."""
        try:
            batch = self._batch(delta)
            if batch is None:
                return
            for observe in self.observers:
                observe(batch)
            self.readings += len(batch)
        except (DrsdtpError, ValueError, OverflowError) as exc:
            self.failures += 1
            log.warning("readings of a peer delta not passed on: %s", exc)

    def _batch(self, delta: bytes) -> ReadingBatch | None:
        entries = [
            e for e in numeric_entries(delta, max_message_bytes=self.max_message_bytes) if _wanted(e[0], e[1])
        ]
        if not entries:
            return None
        twins, fields, values, stamps = zip(*entries, strict=True)
        store = self.store
        twin_ids = {t: store.intern_twin(t) for t in set(twins)}
        field_ids = {f: store.intern_field(f) for f in set(fields)}
        n = len(entries)
        return ReadingBatch(
            np.fromiter((twin_ids[t] for t in twins), np.uint32, n),
            np.fromiter((field_ids[f] for f in fields), np.uint32, n),
            np.asarray(values, np.float64),
            (np.asarray(stamps, np.uint64) >> np.uint64(16)).astype(np.int64),
            np.full(n, Quality.GOOD, np.uint8),
            np.zeros(n, np.bool_),
        )
