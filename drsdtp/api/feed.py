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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

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


class ChangeFeed:
    """Fan-out of "these twins changed" to every subscription, in one shared log."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock
        self._seq = 0
        self._latest: dict[str, tuple[int, str]] = {}  # twin -> (seq, origin) of its latest change
        self._log: list[tuple[int, str]] = []  # (seq, twin), seq increasing; superseded entries are skipped
        self._wake = asyncio.Event()

    @property
    def seq(self) -> int:
        """The number of the latest change (0 before the first)."""
        return self._seq

    def __len__(self) -> int:
        """Entries in the log, superseded ones included (its memory bound: at most twice the twins, plus
        a constant)."""
        return len(self._log)

    def subscribe(self, after: int | None = None) -> Subscription:
        """A subscription that sees every change published from now on, or (``after``) every twin changed
        after that cursor too (each once, its latest change)."""
        return Subscription(self, self._seq if after is None else after)

    def _next(self) -> int:
        self._seq = max(self._seq + 1, self._clock()) if self._clock is not None else self._seq + 1
        return self._seq

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
        for seq, twin in entries:
            self._latest[twin] = (seq, RESTART)
        self._log = entries
        return len(fresh)

    def save(self, path: Path) -> None:
        """Writes every twin's latest number (at a clean shutdown, after the last publish)."""
        body = b"".join(
            _ENTRY.pack(seq, len(name)) + name
            for twin, (seq, _) in self._latest.items()
            if len(name := twin.encode()) < 1 << 16
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(path, body)
        except OSError as exc:
            raise storage_error(f"cannot write {path}", exc) from exc

    def publish(self, twins: Iterable[str], origin: str) -> None:
        latest, entries, first = self._latest, self._log, self._seq
        for twin in twins:
            seq = self._next()
            latest[twin] = (seq, origin)
            entries.append((seq, twin))
        if self._seq == first:
            return
        if len(entries) > 2 * len(latest) + _SLACK:
            self._log = [(seq, twin) for seq, twin in entries if latest[twin][0] == seq]
        self._wake.set()  # wakes every waiting subscription at once; later waiters wait on a fresh event
        self._wake = asyncio.Event()

    def read(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        """Up to ``limit`` changes after change ``cursor``, oldest first, each twin once (its latest change),
        and the cursor to read on from."""
        entries, latest = self._log, self._latest
        out: list[Change] = []
        i = bisect.bisect_right(entries, cursor, key=lambda entry: entry[0])
        while i < len(entries) and len(out) < limit:
            seq, twin = entries[i]
            current, origin = latest[twin]
            if current == seq:  # not superseded by a later change of the same twin
                out.append(Change(seq, twin, origin))
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
