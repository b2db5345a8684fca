"""What an ingestion adapter is, what it yields, and what the pipeline hands to the core.

Data flow::

    Adapter.session() --SourceBatch (names, lists)--> Pipeline --ReadingBatch (ids, numpy)--> BatchSink.apply

An adapter knows its protocol and nothing about the store: it yields :class:`SourceBatch` objects, columnar
lists of ``(twin, field, value, source_ms, quality)`` built with plain ``list.append`` (the cheapest thing
Python can do per reading). The pipeline validates, maps names to interned ids and builds one
:class:`ReadingBatch` of numpy arrays per core call.

A reading without a value (an OPC UA Bad status, a failed Modbus register, a simulated dropout) travels
with ``quality == Quality.BAD`` and ``value = NaN``: it tells field health "the source is failing" without
pretending to be a measurement. The core refuses NaN, so sinks pass only :meth:`ReadingBatch.has_value`
rows to ``write_batch``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from drsdtp.ingest.options import IngestOptions
    from drsdtp.supervisor import Backoff

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "NO_VALUE",
    "Adapter",
    "AdapterStats",
    "BatchSink",
    "Interner",
    "Quality",
    "Reading",
    "ReadingBatch",
    "Rejected",
    "SourceBatch",
]

NO_VALUE = math.nan


class Quality(IntEnum):
    """Coarse quality, the OPC UA severity bits (Good 00, Uncertain 01, Bad 10) without the sub-codes."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Reading(NamedTuple):
    """One reading by name; convenient for tests and slow paths (adapters append columns directly)."""

    twin: str
    field: str
    value: float
    source_ms: int
    quality: Quality = Quality.GOOD


class Rejected(NamedTuple):
    """A whole protocol unit (message, line, response) the adapter could not decode: a dead letter.

    ``reason`` is one of :data:`drsdtp.adapters.payloads.REASONS`; ``detail`` says what exactly.
    ``redelivery`` is set when the protocol says the unit may have been delivered before (the MQTT DUP
    flag): only such a unit is checked against the letters already held, so a redelivered message is
    counted and stored once while a sensor that keeps sending the same garbage is counted every time.
    """

    source: str  # MQTT topic, serial port, OPC UA node, Modbus block
    received_ms: int
    reason: str
    detail: str
    payload: bytes
    redelivery: bool = False


@dataclass(slots=True, eq=False)
class SourceBatch:
    """Readings from one read of a source, as parallel lists, and the units that could not be decoded.

    ``ack`` (if set) is called once the batch's readings are applied by the sink and its ``rejects`` are
    stored as dead letters, in the order batches were yielded; MQTT uses it to send the QoS 1 PUBACK only
    after the state change.
    """

    received_ms: int
    twins: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    source_ms: list[int] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    ack: Callable[[], None] | None = None
    rejects: list[Rejected] = field(default_factory=list)

    def add(self, twin: str, field_: str, value: float, source_ms: int, quality: int = Quality.GOOD) -> None:
        self.twins.append(twin)
        self.fields.append(field_)
        self.values.append(value)
        self.source_ms.append(source_ms)
        self.quality.append(quality)

    def extend(
        self,
        twins: list[str],
        fields: list[str],
        values: list[float],
        source_ms: int,
        quality: int = Quality.GOOD,
    ) -> None:
        """Append many readings sharing one timestamp and quality."""
        n = len(values)
        self.twins.extend(twins)
        self.fields.extend(fields)
        self.values.extend(values)
        self.source_ms.extend([source_ms] * n)
        self.quality.extend([quality] * n)

    def reject(self, rejected: Rejected) -> None:
        self.rejects.append(rejected)

    def truncate(self, n: int) -> None:
        """Drop the readings from index ``n`` on (what a message that failed half-way had appended)."""
        for column in (self.twins, self.fields, self.values, self.source_ms, self.quality):
            del column[n:]

    def __len__(self) -> int:
        return len(self.values)

    def readings(self) -> Iterator[Reading]:
        for t, f, v, s, q in zip(
            self.twins, self.fields, self.values, self.source_ms, self.quality, strict=True
        ):
            yield Reading(t, f, v, s, Quality(q))

    @classmethod
    def of(cls, readings: Iterable[Reading], received_ms: int) -> SourceBatch:
        batch = cls(received_ms)
        for r in readings:
            batch.add(r.twin, r.field, r.value, r.source_ms, r.quality)
        return batch


