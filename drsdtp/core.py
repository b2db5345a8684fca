"""The Pythonic face of the CRDT engine: the native ``Store`` plus what callers need around it.

``Store`` (from :mod:`drsdtp._core`) does the real work in Rust; this module adds stable replica ids derived
from node names, a batch writer that turns names into interned ids once, so the ingest hot path is one
native call per batch with numpy arrays, and named intents for reading desired (multi-value) fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from drsdtp._core import FORMAT_VERSION, Store, decode_state, join, numeric_entries
from drsdtp.errors import DrsdtpError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

    from drsdtp._core import Value
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "BatchWriter",
    "Intent",
    "MergedReadings",
    "Store",
    "decode_state",
    "intents",
    "join",
    "merge_with_readings",
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


class MergedReadings(NamedTuple):
    """The readings (numeric registers, bookkeeping and quality scores left out) of merged peer deltas that
    changed the store, as interned ids: what history and intelligence learn from a peer."""

    twin_ids: NDArray[np.uint32]
    field_ids: NDArray[np.uint32]
    values: NDArray[np.float64]
    stamps: NDArray[np.uint64]  # HLC: source ms << 16 | logical


def merge_with_readings(
    store: Store, deltas: Sequence[bytes]
) -> tuple[list[bool | DrsdtpError], list[str], MergedReadings]:
    """``store.merge_many(deltas)`` plus the readings of those deltas that changed the store, taken from the
    same native decode (one per delta for the store, the history and the intelligence)."""
    outcomes, changed, (index, twins, fields, values, stamps) = store.merge_many_readings(deltas)
    took = np.fromiter((o is True for o in outcomes), np.bool_, len(outcomes))
    keep = took[index] if len(index) else np.zeros(0, np.bool_)
    return outcomes, changed, MergedReadings(twins[keep], fields[keep], values[keep], stamps[keep])


# A field's desired value lives in the multi-value register of the field of this name plus the suffix.
DESIRED_SUFFIX = ".desired"


def intents(store: Store, twin: str, field: str) -> list[Intent]:
    """A desired field's values in write order (the last is the newest): one normally, several while
    concurrent writes conflict, none after a clear or if the field is not a desired one."""
    return [Intent(*i) for i in store.desired(twin, field) or []]


class BatchWriter:
    """Writes readings given by name: one native call per batch, which interns the names in Rust. Names
    equal to the previous batch's (a poller's fixed lists) cost one list comparison; otherwise a name that
    is the same string object as at its place in the previous batch is not even looked up."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def twin_ids(self, names: Sequence[str]) -> NDArray[np.uint32]:
        """Interned ids of twin names."""
        return self._store.intern_twins(_seq(names))

    def field_ids(self, names: Sequence[str]) -> NDArray[np.uint32]:
        """Interned ids of field names."""
        return self._store.intern_fields(_seq(names))

    def write(
        self,
        twins: Sequence[str],
        fields: Sequence[str],
        values: ArrayLike,
        source_ms: ArrayLike | None = None,
    ) -> bytes:
        """One batch of numeric readings; ``source_ms`` 0 (or omitted) stamps with the node's clock."""
        vals = np.ascontiguousarray(values, dtype=np.float64)
        src = None if source_ms is None else np.ascontiguousarray(source_ms, np.int64)
        return self._store.write_named(_seq(twins), _seq(fields), vals, src)


def _seq(names: Sequence[str]) -> list[str] | tuple[str, ...]:
    # The native side takes a list or tuple; anything else (a numpy array of str, a generator) is copied.
    return names if isinstance(names, (list, tuple)) else list(names)
