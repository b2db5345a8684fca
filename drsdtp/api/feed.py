"""Change notifications for watchers (the API's Watch stream).

One log shared by every watcher: the feed numbers each change, keeps per twin the number and origin of its
latest change, and keeps the changes in order. A watcher is only a cursor (the number of the last change it
read), so a watcher that stops reading costs the node nothing however far behind it falls, and the node
never blocks on it. Changes to the same twin coalesce: a watcher that was away sees each changed twin once,
then reads its current state. The log holds one live entry per twin plus superseded entries, which are
dropped once they outnumber the live ones, so it is bounded by the number of twins (as the store is).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["Change", "ChangeFeed", "Subscription"]

# Superseded entries tolerated beyond the live ones before the log is compacted (amortises compaction).
_SLACK = 1024


class Change(NamedTuple):
    seq: int  # its number in the feed: every change up to it was read once this one is
    twin: str
    origin: str  # "local", "ingest", "peer"


class ChangeFeed:
    """Fan-out of "these twins changed" to every subscription, in one shared log."""

    def __init__(self) -> None:
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

    def subscribe(self) -> Subscription:
        """A subscription that sees every change published from now on."""
        return Subscription(self, self._seq)

    def publish(self, twins: Iterable[str], origin: str) -> None:
        latest, log, first = self._latest, self._log, self._seq
        for twin in twins:
            self._seq += 1
            latest[twin] = (self._seq, origin)
            log.append((self._seq, twin))
        if self._seq == first:
            return
        if len(log) > 2 * len(latest) + _SLACK:
            self._log = [(seq, twin) for seq, twin in log if latest[twin][0] == seq]
        self._wake.set()  # wakes every waiting subscription at once; later waiters wait on a fresh event
        self._wake = asyncio.Event()

    def read(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        """Up to ``limit`` changes after change ``cursor``, oldest first, each twin once (its latest change),
        and the cursor to read on from."""
        log, latest = self._log, self._latest
        out: list[Change] = []
        i = bisect.bisect_right(log, cursor, key=lambda entry: entry[0])
        while i < len(log) and len(out) < limit:
            seq, twin = log[i]
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
