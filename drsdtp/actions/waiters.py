"""Waiting for commands: every waiter of a node shares one subscription to the change feed.

A waiter (``WaitCommand``, ``IssueCommand`` with a wait, the CLI's ``--wait``, rules and tests in process)
is a future keyed by its command's record twin. One task reads the feed, once per committed batch, and
resolves the futures of the records that changed, each record read once however many wait on it. With a
subscription per waiter, as before, every batch woke every waiter to scan it: 16 clients each waiting
cost 16 wake-ups and 16 scans per batch, where this costs one scan and a dict look-up per changed twin.

The feed announces a change once it is durable (``Node.commit``), so a waiter is answered with a state that
a crash cannot take back. The task runs while someone waits and ``LINGER_S`` after the last waiter left (it
stops at the first batch of changes after that, or at :meth:`CommandWaiters.close`): commands one after
another, each waited for, share one task and one subscription instead of starting and cancelling one each.
The number of waiters is bounded by what bounds the requests (``limits.api_max_requests``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol

from drsdtp.actions.record import CommandId, CommandRecord, record_twin

__all__ = ["ChangeSource", "ChangeStream", "CommandWaiters", "Until"]

log = logging.getLogger(__name__)

Until = Callable[[CommandRecord], bool]
_Entry = tuple[CommandId, Until, "asyncio.Future[CommandRecord]"]  # a waiter: command, predicate, future
BATCH = 4096
LINGER_S = 2.0  # the task outlives the last waiter this long (see the module doc)


class _Named(Protocol):
    @property
    def twin(self) -> str: ...


class ChangeStream(Protocol):
    async def next_batch(self, limit: int) -> Sequence[_Named]: ...


class ChangeSource(Protocol):
    """The node's change feed (``drsdtp.api.feed.ChangeFeed`` fits): which twins changed, from anywhere."""

    def subscribe(self, after: int | None = None) -> ChangeStream: ...


class CommandWaiters:
    def __init__(
        self,
        changes: ChangeSource,
        read: Callable[[CommandId], CommandRecord | None],
        linger_s: float = LINGER_S,
    ) -> None:
        self._changes = changes
        self._read = read
        # Per record twin: (command, its predicate, the future it resolves) for each waiter.
        self._waiting: dict[str, list[_Entry]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._idle_since = 0.0  # monotonic: when the last waiter left
        self._linger_s = linger_s  # 0 once closed: the task stops with the last waiter
        self.resolved = 0  # waiters answered by a change (not by their timeout)

    @property
    def running(self) -> bool:
        """Whether the shared task is up (someone waits, or the last waiter left within the linger)."""
        return self._pump is not None

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    async def wait(self, command: CommandId, timeout_s: float, until: Until) -> CommandRecord | None:
        """The record once ``until`` holds for it, or as it is at the timeout."""
        self._start()  # subscribed before the read: a change in between is not missed
        record = self._read(command)
        if (record is not None and until(record)) or timeout_s <= 0:
            self._stop_if_idle()
            return record
        enlisted = self._enlist(command, until)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    return await enlisted[1][2]
            return self._read(command)
        finally:
            self._discharge([enlisted])

    async def wait_many(
        self, commands: Sequence[CommandId], timeout_s: float, until: Until
    ) -> list[CommandRecord | None]:
        """Each record once ``until`` holds for every one of them, or as they are at the timeout (a command
        this node does not hold: None): :meth:`follow` to its end, then every record read as it is now."""
        async with contextlib.aclosing(self.follow(commands, timeout_s, until)) as followed:
            async for _ in followed:
                pass  # each answer is read again below, as committed once all are in
        return [self._read(command) for command in commands]

    async def follow(
        self, commands: Sequence[CommandId], timeout_s: float, until: Until
    ) -> AsyncGenerator[tuple[int, CommandRecord | None], None]:
        """``(position in commands, record)`` for each command as soon as ``until`` holds for it (in the
        order they get there; one already there, or not held here: None, at once), then at the timeout
        each one left as it is: one answer per position. Streamed :meth:`wait_many`: one future each, one
        wake-up per committed batch however many it answers, no task or timer per command."""
        self._start()  # subscribed before the reads: a change in between is not missed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        ready: deque[CommandId] = deque()
        wake = asyncio.Event()

        def resolved(command: CommandId, future: asyncio.Future[CommandRecord]) -> None:
            if not future.cancelled():
                future.exception()  # a failed feed (logged by the pump): answered as it is
                ready.append(command)
                wake.set()

        places: dict[CommandId, list[int]] = {}
        for i, command in enumerate(commands):
            places.setdefault(command, []).append(i)
        entries: list[tuple[str, _Entry]] = []
        try:
            for command in places:
                record = self._read(command)
                if record is None or until(record) or timeout_s <= 0:
                    ready.append(command)
                    continue
                entries.append(self._enlist(command, until))
                entries[-1][1][2].add_done_callback(functools.partial(resolved, command))
            while places:
                if not ready:
                    wake.clear()
                    remaining = deadline - loop.time()
                    if remaining > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(remaining):
                                await wake.wait()
                    if not ready:  # the timeout: the rest as they are
                        ready.extend(places)
                while ready:
                    command = ready.popleft()
                    record = self._read(command)  # as committed now
                    for i in places.pop(command, ()):
                        yield i, record
        finally:
            self._discharge(entries)

    def _enlist(self, command: CommandId, until: Until) -> tuple[str, _Entry]:
        """A new waiter for ``command``, keyed by its record twin (where the pump looks it up)."""
        twin, entry = record_twin(command), (command, until, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(twin, []).append(entry)
        return twin, entry

    def _discharge(self, entries: Sequence[tuple[str, _Entry]]) -> None:
        """Waiters no longer waited for, answered or not: their futures cancelled (a no-op once done), gone
        from their twins' lists; the task stops (or starts its linger) if nobody is left."""
        for twin, entry in entries:
            entry[2].cancel()
            waiters = self._waiting.get(twin, [])
            with contextlib.suppress(ValueError):
                waiters.remove(entry)
            if not waiters:
                self._waiting.pop(twin, None)
        self._stop_if_idle()

    def _start(self) -> None:
        if self._pump is None:
            stream = self._changes.subscribe()
            self._pump = asyncio.get_running_loop().create_task(self._run(stream), name="command waiters")

    def close(self) -> None:
        """Stops the task now if nobody waits (at once with the last waiter from here on)."""
        self._linger_s = 0.0
        self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        if self._waiting or self._pump is None:
            return
        if self._linger_s <= 0:
            self._pump.cancel()
            self._pump = None
        else:
            self._idle_since = time.monotonic()

    async def _run(self, stream: ChangeStream) -> None:
        try:
            while True:
                for change in await stream.next_batch(BATCH):
                    waiters = self._waiting.get(change.twin)
                    if waiters:
                        self._resolve(waiters)
                if not self._waiting and time.monotonic() - self._idle_since >= self._linger_s:
                    self._pump = None
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave waiters hanging until their timeouts
            log.exception("command waiters: the change feed failed")
            for waiters in self._waiting.values():
                for _, _, future in waiters:
                    if not future.done():
                        future.set_exception(exc)
            self._pump = None

    def _resolve(self, waiters: list[_Entry]) -> None:
        record = self._read(waiters[0][0])  # one record, read once for all of its waiters
        if record is None:
            return
        for _, until, future in waiters:
            if future.done():
                continue
            try:
                done = until(record)
            except Exception as exc:  # the waiter's own predicate: its error is its answer
                future.set_exception(exc)
                continue
            if done:
                self.resolved += 1
                future.set_result(record)
