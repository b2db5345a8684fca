"""History's journal in the node's write-ahead log: every acknowledged reading reaches history.

History keeps its own segments and fsyncs them about once a second, while a reading is acknowledged (MQTT
PUBACK) as soon as the node's write-ahead log holds it. To close that gap each batch of readings is also
appended to the node's log, as an auxiliary record beside the batch's twin delta, in the same group commit
(so no extra fsync). After a crash the node hands those records back; history re-appends the batches it
does not hold yet, which it tells by the batch's journal number (:attr:`HistoryStore.journal_mark`). Before a
log snapshot truncates the log, history flushes, so no journalled batch is lost with the truncated log.

Record payload (little endian)::

    magic "DTHJ" | version u8 | journal u64 | rows u32 | twins u32 | fields u32
    names    (len u16 | utf-8)[twins + fields]
    columns  twin u32[rows] | field u32[rows] | ts i64[rows] | value f64[rows]

Names, not the engine's intern ids: those are numbered afresh whenever a store is rebuilt from its log.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drsdtp.errors import DecodeError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from drsdtp.lazy import numpy as np

__all__ = ["JournalBatch", "Layout", "decode", "encode", "encode_with"]

MAGIC = b"DTHJ"
VERSION = 1
_HEAD = struct.Struct("<4sBQIII")
_NAME = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class JournalBatch:
    journal: int
    twins: list[str]  # one name per row
    fields: list[str]
    ts: NDArray[np.int64]
    value: NDArray[np.float64]


def encode(
    journal: int,
    twin_names: list[str],
    field_names: list[str],
    twin_index: NDArray[np.integer],
    field_index: NDArray[np.integer],
    ts: NDArray[np.int64],
    value: NDArray[np.float64],
) -> bytes:
    """One record: row ``i`` is ``twin_names[twin_index[i]]`` / ``field_names[field_index[i]]``."""
    return encode_with(journal, Layout.of(twin_names, field_names, twin_index, field_index), ts, value)


@dataclass(frozen=True, slots=True)
class Layout:
    """A record's names and index columns, encoded: the same for every batch of a poller, which sends the
    same ids in the same order (kept by the node's history service while they repeat)."""

    twins: int
    fields: int
    names: bytes
    index: bytes

    @classmethod
    def of(
        cls,
        twin_names: list[str],
        field_names: list[str],
        twin_index: NDArray[np.integer],
        field_index: NDArray[np.integer],
    ) -> Layout:
        parts = []
        for name in (*twin_names, *field_names):
            raw = name.encode()
            parts.append(_NAME.pack(len(raw)))
            parts.append(raw)
        index = np.asarray(twin_index, "<u4").tobytes() + np.asarray(field_index, "<u4").tobytes()
        return cls(len(twin_names), len(field_names), b"".join(parts), index)


def encode_with(journal: int, layout: Layout, ts: NDArray[np.int64], value: NDArray[np.float64]) -> bytes:
    """:func:`encode` with the names and index columns already encoded."""
    head = _HEAD.pack(MAGIC, VERSION, journal, len(ts), layout.twins, layout.fields)
    return b"".join(
        (
            head,
            layout.names,
            layout.index,
            np.asarray(ts, "<i8").tobytes(),
            np.asarray(value, "<f8").tobytes(),
        )
    )


def decode(payload: bytes) -> JournalBatch:
    """The batch in one record; :class:`DecodeError` naming what is wrong if it is not one."""
    if len(payload) < _HEAD.size:
        raise DecodeError(f"history journal record of {len(payload)} bytes is shorter than its header")
    magic, version, journal, rows, n_twins, n_fields = _HEAD.unpack_from(payload)
    if magic != MAGIC or version != VERSION:
        raise DecodeError(f"not a history journal record (magic {magic!r}, version {version})")
    at = _HEAD.size
    names: list[str] = []
    try:
        for _ in range(n_twins + n_fields):
            (size,) = _NAME.unpack_from(payload, at)
            at += _NAME.size
            if at + size > len(payload):
                raise DecodeError("history journal record: a name runs past the end")
            names.append(payload[at : at + size].decode())
            at += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"history journal record: bad name table ({exc})") from exc
    if len(payload) - at != 24 * rows:
        raise DecodeError(f"history journal record: {len(payload) - at} bytes of columns for {rows} rows")
    twin = np.frombuffer(payload, "<u4", rows, at)
    field = np.frombuffer(payload, "<u4", rows, at + 4 * rows)
    if rows and (int(twin.max()) >= n_twins or int(field.max()) >= n_fields):
        raise DecodeError("history journal record: a row names a twin or field outside its name table")
    twin_names, field_names = np.array(names[:n_twins], object), np.array(names[n_twins:], object)
    return JournalBatch(
        journal,
        twin_names[twin].tolist(),
        field_names[field].tolist(),
        np.frombuffer(payload, "<i8", rows, at + 8 * rows).astype(np.int64),
        np.frombuffer(payload, "<f8", rows, at + 16 * rows).astype(np.float64),
    )
