"""Node-wide caps on the twins and fields ingestion may create, checked against what the store holds.

``limits.max_twins`` and ``limits.max_fields`` bound the store, so they are counted from the store
(``Store.stats()``: every twin and every field slot it holds, replicated ones and the node's own metadata
fields such as ``_scope`` included), not from a counter in memory: after a restart the count is what is on
disk, and a cap reached stays reached. A reading whose twin or field does not exist yet is refused once the
cap is reached (counted by the pipeline as "twin cap reached" / "field cap reached", logged at most every
30 s); a key the store already holds is never refused. Only local creation is capped: state replicated from
peers is merged whatever the count, or replicas would never converge.

Between a key being admitted and its reading reaching the store, the key is reserved here, so a batch of
many new keys cannot slip past the cap together. ``Store.stats()`` walks every twin, so it is read at most
every ``refresh_s`` (and again just before refusing): replicated twins that arrived in between are counted
a little late. A reserved key whose readings never reach the store (all of them invalid) keeps its place
until the next restart: the cap errs on the side of refusing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from drsdtp.ingest.ratelog import RateLimitedLog

__all__ = ["FIELD_CAP", "TWIN_CAP", "KeyCaps", "StoreView"]

log = logging.getLogger(__name__)

TWIN_CAP = "twin cap reached"
FIELD_CAP = "field cap reached"


class StoreView(Protocol):
    """What the caps read (``drsdtp._core.Store`` fits)."""

    def __contains__(self, twin: str, /) -> bool: ...

    def get(self, twin: str, field: str) -> object | None: ...

    def stats(self) -> Mapping[str, int]: ...


class KeyCaps:
    def __init__(
        self,
        store: StoreView,
        max_twins: int,
        max_fields: int,
        *,
        meta_fields: Callable[[str], int] = lambda twin: 0,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``meta_fields(twin)``: fields the node adds to a twin it creates (its model and scope)."""
        self.store = store
        self.max_twins = max_twins
        self.max_fields = max_fields
        self._meta_fields = meta_fields
        self._refresh_s = refresh_s
        self._clock = clock
        self._twins = self._fields = 0  # the store's counts at the last refresh
        self._new_twins: dict[str, int] = {}  # admitted, not yet in the store -> fields reserved with them
        self._new_fields: set[tuple[str, str]] = set()
        self._refreshed = -float("inf")  # counted at the first admission, when the node is up
        self._log = RateLimitedLog(log, "ingest caps")

    @property
    def twins(self) -> int:
        """Twins counted against the cap: held plus reserved."""
        return self._twins + len(self._new_twins)

    @property
    def fields(self) -> int:
        return self._fields + len(self._new_fields) + sum(self._new_twins.values())

    def refresh(self) -> None:
        """Recount from the store; reservations that reached it are no longer counted twice."""
        stats = self.store.stats()
        self._twins, self._fields = int(stats["twins"]), int(stats["fields"])
        store = self.store
        self._new_twins = {t: n for t, n in self._new_twins.items() if t not in store}
        self._new_fields = {(t, f) for t, f in self._new_fields if store.get(t, f) is None}
        self._refreshed = self._clock()

    def admit(self, twin: str, field: str) -> str | None:
        """None if a reading may create (or update) ``twin``/``field``; else the reason it may not."""
        store = self.store
        twin_exists = twin in store or twin in self._new_twins
        if twin_exists and ((twin, field) in self._new_fields or store.get(twin, field) is not None):
            return None  # the key exists: never refused
        now = self._clock()
        if now - self._refreshed >= self._refresh_s:
            self.refresh()
        refused = self._over(twin_exists, twin)
        if refused is not None and now - self._refreshed > 0.1 * self._refresh_s:
            self.refresh()  # before refusing, make sure the reservations in the way are still real
            refused = self._over(twin_exists, twin)
        if refused == TWIN_CAP:
            self._log.warn(
                refused, "refusing new twins: %d held (limits.max_twins = %d)", self.twins, self.max_twins
            )
        elif refused == FIELD_CAP:
            self._log.warn(
                refused, "refusing new fields: %d held (limits.max_fields = %d)", self.fields, self.max_fields
            )
        if refused is not None:
            return refused
        if not twin_exists:
            self._new_twins[twin] = self._meta_fields(twin)
        self._new_fields.add((twin, field))
        return None

    def release(self, twin: str, field: str) -> None:
        """Give back what :meth:`admit` reserved for a key that will not be written after all."""
        self._new_fields.discard((twin, field))
        if twin in self._new_twins and not any(t == twin for t, _ in self._new_fields):
            del self._new_twins[twin]

    def _over(self, twin_exists: bool, twin: str) -> str | None:
        if not twin_exists and self.twins + 1 > self.max_twins:
            return TWIN_CAP
        need = 1 if twin_exists else 1 + self._meta_fields(twin)
        if self.fields + need > self.max_fields:
            return FIELD_CAP
        return None
