"""The ingest pipeline of one adapter: validate, map, deadband, buffer, one core call per batch, ack.

Two coroutines share a bounded :class:`ReadingBuffer`:

* :meth:`Pipeline.feed` (the supervisor's session body) queues each :class:`SourceBatch` and waits for room
  in the buffer: backpressure. It does nothing else, so an adapter that reads one request at a time (a
  Modbus poll) sends its next request at once.
* :meth:`Pipeline.run_apply` takes everything queued (up to ``max_batch`` readings), turns each source batch
  into a :class:`ReadingBatch` (validate, map, deadband: pure CPU, vectorised) in arrival order, makes ONE
  ``sink.apply`` call, then runs the batches' ``ack`` callbacks in arrival order and records latency.

What an adapter could not decode arrives as the batch's ``rejects``: each is handed to the dead-letter store
and counted once (``rejected``, by reason; a redelivery of a letter already held is not counted again), and
the batch's ack waits until its letters are durable, so a QoS 1 message is acknowledged, in order with the
others, only once it is either applied or stored as a dead letter.

The two overlap: while the core applies batch N (GIL released) or the adapter waits for its source, the
other side works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from drsdtp import clock_offset_hook
from drsdtp.adapters.base import BatchSink, Interner, Quality, ReadingBatch, Rejected, SourceBatch
from drsdtp.adapters.payloads import REASONS
from drsdtp.errors import ClockSkewError, InvalidValueError
from drsdtp.ingest.buffer import ReadingBuffer
from drsdtp.ingest.caps import FIELD_CAP, TWIN_CAP, KeyCaps
from drsdtp.ingest.deadletters import DeadLetterStore
from drsdtp.ingest.keys import BAD_KEY, FIELD_CAPPED, TWIN_CAPPED, KeyTable
from drsdtp.ingest.latency import LatencyWindow
from drsdtp.ingest.options import IngestOptions
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.supervisor import cancel_check

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["DeadLetterSink", "Pipeline", "PipelineStats", "wall_ms"]

_log = logging.getLogger(__name__)
PREPARE_STEP: Final = 2000  # readings prepared per event-loop step while a batch is prepared


def wall_ms() -> int:
    # The offset is a test hook's (0 unless DRSDTP_TEST_CLOCK_OFFSET_FILE is set): a clock step moves this
    # clock and the store's together.
    return time.time_ns() // 1_000_000 + clock_offset_hook.offset_ms()


@dataclass(slots=True)
class PipelineStats:
    """Reading-level counters (plain attributes; the metrics module exports them)."""

    received: int = 0  # readings handed over by the adapter
    invalid: int = 0  # refused by validation (see invalid_by_reason)
    dropped: int = 0  # valid but lost: refused by the sink
    late: int = 0  # older than stale_after_s at ingest (kept, flagged stale)
    suppressed: int = 0  # withheld by deadband / report-by-exception
    no_value: int = 0  # BAD-quality readings without a value (forwarded for field health)
    gaps: int = 0  # a field with an expected period was silent for more than two periods
    applied: int = 0  # rows applied by the sink
    batches: int = 0  # sink calls
    rejected: int = 0  # whole messages the adapter could not decode (dead letters), each counted once
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    latency: LatencyWindow = field(default_factory=LatencyWindow)  # ms, source timestamp -> applied


class DeadLetterSink(Protocol):
    """Where rejects go (:class:`drsdtp.ingest.deadletters.DeadLetterStore`): returns the ones that were
    new (not redeliveries of a letter held) and an awaitable resolving once they are durable."""

    async def put(
        self, adapter: str, rejects: Sequence[Rejected]
    ) -> tuple[list[Rejected], Awaitable[None] | None]: ...


@dataclass(slots=True)
class _Pending:
    source: SourceBatch | ReadingBatch  # a source batch is prepared by the applier, in order
    ack: Callable[[], None] | None
    durable: Awaitable[None] | None = None  # dead letters of the batch, awaited before the ack


class Pipeline:
    def __init__(
        self,
        name: str,
        options: IngestOptions,
        sink: BatchSink,
        interner: Interner,
        *,
        dead_letters: DeadLetterSink | None = None,
        caps: KeyCaps | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.name = name
        self.options = options
        self.stats = PipelineStats()
        self.keys = KeyTable(options, interner, caps)
        self._sink = sink
        # Without a store: one in memory, bounded (tests, embedding).
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterStore(None)
        self._clock_ms = clock_ms
        self._buffer: ReadingBuffer[_Pending] = ReadingBuffer(options.buffer_readings)
        self._invalid_log = RateLimitedLog(_log, f"{name}: invalid readings")
        self._idle = asyncio.Event()  # set while nothing is queued or being applied
        self._idle.set()

    # ---- producer side -------------------------------------------------------------------------------

    async def feed(self, batches: AsyncIterator[SourceBatch]) -> None:
        """Consume an adapter session; returns when the source ends, raises when it fails."""
        check = cancel_check()
        async for source in batches:
            check()
            await self.submit(source)

    async def submit(self, source: SourceBatch) -> None:
        """Queue one source batch (waits while the buffer is full); the applier validates it."""
        durable = await self._dead_letter(source.rejects) if source.rejects else None
        if len(source) or source.ack is not None:
            # Empty batches with an ack still queue: acks must go out in arrival order.
            self._idle.clear()
            await self._buffer.put(_Pending(source, source.ack, durable), len(source))

    async def _dead_letter(self, rejects: Sequence[Rejected]) -> Awaitable[None] | None:
        fresh, durable = await self.dead_letters.put(self.name, rejects)
        st = self.stats
        st.rejected += len(fresh)
        for r in fresh:
            # A plugin's own words count as a decoder error: metric labels stay a fixed set.
            reason = r.reason if r.reason in REASONS else "decoder error"
            st.rejected_by_reason[reason] = st.rejected_by_reason.get(reason, 0) + 1
        return durable

    def _prepare_or_refuse(self, sources: Sequence[SourceBatch]) -> ReadingBatch:
        """:meth:`prepare_many`, and should it ever raise, the batches' readings refused (counted, logged
        with the traceback) instead of the session: a bug here must not turn into a redelivery loop. A run
        that raises is prepared again batch by batch, so only the batch that raises is refused, not the
        other sources' readings it was laid beside."""
        try:
            return self.prepare_many(sources)
        except Exception:
            n = sum(len(s) for s in sources)
            if len(sources) > 1:
                self.stats.received -= n  # counted again, batch by batch
                return ReadingBatch.concat([self._prepare_or_refuse((s,)) for s in sources])
            self.stats.invalid += n
            self.stats.invalid_by_reason["unusable batch"] = (
                self.stats.invalid_by_reason.get("unusable batch", 0) + n
            )
            _log.exception("%s: a batch of %d readings could not be prepared; refused", self.name, n)
            return ReadingBatch.empty()

    def prepare(self, source: SourceBatch) -> ReadingBatch:
        return self._prepare(source, ((source.received_ms, len(source)),))

    def prepare_many(self, sources: Sequence[SourceBatch]) -> ReadingBatch:
        """:meth:`prepare` of the source batches laid end to end: one pass of array work for all of them
        (a Modbus poll or an MQTT message brings tens of readings; a dozen numpy calls per batch cost more
        than the readings do). Each batch keeps its own arrival time."""
        if len(sources) == 1:
            return self.prepare(sources[0])
        merged = SourceBatch(0)
        for s in sources:
            merged.twins += s.twins
            merged.fields += s.fields
            merged.values += s.values
            merged.source_ms += s.source_ms
            merged.quality += s.quality
        return self._prepare(merged, [(s.received_ms, len(s)) for s in sources])

    def _prepare(self, source: SourceBatch, arrivals: Sequence[tuple[int, int]]) -> ReadingBatch:
        """``arrivals``: (received_ms, readings) of each batch laid end to end in ``source``."""
        n = len(source)
        st = self.stats
        st.received += n
        if n == 0:
            return ReadingBatch.empty()
        now = self._clock_ms()
        keys = self.keys
        rows = keys.rows(source.twins, source.fields)
        values = np.array(source.values, dtype=np.float64)
        src_ms = np.array(source.source_ms, dtype=np.int64)
        if max(r for r, _ in arrivals) > now:
            # Our clock stepped back since the batch arrived (an NTP step). A reading stamped no later than
            # its arrival was not from the future then: restamp it with now, or the validation below and the
            # core's clock gate would refuse readings the source is about to get acknowledged.
            received = np.repeat([r for r, _ in arrivals], [k for _, k in arrivals])
            stepped = (src_ms > now) & (src_ms <= received)
            src_ms[stepped] = now
        quality = np.array(source.quality, dtype=np.uint8)

        opts = self.options
        oldest, newest = int(src_ms.min()), int(src_ms.max())
        if (
            int(rows.min()) >= 0
            and int(quality.max()) < Quality.BAD
            and not keys.has_range
            and newest <= now + opts.max_future_s * 1000.0
            and oldest >= now - opts.max_age_s * 1000.0
            and bool(np.isfinite(values).all())
        ):
            # The common case, checked with a few reductions instead of a dozen per-reading masks (they
            # dominate for the small batches of a Modbus poll or an OPC UA publish).
            return self._finish(rows, values, src_ms, quality, None, now)
        no_value = quality >= Quality.BAD
        values[no_value] = np.nan  # a BAD reading never carries a usable number
        bad_key = rows < 0
        safe_rows = np.where(bad_key, 0, rows)
        finite = np.isfinite(values)
        not_finite = ~finite & ~no_value
        future = src_ms > now + opts.max_future_s * 1000.0
        ancient = src_ms < now - opts.max_age_s * 1000.0
        out_of_range = np.zeros(n, dtype=np.bool_)
        if keys.has_range:
            with np.errstate(invalid="ignore"):
                out_of_range = finite & ((values < keys.lo[safe_rows]) | (values > keys.hi[safe_rows]))
        reasons = (
            ("bad name", rows == BAD_KEY),
            (TWIN_CAP, rows == TWIN_CAPPED),
            (FIELD_CAP, rows == FIELD_CAPPED),
            ("not a finite number", not_finite),
            ("out of range", out_of_range & ~bad_key),
            ("timestamp in the future", future),
            ("timestamp too old", ancient),
        )
        invalid = bad_key | not_finite | out_of_range | future | ancient
        if invalid.any():
            self._count_invalid(source, reasons, invalid)
            if opts.invalid == "bad":
                # Keep a value-less BAD reading where we still know which field it was and when.
                salvage = invalid & ~bad_key & ~future & ~ancient
                values[salvage] = np.nan
                quality[salvage] = Quality.BAD
                no_value |= salvage
                invalid &= ~salvage
        return self._finish(rows, values, src_ms, quality, (~invalid, no_value), now)

    def _finish(
        self,
        rows: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        src_ms: npt.NDArray[np.int64],
        quality: npt.NDArray[np.uint8],
        checked: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None,
        now: int,
    ) -> ReadingBatch:
        """Staleness, expected periods and deadbands; ``checked`` is (keep, no_value), None when every
        reading is valid and carries a value."""
        keys, st, n = self.keys, self.stats, len(rows)
        stale = src_ms < now - self.options.stale_after_s * 1000.0
        keep = np.ones(n, dtype=np.bool_) if checked is None else checked[0]
        st.late += int(np.count_nonzero(stale & keep))
        if keys.has_expected:
            self._track_period(rows[keep], src_ms[keep])
        if keys.has_deadband:
            keep &= self._report_by_exception(rows, values, quality, src_ms, keep)
        if checked is not None:
            st.no_value += int(np.count_nonzero(checked[1] & keep))
        if keep.all():
            return ReadingBatch(keys.twin_id[rows], keys.field_id[rows], values, src_ms, quality, stale)
        r = rows[keep]
        return ReadingBatch(
            keys.twin_id[r], keys.field_id[r], values[keep], src_ms[keep], quality[keep], stale[keep]
        )

    def _count_invalid(
        self,
        source: SourceBatch,
        reasons: tuple[tuple[str, npt.NDArray[np.bool_]], ...],
        invalid: npt.NDArray[np.bool_],
    ) -> None:
        self.stats.invalid += int(np.count_nonzero(invalid))
        by_reason = self.stats.invalid_by_reason
        for reason, mask in reasons:
            count = int(np.count_nonzero(mask))
            if count:
                by_reason[reason] = by_reason.get(reason, 0) + count
                i = int(np.argmax(mask))
                self._invalid_log.warn(
                    reason,
                    "%s (%d in batch), e.g. twin=%r field=%r value=%r ts_ms=%r",
                    reason,
                    count,
                    source.twins[i],
                    source.fields[i],
                    source.values[i],
                    source.source_ms[i],
                )

    def _track_period(self, rows: npt.NDArray[np.int64], src_ms: npt.NDArray[np.int64]) -> None:
        keys = self.keys
        prev = keys.last_seen_ms[rows]
        with np.errstate(invalid="ignore"):
            self.stats.gaps += int(np.count_nonzero((src_ms - prev) > 2.0 * keys.expected_ms[rows]))
        np.fmax.at(keys.last_seen_ms, rows, src_ms.astype(np.float64))

    def _report_by_exception(
        self,
        rows: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint8],
        src_ms: npt.NDArray[np.int64],
        keep: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.bool_]:
        """Forward a reading if it moved by >= deadband, changed quality, or the heartbeat is due.

        Compares against the last value forwarded before this batch: two readings of one field inside a
        batch may both pass (over-reporting is safe; under-reporting is not).
        """
        keys = self.keys
        r = np.where(keep, rows, 0)
        with np.errstate(invalid="ignore"):
            moved = ~(np.abs(values - keys.last_value[r]) < keys.deadband[r])
        due = (src_ms - keys.last_sent_ms[r]) >= keys.heartbeat_ms[r]
        changed_quality = quality.astype(np.int16) != keys.last_quality[r]
        forward = keep & (moved | due | changed_quality)
        suppressed = keep & ~forward
        self.stats.suppressed += int(np.count_nonzero(suppressed))
        fr = rows[forward]
        keys.last_value[fr] = values[forward]
        keys.last_quality[fr] = quality[forward]
        keys.last_sent_ms[fr] = src_ms[forward]
        result: npt.NDArray[np.bool_] = forward | ~keep
        return result

    # ---- consumer side -------------------------------------------------------------------------------

    async def run_apply(self) -> None:
        """Apply queued batches forever (cancel to stop); raises if the sink fails unexpectedly."""
        while True:
            pending = await self._buffer.take(self.options.max_batch)
            await self._apply(pending)
            if not len(self._buffer):
                self._idle.set()

    async def drain(self) -> None:
        """Wait until everything submitted so far is applied (needs ``run_apply`` running)."""
        await self._idle.wait()

    async def _apply(self, pending: list[_Pending]) -> None:
        # Source batches are prepared together, in runs of up to PREPARE_STEP readings: preparing
        # max_batch readings is tens of ms of Python, so the loop gets a turn after each run (other
        # pipelines, acks, socket reads); still one sink call per batch.
        prepared: list[ReadingBatch] = []
        run: list[SourceBatch] = []

        def end_run() -> None:
            if run:
                ready = self._prepare_or_refuse(run)
                if len(ready):
                    prepared.append(ready)
                run.clear()

        in_run = 0
        for p in pending:
            if isinstance(p.source, ReadingBatch):
                end_run()  # arrival order is kept: a later reading of a field wins
                if len(p.source):
                    prepared.append(p.source)
            else:
                run.append(p.source)
            in_run += len(p.source)
            if in_run >= PREPARE_STEP:
                end_run()
                in_run = 0
                await asyncio.sleep(0)
        end_run()
        batch = ReadingBatch.concat(prepared)
        n = len(batch)
        if n:
            try:
                await self._sink.apply(batch)
            except (InvalidValueError, ClockSkewError) as exc:
                # Refused by the core: acknowledge anyway, or the source would redeliver it forever.
                self.stats.dropped += n
                _log.warning("%s: sink refused a batch of %d readings: %s", self.name, n, exc)
            else:
                self.stats.applied += n
                self.stats.batches += 1
                fresh = ~batch.stale
                self.stats.latency.add(self._clock_ms() - batch.source_ms[fresh])
        for p in pending:
            if p.durable is not None:
                try:
                    await p.durable
                except Exception as exc:
                    # Counted as dropped by the store; acknowledged anyway, or it comes back forever.
                    _log.error("%s: dead letters not stored: %s", self.name, exc)
            if p.ack is not None:
                try:
                    p.ack()
                except Exception:
                    # The state is applied; a failed ack only means the source redelivers (idempotent).
                    _log.exception("%s: acknowledgement failed", self.name)

    async def apply_direct(self, source: SourceBatch) -> None:
        """prepare + one sink call without the buffer (tests and synchronous replays)."""
        durable = await self._dead_letter(source.rejects) if source.rejects else None
        await self._apply([_Pending(source, source.ack, durable)])

    @property
    def queued_readings(self) -> int:
        return self._buffer.weight