U32: TypeAlias = "npt.NDArray[np.uint32]"
I64: TypeAlias = "npt.NDArray[np.int64]"
F64: TypeAlias = "npt.NDArray[np.float64]"
U8: TypeAlias = "npt.NDArray[np.uint8]"
Bool: TypeAlias = "npt.NDArray[np.bool_]"


@dataclass(frozen=True, slots=True, eq=False)
class ReadingBatch:
    """What one core call receives: parallel numpy arrays, one row per reading.

    ``values`` is NaN exactly where ``quality == BAD`` and the source gave no value. ``stale`` marks
    readings whose source timestamp was older than the adapter's ``stale_after_s`` at ingest: keep them
    for history, skip them for real-time decisions.
    """

    twin_ids: U32
    field_ids: U32
    values: F64
    source_ms: I64
    quality: U8
    stale: Bool

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def has_value(self) -> Bool:
        """Rows the core can store (a finite value)."""
        return np.isfinite(self.values)

    def select(self, mask: Bool) -> ReadingBatch:
        return ReadingBatch(
            self.twin_ids[mask],
            self.field_ids[mask],
            self.values[mask],
            self.source_ms[mask],
            self.quality[mask],
            self.stale[mask],
        )

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(
            np.empty(0, np.uint32),
            np.empty(0, np.uint32),
            np.empty(0, np.float64),
            np.empty(0, np.int64),
            np.empty(0, np.uint8),
            np.empty(0, np.bool_),
        )

    @classmethod
    def concat(cls, batches: Sequence[ReadingBatch]) -> ReadingBatch:
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls.empty()
        return cls(
            np.concatenate([b.twin_ids for b in batches]),
            np.concatenate([b.field_ids for b in batches]),
            np.concatenate([b.values for b in batches]),
            np.concatenate([b.source_ms for b in batches]),
            np.concatenate([b.quality for b in batches]),
            np.concatenate([b.stale for b in batches]),
        )


class Interner(Protocol):
    """Name -> id interning; ``drsdtp._core.Store`` satisfies it."""

    def intern_twin(self, name: str) -> int: ...

    def intern_field(self, name: str) -> int: ...


@runtime_checkable
class BatchSink(Protocol):
    """Where a pipeline delivers: one call per batch, returning once the batch is applied (later: durable).

    May raise :class:`drsdtp.errors.InvalidValueError` or :class:`drsdtp.errors.ClockSkewError` to refuse
    the batch (counted as dropped, acknowledged so it is not redelivered forever); any other exception
    stops the pipeline without acknowledging (the source redelivers what it can).
    """

    async def apply(self, batch: ReadingBatch) -> None: ...


@dataclass(slots=True)
class AdapterStats:
    """Source-level counters an adapter keeps; the pipeline keeps the reading-level ones."""

    messages: int = 0  # protocol units received (MQTT messages, OPC UA notifications, polls, lines)
    malformed: int = 0  # units that could not be decoded at all (bad JSON, wrong type, bad frame)
    unknown: int = 0  # units for a topic/node/device no rule maps
    dropped: int = 0  # readings lost at the source side (client queue overflow)
    lost: int = 0  # readings the source says we missed (serial sequence gaps)
    bad_reads: int = 0  # register/node reads that failed and were reported as BAD quality
    acked: int = 0  # acknowledgements sent after apply (MQTT QoS 1)
    filtered: int = 0  # changes inside a deadband the adapter applies itself (OPC UA percent deadband)


class Adapter(Protocol):
    """An ingestion source. ``session()`` connects and yields an async iterator of batches.

    The iterator raises (preferably :class:`drsdtp.errors.AdapterError`) when the connection is lost; the
    supervisor then exits the context and calls ``session()`` again after a backoff. An iterator that
    ends normally means the source is exhausted (a finite replay); nothing restarts it.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def stats(self) -> AdapterStats: ...

    @property
    def ingest(self) -> IngestOptions: ...

    @property
    def backoff(self) -> Backoff: ...

    def session(self) -> AbstractAsyncContextManager[AsyncIterator[SourceBatch]]: ...
