"""Dead letters: the messages adapters could not decode, kept (bounded, on disk) for an operator to list,
replay after fixing the cause, or purge.

Each letter holds the adapter, the source (MQTT topic, serial port ...), the receive time, the reason (one of
:data:`drsdtp.adapters.payloads.REASONS`) with its detail, and the payload (up to ``max_payload_bytes``; a
longer one is kept truncated and cannot be replayed).

Bounds, both held across restarts (computed from the files on open): at most ``max_letters`` letters and
``max_bytes`` bytes of records under ``<data_dir>/deadletters/``. Past either, the oldest segment (an eighth
of the bound) is deleted and its letters counted as dropped. The format is in :mod:`drsdtp.ingest.letterlog`.

Writing never blocks the event loop per message: :meth:`DeadLetterStore.put` queues letters and returns an
awaitable that resolves once they are on disk; a writer task appends everything queued with one fsync. The
pipeline awaits it before acknowledging the batch, so a QoS 1 message is acknowledged only once its letter is
durable. The queue is bounded too (one segment): ``put`` waits while it is full. If a write fails, the
letters are counted as dropped and the awaitable raises; the caller still acknowledges (a message that cannot
be stored must not be redelivered forever).

Redeliveries: a reject marked ``redelivery`` (the MQTT DUP flag) whose adapter, source and payload equal a
letter still held is a duplicate: not stored, not counted again (``duplicate`` outcome). Other repeats are
new messages and are counted each time.

Without a directory the store keeps letters in memory (tests, embedding), within the same bounds.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from drsdtp.adapters.base import Rejected
from drsdtp.adapters.payloads import REASONS
from drsdtp.errors import StorageError
from drsdtp.ingest import letterlog
from drsdtp.lifecycle import BackgroundService

__all__ = ["OUTCOMES", "DeadLetterOptions", "DeadLetterStats", "DeadLetterStore", "Letter"]

log = logging.getLogger(__name__)

PREVIEW_BYTES = 64

#: What happens to letters, counted by adapter and reason.
OUTCOMES = ("stored", "duplicate", "dropped", "replayed", "purged")


@dataclass(frozen=True, slots=True)
class DeadLetterOptions:
    max_letters: int = 10_000
    max_bytes: int = 64 << 20
    max_payload_bytes: int = 1 << 20

    @property
    def segment_letters(self) -> int:
        return max(1, self.max_letters // 8)

    @property
    def segment_bytes(self) -> int:
        return max(4096, self.max_bytes // 8)

    @property
    def payload_cap(self) -> int:
        """What one letter keeps of its payload: it must fit a segment."""
        return min(self.max_payload_bytes, self.segment_bytes - 1024)


@dataclass(frozen=True, slots=True)
class Letter:
    id: int
    adapter: str
    source: str
    received_ms: int
    reason: str
    detail: str
    size: int  # of the payload as received
    kept: int  # bytes of it kept
    digest: str  # of adapter, source and the whole payload (recognises a redelivery)
    preview: bytes = b""  # its first bytes, for listings (kept in memory)

    @property
    def truncated(self) -> bool:
        return self.kept < self.size

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "adapter": self.adapter,
            "source": self.source,
            "received_ms": self.received_ms,
            "reason": self.reason,
            "detail": self.detail,
            "size": self.size,
            "digest": self.digest,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], payload: bytes) -> Letter | None:
        try:
            letter = cls(
                int(meta["id"]),
                str(meta["adapter"]),
                str(meta["source"]),
                int(meta["received_ms"]),
                str(meta["reason"]),
                str(meta["detail"]),
                int(meta["size"]),
                len(payload),
                str(meta["digest"]),
                payload[:PREVIEW_BYTES],
            )
        except (KeyError, TypeError, ValueError):
            return None
        return letter


@dataclass
class DeadLetterStats:
    """Running totals by ``(adapter, reason, outcome)``; ``corrupt``: damaged segment tails cut on open."""

    counts: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    corrupt: int = 0


def digest_of(adapter: str, source: str, payload: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (adapter.encode(), source.encode("utf-8", "surrogatepass"), payload):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


@dataclass(slots=True)
class _Place:
    segment: int
    offset: int
    length: int


class DeadLetterStore(BackgroundService):
    """Bounded dead letters in ``directory`` (``None``: in memory). Enter it (``async with``) to run the
    writer before ``put`` is used with a directory."""

    name = "dead letters"

    def __init__(self, directory: Path | None, options: DeadLetterOptions | None = None) -> None:
        self.directory = directory
        self.options = options or DeadLetterOptions()
        self.stats = DeadLetterStats()
        self._letters: dict[int, Letter] = {}  # oldest first (ids increase)
        self._places: dict[int, _Place] = {}
        self._payloads: dict[int, bytes] = {}  # in memory: every letter; on disk: the ones queued
        self._digests: collections.Counter[str] = collections.Counter()
        self._segments: dict[int, set[int]] = {}  # segment number -> letter ids in it
        self._bytes = 0  # record bytes on disk (or payload bytes in memory)
        self._active = 0  # segment appended to
        self._active_bytes = 0
        self._queue: list[tuple[Letter, bytes]] = []
        self._queued_bytes = 0
        self._flushed: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._io = asyncio.Lock()  # one disk operation at a time: appends, rewrites, reads
        self._last_id = 0
        self._running = directory is None
        self._writing: asyncio.Future[None] | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(directory)

    # ---- reading ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._letters)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def letters(self, adapter: str | None = None, ids: Collection[int] | None = None) -> list[Letter]:
        """Letters held, oldest first; only ``adapter``'s, only ``ids`` (when given)."""
        chosen = (
            self._letters.values() if ids is None else (self._letters[i] for i in ids if i in self._letters)
        )
        return [letter for letter in chosen if adapter is None or letter.adapter == adapter]

    async def payload(self, letter_id: int) -> bytes:
        """The payload kept of a letter (KeyError if it is not held)."""
        letter = self._letters[letter_id]
        if letter_id in self._payloads:
            return self._payloads[letter_id]
        async with self._io:
            place = self._places[letter_id]
            assert self.directory is not None
            path = letterlog.segment_path(self.directory, place.segment)
            payload = await asyncio.to_thread(letterlog.read_payload, path, place.offset, place.length)
        if payload is None:
            raise StorageError(f"dead letter {letter.id}: its record in {path} is damaged")
        return payload

    def counts(self) -> dict[tuple[str, ...], float]:
        """For the metrics: running totals by (source, reason, outcome)."""
        return {k: float(v) for k, v in self.stats.counts.items()}

    # ---- writing ---------------------------------------------------------------------------------------

    async def put(
        self, adapter: str, rejects: Sequence[Rejected]
    ) -> tuple[list[Rejected], Awaitable[None] | None]:
        """Keep ``rejects`` as letters. Returns the ones that were new (not redeliveries of a letter held),
        and an awaitable resolving once they are durable (None when nothing needs waiting for)."""
        if self.directory is not None and not self._running:
            raise RuntimeError("the dead-letter store's writer is not running (enter the store first)")
        fresh: list[Rejected] = []
        for r in rejects:
            reason = r.reason if r.reason in REASONS else "decoder error"
            digest = digest_of(adapter, r.source, r.payload)
            if r.redelivery and self._digests[digest] > 0:
                self.stats.counts[adapter, reason, "duplicate"] += 1
                continue
            fresh.append(r)
            while self.directory is not None and not self._space.is_set():
                await self._space.wait()  # the writer is behind: wait, like a full reading buffer
            kept = r.payload[: self.options.payload_cap]
            letter = Letter(
                self._next_id(), adapter, r.source, r.received_ms, reason, r.detail[:500], len(r.payload),
                len(kept), digest, kept[:PREVIEW_BYTES],
            )  # fmt: skip
            self._hold(letter, kept)
            if self.directory is None:
                self.stats.counts[adapter, reason, "stored"] += 1
                self._bytes += len(kept)
                self._enforce_in_memory()
            else:
                self._queue.append((letter, kept))
                self._queued_bytes += len(kept)
                if (
                    len(self._queue) >= self.options.segment_letters
                    or self._queued_bytes >= self.options.segment_bytes
                ):
                    self._space.clear()
                self._wake.set()
        if self.directory is None or not fresh:
            return fresh, None
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
            # Nobody may wait for it (a QoS 0 batch has no ack): never let a failure go unretrieved.
            self._flushed.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fresh, self._flushed

    async def remove(self, ids: Collection[int], outcome: str) -> int:
        """Delete letters (``outcome``: "replayed" or "purged", counted); returns how many were held."""
        async with self._io:
            wanted = [i for i in ids if i in self._letters]
            queued = {letter.id for letter, _ in self._queue}
            on_disk: dict[int, set[int]] = collections.defaultdict(set)
            for i in wanted:
                place = self._places.get(i)
                if place is not None:
                    on_disk[place.segment].add(place.offset)
            if self.directory is not None:
                await asyncio.to_thread(self._rewrite, dict(on_disk))
            for i in wanted:
                letter = self._letters[i]
                if i in queued:
                    self._queue = [(lt, p) for lt, p in self._queue if lt.id != i]
                self._release(letter)
                self.stats.counts[letter.adapter, letter.reason, outcome] += 1
        return len(wanted)

    # ---- the writer ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._running = True  # the writer task is created here and runs at the next turn of the loop
        return await super().__aenter__()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._queue:
                    # A write is never cut in the middle (its thread would go on without its bookkeeping).
                    self._writing = asyncio.ensure_future(self._write_queued())
                    await asyncio.shield(self._writing)
        finally:
            self._running = False

    async def stopped(self) -> None:
        if self._writing is not None:
            await asyncio.wait([self._writing])
        if self._queue and self.directory is not None:
            await self._write_queued()  # a last flush of what was queued when the node stopped
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_exception(StorageError("the dead-letter store stopped before writing"))

    async def _write_queued(self) -> None:
        async with self._io:
            batch, self._queue, self._queued_bytes = self._queue, [], 0
            done, self._flushed = self._flushed, None
            self._space.set()
            records = [letterlog.encode(letter.meta(), payload) for letter, payload in batch]
            try:
                count = len(self._segments.get(self._active, ()))
                places = await asyncio.to_thread(self._append, records, count)
            except OSError as exc:
                log.error("dead letters: cannot write %d letters: %s", len(batch), exc)
                for letter, _ in batch:
                    if letter.id in self._letters:
                        self._release(letter)
                        self.stats.counts[letter.adapter, letter.reason, "dropped"] += 1
                if done is not None and not done.done():
                    done.set_exception(StorageError(f"dead letters not written: {exc}"))
                return
            for (letter, _), place in zip(batch, places, strict=True):
                if letter.id not in self._letters:
                    continue  # purged while it was being written: the next removal of its segment cleans up
                self._payloads.pop(letter.id, None)
                self._places[letter.id] = place
                self._segments.setdefault(place.segment, set()).add(letter.id)
                self._bytes += place.length
                self.stats.counts[letter.adapter, letter.reason, "stored"] += 1
            await self._enforce_on_disk()
            if done is not None and not done.done():
                done.set_result(None)

    def _append(self, records: list[bytes], count: int) -> list[_Place]:
        """Append to the active segment (holding ``count`` letters), starting a new one when it is full.
        Runs in a worker thread under ``_io``: it touches only the active segment's state."""
        assert self.directory is not None
        opts, places = self.options, []
        group: list[bytes] = []
        group_bytes = 0
        for record in records:
            held = count + len(group)
            too_big = self._active_bytes + group_bytes + len(record) > opts.segment_bytes
            if held and (held >= opts.segment_letters or too_big):
                self._flush_group(group)
                self._active, self._active_bytes, count, group, group_bytes = self._active + 1, 0, 0, [], 0
            places.append(_Place(self._active, self._active_bytes + group_bytes, len(record)))
            group.append(record)
            group_bytes += len(record)
        self._flush_group(group)
        return places

    def _flush_group(self, group: list[bytes]) -> None:
        assert self.directory is not None
        if group:
            self._active_bytes = letterlog.append(letterlog.segment_path(self.directory, self._active), group)

    def _rewrite(self, drop: dict[int, set[int]]) -> None:
        assert self.directory is not None
        for segment, offsets in drop.items():
            path = letterlog.segment_path(self.directory, segment)
            moved = dict(letterlog.remove_records(path, offsets))
            for i in self._segments.get(segment, set()):
                place = self._places[i]
                if place.offset in moved:
                    place.offset = moved[place.offset]
            if segment == self._active:
                self._active_bytes = path.stat().st_size if path.exists() else 0

    # ---- bounds ----------------------------------------------------------------------------------------

    def _over(self) -> bool:
        return len(self._letters) > self.options.max_letters or self._bytes > self.options.max_bytes

    def _enforce_in_memory(self) -> None:
        while self._over():
            oldest = next(iter(self._letters.values()))
            self._release(oldest)
            self.stats.counts[oldest.adapter, oldest.reason, "dropped"] += 1

    async def _enforce_on_disk(self) -> None:
        while self._over() and self._segments:
            segment = min(self._segments)
            self._drop_segment(segment)
            assert self.directory is not None
            await asyncio.to_thread(letterlog.unlink, letterlog.segment_path(self.directory, segment))

    def _drop_segment(self, segment: int) -> None:
        ids = self._segments.get(segment, set())
        for i in sorted(ids):
            letter = self._letters[i]
            self._release(letter)
            self.stats.counts[letter.adapter, letter.reason, "dropped"] += 1
        self._segments.pop(segment, None)
        if segment == self._active:
            self._active, self._active_bytes = self._active + 1, 0

    # ---- bookkeeping -----------------------------------------------------------------------------------

    def _next_id(self) -> int:
        # Microseconds since the epoch, strictly increasing: unique across restarts (the files hold the last).
        self._last_id = max(self._last_id + 1, time.time_ns() // 1000)
        return self._last_id

    def _hold(self, letter: Letter, payload: bytes) -> None:
        self._letters[letter.id] = letter
        self._payloads[letter.id] = payload
        self._digests[letter.digest] += 1

    def _release(self, letter: Letter) -> None:
        self._letters.pop(letter.id, None)
        payload = self._payloads.pop(letter.id, None)
        if self.directory is None and payload is not None:
            self._bytes -= len(payload)
        place = self._places.pop(letter.id, None)
        if place is not None:
            self._bytes -= place.length
            members = self._segments.get(place.segment)
            if members is not None:
                members.discard(letter.id)
                if not members and place.segment != self._active:
                    del self._segments[place.segment]
        self._digests[letter.digest] -= 1
        if self._digests[letter.digest] <= 0:
            del self._digests[letter.digest]

    def _load(self, directory: Path) -> None:
        numbers = letterlog.segments(directory)
        for number in numbers:
            path = letterlog.segment_path(directory, number)
            found = letterlog.scan(path)
            if found.damaged:
                self.stats.corrupt += 1
                log.warning("dead letters: %s has a damaged tail after %d bytes; cut", path, found.good_bytes)
                letterlog.truncate(path, found.good_bytes)
            ids = self._segments.setdefault(number, set())
            for record in found.records:
                letter = Letter.from_meta(record.meta, record.payload)
                if letter is None or letter.id in self._letters:
                    continue
                self._letters[letter.id] = letter
                self._digests[letter.digest] += 1
                self._places[letter.id] = _Place(number, record.offset, record.length)
                self._bytes += record.length
                ids.add(letter.id)
                self._last_id = max(self._last_id, letter.id)
        self._letters = dict(sorted(self._letters.items()))
        if numbers:
            self._active = numbers[-1]
            self._active_bytes = letterlog.segment_path(directory, self._active).stat().st_size
        while self._over() and self._segments:  # the bound holds across restarts, also a lowered one
            segment = min(self._segments)
            self._drop_segment(segment)
            letterlog.unlink(letterlog.segment_path(directory, segment))
        if self._letters:
            log.info("dead letters: %d held (%d bytes) in %s", len(self._letters), self._bytes, directory)
