"""Delivers the outbox: one worker per target, oldest first, each retried with full-jitter exponential
backoff (the :class:`drsdtp.supervisor.Backoff` timing) until the target takes it. A notification for a
target that no longer exists in the config is dropped at start and counted."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drsdtp.errors import UnknownTwinError
from drsdtp.notify.outbox import Outbox
from drsdtp.notify.senders import deliver
from drsdtp.notify.targets import NotifyTarget
from drsdtp.supervisor import Backoff

__all__ = ["NotifyService", "TargetStats"]

log = logging.getLogger(__name__)

Deliver = Callable[[NotifyTarget, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class TargetStats:
    sent: int = 0
    failures: int = 0
    last_error: str = ""


class NotifyService:
    """The node's :class:`drsdtp.rules.service.Notifier`; an async context manager owning its workers."""

    name = "notify"

    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        directory: Path,
        *,
        max_items: int,
        max_bytes: int,
        backoff: Backoff,
        send: Deliver = deliver,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.outbox = Outbox(directory, max_items=max_items, max_bytes=max_bytes)
        self.backoff = backoff
        self._send = send
        self.stats = {name: TargetStats() for name in self.targets}
        self.orphaned = 0
        self._wake = {name: asyncio.Event() for name in self.targets}
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        for item in list(self.outbox.items.values()):
            if item.target not in self.targets:
                self.orphaned += 1
                log.warning(
                    "notification %s for unknown target %r dropped", item.event.get("id"), item.target
                )
                self.outbox.done(item.seq)

    async def enqueue(self, target: str, event: dict[str, Any]) -> None:
        if target not in self.targets:
            raise UnknownTwinError(f"no notify target {target!r}")
        await asyncio.to_thread(self.outbox.put, target, event)
        self._wake[target].set()

    async def __aenter__(self) -> NotifyService:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._tasks = [group.create_task(self._worker(n), name=f"notify-{n}") for n in self.targets]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        for task in self._tasks:
            task.cancel()
        try:
            await group.__aexit__(None, None, None)
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None

    async def _worker(self, name: str) -> None:
        target, stats, wake = self.targets[name], self.stats[name], self._wake[name]
        attempt = 0
        while True:
            item = self.outbox.pending(name)
            if item is None:
                wake.clear()
                await wake.wait()
                continue
            try:
                await self._send(target, item.event)
            except Exception as exc:  # DeliveryError, or a bug in a sender: retried, never fatal
                stats.failures += 1
                stats.last_error = str(exc)
                delay = random.uniform(0, self.backoff.ceiling(attempt))
                attempt += 1
                log.info("notification %s to %s not delivered (%s); again in %.2fs",
                         item.event.get("id"), name, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            attempt = 0
            stats.sent += 1
            await asyncio.to_thread(self.outbox.done, item.seq)
