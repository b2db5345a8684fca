"""A bounded FIFO between an adapter and the core, weighted by readings, with backpressure."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["ReadingBuffer"]

T = TypeVar("T")


class ReadingBuffer(Generic[T]):
    """``put`` waits while ``limit`` readings are queued; ``take`` returns everything up to a weight.

    Waiting in ``put`` is the backpressure: the adapter stops reading its socket, so a broker holds QoS 1
    messages (flow control by unacknowledged messages), a serial port fills its kernel buffer (counted later
    as sequence gaps) and a Modbus poll loop slows down. An item heavier than ``limit`` is still admitted
    into an empty buffer, so one huge batch cannot deadlock.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._items: deque[tuple[T, int]] = deque()
        self._weight = 0
        self._has_items = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()

    @property
    def weight(self) -> int:
        return self._weight

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T, weight: int) -> None:
        while self._items and self._weight + weight > self.limit:
            self._has_space.clear()
            await self._has_space.wait()
        self._items.append((item, weight))
        self._weight += weight
        self._has_items.set()

    async def take(self, max_weight: int) -> list[T]:
        """At least one item; then more while the total weight stays within ``max_weight``."""
        while not self._items:
            self._has_items.clear()
            await self._has_items.wait()
        out: list[T] = []
        total = 0
        while self._items:
            item, weight = self._items[0]
            if out and total + weight > max_weight:
                break
            self._items.popleft()
            out.append(item)
            total += weight
        self._weight -= total
        self._has_space.set()
        return out
