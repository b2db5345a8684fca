"""Change notifications for watchers (the API's Watch stream, the terminal demo).

A slow watcher never blocks the node and never grows without bound: each subscriber keeps the set of twins
changed since it last looked (coalesced, so its backlog is at most the number of twins), and reads the
twins' current state when it catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable


class Subscription:
    """One watcher's pending changes: twin id -> origin of the latest change."""

    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed
        self._pending: dict[str, str] = {}
        self._ready = asyncio.Event()

    def push(self, twins: Iterable[str], origin: str) -> None:
        for t in twins:
            self._pending[t] = origin
        if self._pending:
            self._ready.set()

    async def changes(self) -> AsyncIterator[dict[str, str]]:
        """Yields batches of {twin: origin} as they accumulate."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, {}
            if batch:
                yield batch

    def close(self) -> None:
        self._feed.unsubscribe(self)


class ChangeFeed:
    """Fan-out of "these twins changed" to every subscription."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, twins: Iterable[str], origin: str) -> None:
        names = list(twins)
        if names:
            for sub in self._subs:
                sub.push(names, origin)
