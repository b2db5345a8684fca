"""Snapshots, rollback and the audit trail of a running node (seed 003).

The history package's :class:`SnapshotStore` and :class:`AuditLog` under the data dir, with their file I/O
off the event loop and one operation at a time (the audit chain is appended in order). A rollback's writes
are committed like any other local write: durable before the call returns, then replicated, so peers roll
back too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from drsdtp._core import Store
from drsdtp.api.node import AuditEntry
from drsdtp.errors import InvalidValueError, StorageError
from drsdtp.history.audit import AuditLog, AuditRecord, Change, Verification, Via
from drsdtp.history.snapshots import RollbackResult, SnapshotInfo, SnapshotStore

log = logging.getLogger(__name__)

AUDIT_FLUSH_S = 0.5  # application writes' audit lines are fsynced this long after the first unflushed one

Commit = Callable[[bytes, Sequence[str], str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CommandEvent:
    """One line of a command's in the audit trail (``ref``: the command id)."""

    actor: str
    twin: str
    changes: Mapping[str, Change]
    reason: str
    via: Via
    ref: str


class SnapshotService:
    """An async context manager; the audit log is flushed and closed on exit."""

    name = "snapshots"

    def __init__(self, data_dir: Path, store: Store, commit: Commit, *, per_twin: int) -> None:
        self.audit = AuditLog(data_dir / "audit")
        self.store = SnapshotStore(data_dir / "snapshots", store, self.audit, max_per_twin=per_twin)
        self._commit = commit
        self._lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        # Awaited before the trail is read: writers that queue their lines (the executor's command events)
        # get them in first, so a read shows every event that happened before it.
        self.before_read: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        if self._flush_task is not None:  # one it scheduled for appends made meanwhile: close flushes them
            self._flush_task.cancel()
        async with self._lock:
            await asyncio.to_thread(self.audit.close)

    async def audit_writes(self, entries: Sequence[AuditEntry]) -> None:
        """Appends one application request's writes to the audit trail now, as one record naming each twin
        (a process crash keeps it); one fsync follows within :data:`AUDIT_FLUSH_S` for every write in that
        time."""
        async with self._lock:
            by_caller: dict[tuple[str, str], list[AuditEntry]] = {}
            for e in entries:  # one request has one caller and reason: one record
                by_caller.setdefault((e.actor, e.reason), []).append(e)
            for (actor, reason), part in by_caller.items():
                self.audit.append_request(
                    actor=actor, reason=reason, via="api", twins=[(e.twin, e.action, e.changes) for e in part]
                )
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_soon(), name="audit-flush")

    async def audit_request(self, actor: str, reason: str, twins_json: str) -> None:
        """:meth:`audit_writes` for a request whose record's twins part is already written."""
        async with self._lock:
            self.audit.append_twins(actor=actor, reason=reason, via="api", twins_json=twins_json)
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_soon(), name="audit-flush")

    async def audit_commands(self, events: Sequence[CommandEvent]) -> None:
        """Commands' events (issued, cancelled, a state reached), in order, under one hold of the lock;
        flushed as application writes are."""
        async with self._lock:
            for e in events:
                self.audit.append(
                    actor=e.actor, twin=e.twin, changes=e.changes, reason=e.reason, via=e.via,
                    action="command", ref=e.ref,
                )  # fmt: skip
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_soon(), name="audit-flush")

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(AUDIT_FLUSH_S)
            async with self._lock:
                point = self.audit.flush_point()
            # The fsyncs (the log, its directory, the head: 7-25 ms on this disk) run without the lock:
            # held, they stalled every write that reached its audit meanwhile (measured: 0.5% of writes,
            # waiting 6-22 ms, the durable round trip's p99). Appends made meanwhile get the next flush.
            if point is not None:
                await asyncio.to_thread(self.audit.sync, point)
        except StorageError as exc:
            log.error("audit: cannot flush application writes: %s", exc)
            return  # the next write tries again
        finally:
            self._flush_task = None
        if self.audit.dirty:
            self._flush_task = asyncio.create_task(self._flush_soon(), name="audit-flush")

    async def take(self, twin: str, reason: str, actor: str) -> SnapshotInfo:
        _application_twin(twin)
        async with self._lock:
            return await asyncio.to_thread(self.store.snapshot, twin, reason, actor)

    async def listing(self, twin: str) -> list[SnapshotInfo]:
        return await asyncio.to_thread(self.store.list_snapshots, twin)

    async def rollback(self, twin: str, snapshot_id: str, actor: str, reason: str) -> RollbackResult:
        """Returns once the restored values are durable (and on their way to the peers). Shielded: a
        caller that gives up does not leave a rollback applied but not logged, or logged but not audited."""
        _application_twin(twin)
        return await asyncio.shield(self._rollback(twin, snapshot_id, actor, reason))

    async def _rollback(self, twin: str, snapshot_id: str, actor: str, reason: str) -> RollbackResult:
        async with self._lock:
            prepared = await asyncio.to_thread(self.store.prepare_rollback, twin, snapshot_id, actor)
            # Applied and appended to the log in one step of the loop: nothing (a gossip catch-up) can read
            # the restored values before the log holds them.
            result = self.store.apply_rollback(prepared)
            if result.delta:
                await self._commit(result.delta, [twin], "local")
            await asyncio.to_thread(self.store.audit_rollback, result, actor, reason)
        return result

    async def audit_recovery(self, actor: str, reason: str, entries: list[str]) -> None:
        """Records in the audit trail that ``actor`` acknowledged these write-ahead log recoveries."""

        def record() -> None:
            self.audit.record(actor=actor, twin="", changes={}, reason=reason, via="api", action="recovery",
                              ref=",".join(entries))  # fmt: skip
            self.audit.flush()

        async with self._lock:
            await asyncio.to_thread(record)

    async def read_audit(
        self, twin: str | None, start_ms: int | None, end_ms: int | None, actor: str | None
    ) -> tuple[list[AuditRecord], Verification]:
        """Matching records, oldest first, and a verification of the whole chain."""
        for queued in self.before_read:
            await queued()

        def read() -> tuple[list[AuditRecord], Verification]:
            return self.audit.records(twin, start_ms, end_ms, actor=actor), self.audit.verify()

        async with self._lock:
            return await asyncio.to_thread(read)


def _application_twin(twin: str) -> None:
    """The node's own twins (``_``-prefixed: membership and the like) are replicated bookkeeping: rolling one
    back would rewrite cluster state, so they are neither snapshotted nor rolled back."""
    if twin.startswith("_"):
        raise InvalidValueError(f"twin {twin!r} is internal to the node; it has no snapshots")
