"""A watch that an application can leave running: it reconnects and resumes from its cursor by itself."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from types import TracebackType
from typing import Final, Self

import grpc
import grpc.aio

from drsdtp.client.errors import ApiError, from_rpc_error
from drsdtp.client.retry import RetryPolicy
from drsdtp.client.types import Change
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

__all__ = ["MAX_CHANGES", "Watch"]

log = logging.getLogger(__name__)

# Changes the node may put in one message (it caps this itself; a node older than v2.1 sends one a message).
MAX_CHANGES: Final = 512

# Ends of a stream after which a new one resumes where it left off: the node went away or restarted, the
# stream was cut (a slow reader, a limit on streams), or the connection broke.
_RESUMABLE: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
    }
)


class Watch:
    """An async iterator of :class:`Change`; ``cursor`` is the position to resume after (also in another
    process: pass it as ``since``). Close it with :meth:`aclose` or ``async with``.

    A change is delivered at least once: after a reconnect, twins changed since the cursor are sent again
    with their current state (a twin that changed several times while away is sent once)."""

    def __init__(
        self,
        stub: api_pb2_grpc.TwinApiStub,
        request: api_pb2.WatchRequest,
        metadata: tuple[tuple[str, str], ...],
        retry: RetryPolicy,
        target: str,
        since: int | None = None,
        reconnect: bool = True,
    ) -> None:
        self._stub = stub
        self._request = request
        self._metadata = metadata
        self._retry = retry
        self._target = target
        self._reconnect = reconnect
        self.cursor: int | None = since
        #: How many times the stream was opened again after it ended.
        self.reconnects = 0
        self._call: grpc.aio.UnaryStreamCall[api_pb2.WatchRequest, api_pb2.TwinChange] | None = None
        self._closed = False
        # The changes of the message being read, handed out one a call without resuming the generator
        # (a message carries up to MAX_CHANGES); the cursor moves as each is handed out.
        self._ready: deque[Change] = deque()
        self._gen = self._messages()

    def __aiter__(self) -> AsyncIterator[Change]:
        return self

    async def __anext__(self) -> Change:
        ready = self._ready
        if not ready:
            if self._closed:
                raise StopAsyncIteration
            ready.extend(await self._gen.__anext__())
        change = ready.popleft()
        if change.cursor:
            self.cursor = change.cursor
        return change

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Ends the stream."""
        self._closed = True
        self._ready.clear()
        if self._call is not None:
            self._call.cancel()  # a read pending in another task ends: its iteration stops
        if not getattr(self._gen, "ag_running", False):
            await self._gen.aclose()

    def _open(self) -> grpc.aio.UnaryStreamCall[api_pb2.WatchRequest, api_pb2.TwinChange]:
        req = api_pb2.WatchRequest()
        req.CopyFrom(self._request)
        if self.cursor is not None:
            req.resume_after = self.cursor
        call = self._stub.Watch(req, metadata=self._metadata)
        self._call = call
        return call

    async def _messages(self) -> AsyncGenerator[list[Change], None]:
        """Each message's changes (a message of one change, as v1 sends it, is that change)."""
        delays: Iterator[float] = self._retry.forever()
        while not self._closed:
            call = self._open()
            failure: ApiError | None = None
            try:
                async for message in call:
                    delays = self._retry.forever()  # a stream that delivered starts the backoff anew
                    yield [Change.from_pb(one) for one in message.changes or (message,)]
            except asyncio.CancelledError:
                if self._closed:  # aclose() cancelled the call under a read
                    return
                raise
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                failure = from_rpc_error(exc, "Watch", self._target)
                if not self._reconnect or exc.code() not in _RESUMABLE:
                    raise failure from None
            finally:
                call.cancel()
            if not self._reconnect:
                return  # the node ended the stream
            delay = next(delays)
            log.info(
                "watch on %s ended (%s); resuming after %s in %.2f s",
                self._target,
                failure or "end of stream",
                self.cursor,
                delay,
            )
            await asyncio.sleep(delay)
            self.reconnects += 1
