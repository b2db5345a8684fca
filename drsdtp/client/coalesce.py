"""Concurrent writes of one client sent as one request.

A node spends about as much CPU on a request's own work (the gRPC call, its admission, commit, audit
record and reply: measured 1.3-1.5 ms) as on 1,000 ops, so concurrent writes are cheaper as one request.
The writes made in one step of the event loop go together, at the end of that step (a lone write is not
delayed beyond it), as one request up to ``max_bytes`` (the node's bound on a request); with ``in_flight``
requests out, further writes wait for one to finish and go joined with the others waiting. Writers that
await each other's group commit get their replies in one step and write again in the next, so they keep
joining by themselves. Only plain writes are joined: no idempotency key, columns, creates, deletes or
``if_version``, and the same ack, actor and reason (the part of the request after the twins, which is then
the same bytes). A request of joined writes is audited as one record, as a batch is.

The node checks a request whole before it applies anything, so when it refuses a joined request
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED, RESOURCE_EXHAUSTED) each write is
sent again alone and gets its own answer and error, naming places in its own request. Any other failure
(the node unreachable, the deadline, INTERNAL) leaves it unknown what was applied: every joined write
gets that error, as a single request would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import grpc

from drsdtp.client.errors import ApiError
from drsdtp.wire.v1 import api_pb2

__all__ = ["MAX_REQUEST_BYTES", "WriteCoalescer"]

#: The node's bound on a request's size (``drsdtp.api.server.MAX_REQUEST_BYTES``).
MAX_REQUEST_BYTES: Final = 64 * 1024

#: Refusals that a node gives before it applies anything: each joined write is then sent alone.
REFUSED_WHOLE: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

#: Sends a serialized WriteRequest within ``timeout`` seconds.
Send = Callable[[bytes, float], Awaitable[api_pb2.WriteReply]]


@dataclass(slots=True)
class _Write:
    twins: bytes
    deadline: float  # time.monotonic()
    done: asyncio.Future[api_pb2.WriteReply]


@dataclass(slots=True)
class _Batch:
    rest: bytes
    size: int
    writes: list[_Write] = field(default_factory=list)


class WriteCoalescer:
    """Joins concurrent plain writes (see the module's docstring); ``in_flight`` requests at most are out at
    once; every write waits in one batch at most."""

    def __init__(self, send: Send, *, in_flight: int = 4, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight: must be at least 1, got {in_flight}")
        self._send = send
        self.in_flight = in_flight
        self.max_bytes = max_bytes
        self._busy = 0
        self._scheduled = False
        self._waiting: deque[_Batch] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Requests sent (a write sent again alone counts again), and writes made.
        self.requests = 0
        self.writes = 0

    async def write(self, twins: bytes, rest: bytes, timeout: float) -> api_pb2.WriteReply:
        """Sends the write (its twins part and the rest of its request) alone or joined with others."""
        self.writes += 1
        loop = asyncio.get_running_loop()
        done: asyncio.Future[api_pb2.WriteReply] = loop.create_future()
        self._join(_Write(twins, time.monotonic() + timeout, done), rest)
        if not self._scheduled:  # at the end of this step of the loop: what this step wrote goes together
            self._scheduled = True
            loop.call_soon(self._next)
        return await done

    async def _post(self, data: bytes, timeout: float) -> api_pb2.WriteReply:
        self.requests += 1
        return await self._send(data, timeout)

    def _join(self, w: _Write, rest: bytes) -> None:
        for batch in self._waiting:
            if batch.rest == rest and batch.size + len(w.twins) <= self.max_bytes:
                batch.writes.append(w)
                batch.size += len(w.twins)
                return
        self._waiting.append(_Batch(rest, len(rest) + len(w.twins), [w]))

    def _next(self) -> None:
        self._scheduled = False
        while self._busy < self.in_flight and self._waiting:
            batch = self._waiting.popleft()
            batch.writes = [w for w in batch.writes if not w.done.done()]  # callers gone meanwhile
            if not batch.writes:
                continue
            self._busy += 1
            task = asyncio.create_task(self._send_batch(batch))
            self._tasks.add(task)  # held until done (the loop keeps only weak references)
            task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batch: _Batch) -> None:
        try:
            writes = batch.writes
            if len(writes) == 1:
                await self._alone(writes[0], batch.rest)
                return
            timeout = max(min(w.deadline for w in writes) - time.monotonic(), 0.001)
            try:
                reply = await self._post(b"".join(w.twins for w in writes) + batch.rest, timeout)
            except ApiError as exc:
                if exc.code not in REFUSED_WHOLE:
                    for w in writes:
                        _settle(w, error=exc)
                    return
                # Nothing was applied: each write alone, for its own answer and error.
                await asyncio.gather(*(self._alone(w, batch.rest) for w in writes))
                return
            for w in writes:
                _settle(w, reply=reply)
        except BaseException as exc:  # cancelled (the client closing) or a failure not from the node
            for w in batch.writes:
                _settle(w, error=exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._busy -= 1
            self._next()

    async def _alone(self, w: _Write, rest: bytes) -> None:
        if w.done.done():
            return
        try:
            reply = await self._post(w.twins + rest, max(w.deadline - time.monotonic(), 0.001))
        except Exception as exc:
            _settle(w, error=exc)
        else:
            _settle(w, reply=reply)


def _settle(
    w: _Write, *, reply: api_pb2.WriteReply | None = None, error: BaseException | None = None
) -> None:
    if w.done.done():  # its caller went away
        return
    if isinstance(error, asyncio.CancelledError):
        w.done.cancel()
    elif error is not None:
        w.done.set_exception(error)
    else:
        assert reply is not None
        w.done.set_result(reply)
