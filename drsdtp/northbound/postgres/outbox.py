"""The PostgreSQL sink's outbox: journalled reading batches on local disk until the database holds them.

Records are the history journal's (:mod:`drsdtp.history.journal`), numbered by their journal number, which
only grows. The outbox is a directory of segment files, each named by the first journal number it holds::

    <dir>/00000000000000000042.seg     record* where record = len u32 | crc32 u32 | payload

A record with a bad checksum or a short tail ends its segment (a torn write after a crash: the rest of that
segment is dropped and counted; the node's log hands the lost records back, see :meth:`Outbox.mark`). The
outbox is bounded by ``max_bytes``; past it the oldest segments are dropped (policy ``drop_oldest``, a
database that stays down loses its oldest readings first) or new records are refused (``drop_newest``),
counted either way. Not thread-safe: one worker thread owns it.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = ["Outbox", "OutboxStats"]

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_JOURNAL = struct.Struct("<Q")  # the journal number at offset 5 of a history journal record
_JOURNAL_AT = 5
_SUFFIX = ".seg"
_MARK = "mark"

DropPolicy = Literal["drop_oldest", "drop_newest"]


@dataclass(slots=True)
class OutboxStats:
    appended: int = 0  # records
    dropped_records: int = 0  # past the disk budget or torn by a crash
    dropped_bytes: int = 0
    torn_tails: int = 0


class Outbox:
    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 4 << 20,
        policy: DropPolicy = "drop_oldest",
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 1))
        self.policy = policy
        self.stats = OutboxStats()
        self._segments: dict[int, int] = {}  # first journal -> bytes
        self._last_of: dict[int, int] = {}  # first journal -> last journal in it
        self._file: BinaryIO | None = None
        self._open_first: int | None = None
        self._dirty = False
        self._mark = self._read_mark()
        for path in sorted(self.dir.glob(f"*{_SUFFIX}")):
            self._scan(path)
        self._mark = max(self._mark, self._last_journal())
        self._highest = self._mark  # the highest journal number appended, synced or not

    # --- state ---------------------------------------------------------------------------------------------

    @property
    def mark(self) -> int:
        """The highest journal number ever appended and synced (also after its segment was released): the
        node's log must hand back every journalled record above it after a crash."""
        return self._mark

    @property
    def size_bytes(self) -> int:
        return sum(self._segments.values())

    def __len__(self) -> int:
        return len(self._segments)

    # --- writing -------------------------------------------------------------------------------------------

    def append(self, record: bytes) -> bool:
        """Append one journal record; False if the budget refused it (``drop_newest``)."""
        journal = journal_of(record)
        size = _FRAME.size + len(record)
        if journal <= self._highest:
            return True  # already held: the node's log hands back records the outbox may have synced
        while self.size_bytes + size > self.max_bytes and self._segments:
            if self.policy == "drop_newest":
                self.stats.dropped_records += 1
                self.stats.dropped_bytes += len(record)
                return False
            oldest = min(self._segments)
            if oldest == self._open_first:
                break  # only the open segment is left: let it grow past the budget by this one record
            self._drop(oldest, "the outbox is over its disk budget")
        if self._open_first is None or self._segments[self._open_first] >= self.segment_bytes:
            self._roll(journal)
        assert self._open_first is not None
        f = self._handle()
        f.write(_FRAME.pack(len(record), zlib.crc32(record)) + record)
        self._segments[self._open_first] += size
        self._last_of[self._open_first] = journal
        self._dirty = True
        self._highest = journal
        self.stats.appended += 1
        return True

    def sync(self) -> None:
        """Make every appended record durable, then advance :attr:`mark`."""
        if not self._dirty:
            return
        f = self._handle()
        f.flush()
        os.fsync(f.fileno())
        self._dirty = False
        last = self._last_journal()
        if last > self._mark:
            self._mark = last
            self._write_mark()

    def close(self) -> None:
        self.sync()
        if self._file is not None:
            self._handle().close()
            self._file = None

    # --- reading and releasing ---------------------------------------------------------------------------

    def read_after(self, journal: int, max_bytes: int) -> list[bytes]:
        """Records with a journal number above ``journal``, oldest first, about ``max_bytes`` of them
        (at least one)."""
        if self._dirty:
            self._handle().flush()
        out: list[bytes] = []
        total = 0
        for first in sorted(self._segments):
            if self._last_of.get(first, 0) <= journal:
                continue
            for record in self._records(self._path(first)):
                if journal_of(record) <= journal:
                    continue
                out.append(record)
                total += len(record)
                if total >= max_bytes:
                    return out
        return out

    def release(self, journal: int) -> int:
        """Deletes the segments whose records all have journal numbers <= ``journal`` (the database holds
        them). The open segment stays until a newer one is rolled. Returns the segments deleted."""
        gone = 0
        for first in sorted(self._segments):
            if first == self._open_first or self._last_of.get(first, 0) > journal:
                continue
            self._path(first).unlink(missing_ok=True)
            del self._segments[first]
            self._last_of.pop(first, None)
            gone += 1
        return gone

    # --- internals ---------------------------------------------------------------------------------------

    def _last_journal(self) -> int:
        return max(self._last_of.values(), default=0)

    def _path(self, first: int) -> Path:
        return self.dir / f"{first:020d}{_SUFFIX}"

    def _handle(self) -> BinaryIO:
        assert self._file is not None
        return self._file

    def _roll(self, journal: int) -> None:
        if self._file is not None:
            self.sync()
            self._handle().close()
        self._file = open(self._path(journal), "ab")  # noqa: SIM115 (held open across calls)
        self._open_first = journal
        self._segments.setdefault(journal, 0)
        self._last_of.setdefault(journal, journal)

    def _drop(self, first: int, why: str) -> None:
        records = sum(1 for _ in self._records(self._path(first)))
        self.stats.dropped_records += records
        self.stats.dropped_bytes += self._segments[first]
        log.warning("postgres outbox: dropped %d records (%d bytes): %s", records, self._segments[first], why)
        self._path(first).unlink(missing_ok=True)
        del self._segments[first]
        self._last_of.pop(first, None)

    def _scan(self, path: Path) -> None:
        try:
            first = int(path.stem)
        except ValueError:
            return
        good, last = 0, first
        data = path.read_bytes()
        for payload, end in _frames(data):
            last, good = journal_of(payload), end
        if good < len(data):
            # A torn or damaged tail: what follows is unreadable. The node's log still holds those records
            # unless a snapshot truncated it, which waits for a sync of this outbox first.
            self.stats.torn_tails += 1
            self.stats.dropped_bytes += len(data) - good
            log.warning(
                "postgres outbox: %s: %d damaged bytes at its end dropped", path.name, len(data) - good
            )
            with open(path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        if good == 0:
            path.unlink(missing_ok=True)
            return
        self._segments[first] = good
        self._last_of[first] = last

    @staticmethod
    def _records(path: Path) -> Iterator[bytes]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        for payload, _ in _frames(data):
            yield payload

    def _read_mark(self) -> int:
        try:
            return int((self.dir / _MARK).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_mark(self) -> None:
        tmp = self.dir / f"{_MARK}.tmp"
        with open(tmp, "w") as f:
            f.write(str(self._mark))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / _MARK)


def _frames(data: bytes) -> Iterator[tuple[bytes, int]]:
    """The whole, checksummed records of a segment's bytes, each with the offset just past it; stops at the
    first torn or damaged one."""
    at = 0
    while at + _FRAME.size <= len(data):
        size, crc = _FRAME.unpack_from(data, at)
        payload = data[at + _FRAME.size : at + _FRAME.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            return
        at += _FRAME.size + size
        yield payload, at


def journal_of(record: bytes) -> int:
    """The journal number of a history journal record (its header is checked by the decoder later)."""
    if len(record) < _JOURNAL_AT + _JOURNAL.size:
        return 0
    return int(_JOURNAL.unpack_from(record, _JOURNAL_AT)[0])
