"""The Pythonic face of the CRDT engine: the native ``Store`` plus what callers need around it.

``Store`` (from :mod:`drsdtp._core`) does the real work in Rust; this module adds stable replica ids derived
from node names, a batch writer that turns names into interned ids once, so the ingest hot path is one
native call per batch with numpy arrays, and named intents for reading desired (multi-value) fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drsdtp._core import FORMAT_VERSION, Store, decode_state, join, numeric_entries

if TYPE_CHECKING:
    from drsdtp._core import Value

__all__ = [
    "FORMAT_VERSION",
    "BatchWriter",
    "Intent",
    "Store",
    "decode_state",
    "intents",
    "join",
    "numeric_entries",
    "replica_id",
]


def replica_id(node_id: str) -> int:
    """A stable 63-bit replica id for a node name (the LWW tie-break order between writers)."""
    digest = hashlib.blake2b(node_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1 or 1


class Intent(NamedTuple):
    """One current value of a desired field and the write that made it (``Store.desired`` gives plain
    tuples in this order, as ``Store.entry`` does for a register)."""

    value: Value
    stamp: int  # HLC: physical ms << 16 | logical
    writer: int  # replica id of the writer
    counter: int  # the write's number among that writer's writes to the field

    @property
    def ms(self) -> int:
        """Physical milliseconds of the write."""
        return self.stamp >> 16


def intents(store: Store, twin: str, field: str) -> list[Intent]:
    """A desired field's values in write order (the last is the newest): one normally, several while
    concurrent writes conflict, none after a clear or if the field is not a desired one."""
    return [Intent(*i) for i in store.desired(twin, field) or []]


class BatchWriter:
    """Writes readings given by name through ``Store.write_batch``, interning each name once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._twins: dict[str, int] = {}
        self._fields: dict[str, int] = {}

    def twin_ids(self, names: Sequence[str]) -> NDArray[np.uint32]:
        """Interned ids of twin names."""
        return _ids(names, self._twins, self._store.intern_twin)

    def field_ids(self, names: Sequence[str]) -> NDArray[np.uint32]:
        """Interned ids of field names."""
        return _ids(names, self._fields, self._store.intern_field)

    def write(
        self,
        twins: Sequence[str],
        fields: Sequence[str],
        values: ArrayLike,
        source_ms: ArrayLike | None = None,
    ) -> bytes:
        """One batch of numeric readings; ``source_ms`` 0 (or omitted) stamps with the node's clock."""
        vals = np.ascontiguousarray(values, dtype=np.float64)
        src = (
            np.zeros(len(vals), np.int64) if source_ms is None else np.ascontiguousarray(source_ms, np.int64)
        )
        return self._store.write_batch(self.twin_ids(twins), self.field_ids(fields), vals, src)


def _ids(names: Sequence[str], cache: dict[str, int], intern: Callable[[str], int]) -> NDArray[np.uint32]:
    out = np.empty(len(names), np.uint32)
    for i, name in enumerate(names):
        got = cache.get(name)
        out[i] = got if got is not None else cache.setdefault(name, intern(name))
    return out
