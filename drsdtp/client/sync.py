"""The blocking client: :class:`Client`, the asyncio client run on a private event loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError as FutureCancelled
from types import TracebackType
from typing import Any, Self, TypeVar

from drsdtp.client.aio import DEFAULT_TARGET, AsyncClient
from drsdtp.client.channel import Tls
from drsdtp.client.commands import Arg, Command, CommandOutcome, CommandSpec
from drsdtp.client.retry import RetryPolicy
from drsdtp.client.types import (
    Audit,
    Change,
    HealthReport,
    History,
    Insight,
    RollbackResult,
    SnapshotInfo,
    Status,
    Twin,
    TwinList,
    WriteResult,
)
from drsdtp.client.watch import Watch
from drsdtp.client.writes import Columns, Scalar, TwinWrite

__all__ = ["Client", "SyncWatch"]

T = TypeVar("T")


class _Loop:
    """An event loop on a daemon thread that runs the asyncio client's coroutines for a blocking caller."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="drsdtp-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


#: Changes a blocking watch takes from its loop at once, of those already received (one thread hop for them
#: all: one a change took 40 µs of CPU each, measured draining 5,000).
SYNC_BATCH = 512


class SyncWatch:
    """A blocking iterator of :class:`Change` over a :class:`~drsdtp.client.watch.Watch`."""

    def __init__(self, loop: _Loop, watch: Watch) -> None:
        self._loop = loop
        self._watch = watch
        self._taken: deque[Change] = deque()  # from the loop, not yet handed out
        self._cursor = watch.cursor  # after the last change handed out (the watch's runs ahead by _taken)

    @property
    def cursor(self) -> int | None:
        return self._cursor

    @property
    def reconnects(self) -> int:
        return self._watch.reconnects

    def __iter__(self) -> Iterator[Change]:
        return self

    def __next__(self) -> Change:
        taken = self._taken
        if not taken:
            try:
                taken.extend(self._loop.run(self._watch._next_changes(SYNC_BATCH)))
            except StopAsyncIteration:
                raise StopIteration from None
        change = taken.popleft()
        if change.cursor:
            self._cursor = change.cursor
        return change

    def close(self) -> None:
        self._taken.clear()
        try:
            self._loop.run(self._watch.aclose())
        except FutureCancelled:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Client:
    """A node's application API for blocking code (scripts, threads, notebooks)::

        with Client("127.0.0.1:7401") as client:
            print(client.get("room-1").values)

    The same methods, arguments and errors as :class:`~drsdtp.client.aio.AsyncClient`; it is safe to
    share between threads."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        actor: str = "",
        channel_options: Sequence[tuple[str, object]] = (),
    ) -> None:
        self._loop = _Loop()

        async def make() -> AsyncClient:  # a grpc.aio channel belongs to the loop it was made on
            return AsyncClient(
                target,
                token=token,
                tls=tls,
                timeout=timeout,
                retry=retry,
                actor=actor,
                channel_options=channel_options,
            )

        try:
            self._client = self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise

    @property
    def target(self) -> str:
        return self._client.target

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._client.close())
        self._loop.stop()

    def call(
        self, method: str, message: Any, *, timeout: float | None = None, retry: bool | None = None
    ) -> Any:
        return self._loop.run(self._client.call(method, message, timeout=timeout, retry=retry))

    def status(self, *, timeout: float | None = None) -> Status:
        return self._loop.run(self._client.status(timeout=timeout))

    def list_twins(
        self,
        *,
        model: str = "",
        scope: str = "",
        prefix: str = "",
        limit: int = 0,
        timeout: float | None = None,
    ) -> TwinList:
        return self._loop.run(
            self._client.list_twins(model=model, scope=scope, prefix=prefix, limit=limit, timeout=timeout)
        )

    def get(self, twin_id: str, fields: Sequence[str] = (), *, timeout: float | None = None) -> Twin:
        return self._loop.run(self._client.get(twin_id, fields, timeout=timeout))

    def history(
        self,
        twin_id: str,
        field: str,
        *,
        since_ms: int,
        until_ms: int | None = None,
        resolution: str = "auto",
        limit: int = 0,
        timeout: float | None = None,
    ) -> History:
        return self._loop.run(
            self._client.history(
                twin_id,
                field,
                since_ms=since_ms,
                until_ms=until_ms,
                resolution=resolution,
                limit=limit,
                timeout=timeout,
            )
        )

    def insight(
        self, twin_id: str, kind: str = "health", *, timeout: float | None = None, **params: object
    ) -> Insight:
        return self._loop.run(self._client.insight(twin_id, kind, timeout=timeout, **params))

    def health(
        self, twin_ids: Sequence[str] = (), *, model: str = "", timeout: float | None = None
    ) -> HealthReport:
        return self._loop.run(self._client.health(twin_ids, model=model, timeout=timeout))

    def write(
        self, writes: Sequence[TwinWrite], *, columns: Columns | None = None, **options: Any
    ) -> WriteResult:
        return self._loop.run(self._client.write(writes, columns=columns, **options))

    def report(
        self, twin_id: str, values: Mapping[str, Scalar], *, if_version: int | None = None, **options: Any
    ) -> int:
        return self._loop.run(self._client.report(twin_id, values, if_version=if_version, **options))

    def desire(
        self, twin_id: str, values: Mapping[str, Scalar], *, if_version: int | None = None, **options: Any
    ) -> int:
        return self._loop.run(self._client.desire(twin_id, values, if_version=if_version, **options))

    def clear_desired(self, twin_id: str, *fields: str, if_version: int | None = None, **options: Any) -> int:
        return self._loop.run(self._client.clear_desired(twin_id, *fields, if_version=if_version, **options))

    def tag(
        self,
        twin_id: str,
        field: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        if_version: int | None = None,
        **options: Any,
    ) -> int:
        return self._loop.run(
            self._client.tag(twin_id, field, add=add, remove=remove, if_version=if_version, **options)
        )

    def increment(self, twin_id: str, field: str, by: int = 1, **options: Any) -> int:
        return self._loop.run(self._client.increment(twin_id, field, by, **options))

    def create(
        self,
        twin_id: str,
        *,
        model: str = "",
        scope: str = "",
        metadata: Mapping[str, str] | None = None,
        values: Mapping[str, Scalar] | None = None,
        **options: Any,
    ) -> int:
        return self._loop.run(
            self._client.create(
                twin_id, model=model, scope=scope, metadata=metadata, values=values, **options
            )
        )

    def delete(self, twin_id: str, *, if_version: int | None = None, **options: Any) -> int:
        return self._loop.run(self._client.delete(twin_id, if_version=if_version, **options))

    def snapshot(self, twin_id: str, reason: str, *, timeout: float | None = None) -> SnapshotInfo:
        return self._loop.run(self._client.snapshot(twin_id, reason, timeout=timeout))

    def snapshots(self, twin_id: str, *, timeout: float | None = None) -> tuple[SnapshotInfo, ...]:
        return self._loop.run(self._client.snapshots(twin_id, timeout=timeout))

    def rollback(
        self, twin_id: str, snapshot_id: str, reason: str, *, timeout: float | None = None
    ) -> RollbackResult:
        return self._loop.run(self._client.rollback(twin_id, snapshot_id, reason, timeout=timeout))

    def audit(
        self,
        twin_id: str = "",
        *,
        since_ms: int = 0,
        until_ms: int = 0,
        actor: str = "",
        limit: int = 0,
        timeout: float | None = None,
    ) -> Audit:
        return self._loop.run(
            self._client.audit(
                twin_id, since_ms=since_ms, until_ms=until_ms, actor=actor, limit=limit, timeout=timeout
            )
        )

    def issue_command(
        self,
        twin_id: str,
        action: str,
        value: Arg | None = None,
        *,
        args: Sequence[Arg] = (),
        idempotency_key: str | None = None,
        deadline_s: float = 0.0,
        reason: str = "",
        wait: float = 0.0,
        timeout: float | None = None,
    ) -> Command:
        return self._loop.run(
            self._client.issue_command(
                twin_id, action, value, args=args, idempotency_key=idempotency_key,
                deadline_s=deadline_s, reason=reason, wait=wait, timeout=timeout,
            )
        )  # fmt: skip

    def issue_commands(
        self, commands: Sequence[CommandSpec], *, wait: float = 0.0, timeout: float | None = None
    ) -> tuple[CommandOutcome, ...]:
        return self._loop.run(self._client.issue_commands(commands, wait=wait, timeout=timeout))

    def wait_commands(
        self, command_ids: Sequence[str], *, wait: float = 30.0, timeout: float | None = None
    ) -> tuple[CommandOutcome, ...]:
        return self._loop.run(self._client.wait_commands(command_ids, wait=wait, timeout=timeout))

    def follow_commands(
        self, command_ids: Sequence[str], *, wait: float = 30.0, timeout: float | None = None
    ) -> Iterator[tuple[int, CommandOutcome]]:
        stream = self._client.follow_commands(command_ids, wait=wait, timeout=timeout)

        async def step() -> tuple[int, CommandOutcome]:
            return await anext(stream)

        try:
            while True:
                try:
                    yield self._loop.run(step())
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run(stream.aclose())

    def command(self, command_id: str, *, timeout: float | None = None) -> Command:
        return self._loop.run(self._client.command(command_id, timeout=timeout))

    def watch(
        self,
        twins: Sequence[str] = (),
        *,
        prefix: str = "",
        fields: Sequence[str] = (),
        origins: Sequence[str] = (),
        since: int | None = None,
        reconnect: bool = True,
        share: bool = True,
    ) -> SyncWatch:
        async def made() -> Watch:  # on the loop's thread, which the shared streams live on
            return self._client.watch(
                twins,
                prefix=prefix,
                fields=fields,
                origins=origins,
                since=since,
                reconnect=reconnect,
                share=share,
            )

        return SyncWatch(self._loop, self._loop.run(made()))
