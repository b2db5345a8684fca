"""Change notifications for watchers (the API's Watch stream).

One log shared by every watcher: the feed numbers each change, keeps per twin the number and origin of its
latest change, and keeps the changes in order. A watcher is only a cursor (the number of the last change it
read), so a watcher that stops reading costs the node nothing however far behind it falls, and the node
never blocks on it. Changes to the same twin coalesce: a watcher that was away sees each changed twin once,
then reads its current state. The log holds one live entry per twin plus superseded entries, which are
dropped once they outnumber the live ones, so it is bounded by the number of twins (as the store is).

A change's number is a cursor a client can resume from, also after the node restarted: with a ``clock``
(the node's hybrid logical clock, persisted so it never goes back), numbers are HLC stamps, so every number
given out after a restart is above every number given out before. The feed then starts with every twin of
the store (:meth:`ChangeFeed.seed`): at its number from the previous run when that run ended cleanly
(:meth:`ChangeFeed.save` at shutdown, the file removed once read), else at a fresh number, so a resume
across a crash sends every twin once more rather than miss one. (A per-field stamp would not do: a write
replicated here late carries its writer's older stamp.)
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import struct
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple, Protocol

from drsdtp.history.files import atomic_write, storage_error

__all__ = ["RESTART", "Change", "ChangeFeed", "FeedKeeper", "Subscription"]

log = logging.getLogger(__name__)

RESTART = "restart"  # the origin of a change from before the node (re)started: not known any more
_ENTRY = struct.Struct("<QH")  # seq, name length; then the name (utf-8)

# Superseded entries tolerated beyond the live ones before the log is compacted (amortises compaction).
_SLACK = 1024


class Change(NamedTuple):
    seq: int  # its number in the feed: every change up to it was read once this one is
    twin: str
    origin: str  # "local", "ingest", "peer"


class TwinNames(Protocol):
    """Twin names as small dense ids (the store's interner, ``drsdtp._core.Store``)."""

    def intern_twin(self, name: str) -> int: ...
    def twin_name(self, twin_id: int) -> str | None: ...


class _OwnNames:
    """Names interned by the feed itself, for a feed without a store (tests, tools)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: list[str] = []

    def intern_twin(self, name: str) -> int:
        tid = self._ids.get(name)
        if tid is None:
            tid = self._ids[name] = len(self._names)
            self._names.append(name)
        return tid

    def twin_name(self, twin_id: int) -> str | None:
        return self._names[twin_id] if twin_id < len(self._names) else None


class ChangeFeed:
    """Fan-out of "these twins changed" to every subscription, in one shared log.

    Twins are held by their id in ``names`` (the store's, which holds the names anyway), in flat arrays:
    about 33 bytes per twin, where Python objects per twin took 266 MB for a million twins (issue 13)."""

    def __init__(self, clock: Callable[[], int] | None = None, names: TwinNames | None = None) -> None:
        self._clock = clock
        self._names: TwinNames = names if names is not None else _OwnNames()
        self._seq = 0
        # Per twin id: the number (0: none) and the origin (an index into _origins) of its latest change.
        self._latest = array("Q")
        self._origin_of = array("H")
        self._origins: list[str] = []
        self._live = 0  # twins with a change
        # The log: (number, twin id), numbers increasing; superseded entries are skipped.
        self._log_seq = array("Q")
        self._log_twin = array("I")
        self._wake = asyncio.Event()

    @property
    def seq(self) -> int:
        """The number of the latest change (0 before the first)."""
        return self._seq

    def __len__(self) -> int:
        """Entries in the log, superseded ones included (its memory bound: at most twice the twins, plus
        a constant)."""
        return len(self._log_seq)

    def subscribe(self, after: int | None = None) -> Subscription:
        """A subscription that sees every change published from now on, or (``after``) every twin changed
        after that cursor too (each once, its latest change)."""
        return Subscription(self, self._seq if after is None else after)

    def _next(self) -> int:
        self._seq = max(self._seq + 1, self._clock()) if self._clock is not None else self._seq + 1
        return self._seq

    def _origin(self, origin: str) -> int:
        try:
            return self._origins.index(origin)
        except ValueError:
            self._origins.append(origin)
            return len(self._origins) - 1

    def _id(self, twin: str) -> int:
        tid = self._names.intern_twin(twin)
        if tid >= len(self._latest):
            grow = max(tid + 1, 2 * len(self._latest)) - len(self._latest)
            self._latest.frombytes(bytes(8 * grow))
            self._origin_of.frombytes(bytes(2 * grow))
        return tid

    def _set(self, tid: int, seq: int, origin: int) -> None:
        if self._latest[tid] == 0:
            self._live += 1
        self._latest[tid] = seq
        self._origin_of[tid] = origin
        self._log_seq.append(seq)
        self._log_twin.append(tid)

    def seed(self, twins: Iterable[str], saved: Path | None = None) -> int:
        """Starts the feed with ``twins`` (call once, before any publish): each at its number from
        ``saved`` (a clean shutdown's :meth:`save`, deleted here once read), else at a fresh one. Returns
        how many twins got a fresh number."""
        known: dict[str, int] = {}
        if saved is not None and saved.exists():
            try:
                known = _load(saved.read_bytes())
                saved.unlink()
            except (OSError, ValueError, struct.error) as exc:
                log.warning("change feed: ignoring %s (%s): every twin counts as changed", saved, exc)
                known = {}
        present = set(twins)
        entries = sorted((seq, twin) for twin, seq in known.items() if twin in present)
        if entries:
            self._seq = max(self._seq, entries[-1][0])
        fresh = sorted(present - known.keys())
        entries += [(self._next(), twin) for twin in fresh]
        restart = self._origin(RESTART)
        for seq, twin in entries:
            self._set(self._id(twin), seq, restart)
        return len(fresh)

    def save(self, path: Path) -> None:
        """Writes every twin's latest number (at a clean shutdown, after the last publish)."""
        parts = []
        for tid, seq in enumerate(self._latest):
            twin = self._names.twin_name(tid) if seq else None
            if twin is not None and len(name := twin.encode()) < 1 << 16:
                parts.append(_ENTRY.pack(seq, len(name)) + name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(path, b"".join(parts))
        except OSError as exc:
            raise storage_error(f"cannot write {path}", exc) from exc

    def publish(self, twins: Iterable[str], origin: str) -> None:
        first, code = self._seq, self._origin(origin)
        for twin in twins:
            self._set(self._id(twin), self._next(), code)
        if self._seq == first:
            return
        if len(self._log_seq) > 2 * self._live + _SLACK:
            self._compact()
        self._wake.set()  # wakes every waiting subscription at once; later waiters wait on a fresh event
        self._wake = asyncio.Event()

    def _compact(self) -> None:
        """Drops superseded entries from the log."""
        latest, seqs, tids = self._latest, array("Q"), array("I")
        for seq, tid in zip(self._log_seq, self._log_twin, strict=True):
            if latest[tid] == seq:
                seqs.append(seq)
                tids.append(tid)
        self._log_seq, self._log_twin = seqs, tids

    def read(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        """Up to ``limit`` changes after change ``cursor``, oldest first, each twin once (its latest change),
        and the cursor to read on from."""
        seqs, tids, latest = self._log_seq, self._log_twin, self._latest
        out: list[Change] = []
        i = bisect.bisect_right(seqs, cursor)
        while i < len(seqs) and len(out) < limit:
            seq, tid = seqs[i], tids[i]
            if latest[tid] == seq:  # not superseded by a later change of the same twin
                twin = self._names.twin_name(tid)
                if twin is not None:
                    out.append(Change(seq, twin, self._origins[self._origin_of[tid]]))
            cursor = seq
            i += 1
        return out, cursor

    async def changed_after(self, cursor: int) -> None:
        """Returns once a change after ``cursor`` has been published."""
        while self._seq <= cursor:
            await self._wake.wait()


class Subscription:
    """One watcher's position in the feed."""

    def __init__(self, feed: ChangeFeed, cursor: int) -> None:
        self._feed = feed
        self.cursor = cursor  # the last change read

    async def next_batch(self, limit: int) -> list[Change]:
        """The next changes, oldest first, at most ``limit``; waits while there are none."""
        while True:
            await self._feed.changed_after(self.cursor)
            batch, self.cursor = self._feed.read(self.cursor, limit)
            if batch:
                return batch


def _load(data: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    pos = 0
    while pos < len(data):
        seq, length = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        name = data[pos : pos + length]
        if len(name) != length:
            raise ValueError("truncated")
        out[name.decode()] = seq
        pos += length
    return out


class FeedKeeper:
    """The feed's numbers across a clean restart: seeds the feed when built, saves it when stopped (put it
    among a node's services so it stops after everything that publishes)."""

    name = "feed"

    def __init__(self, feed: ChangeFeed, path: Path, twins: Iterable[str]) -> None:
        self.feed, self.path = feed, path
        self.fresh = feed.seed(twins, path)

    async def __aenter__(self) -> FeedKeeper:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.feed.save(self.path)
