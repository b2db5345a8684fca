"""The other server-streaming methods (WatchAnomalies ...) as server-sent events, served by their gRPC
implementations unchanged: each writes to a :class:`SseContext`, the part of a gRPC servicer context a
stream uses (peer, write, abort, code, done callbacks). An event's ``id`` is the reply's resume field
(``RESUME``: reply field -> request field), and ``Last-Event-ID`` sets the request's, so an
``EventSource`` resumes by itself.

Headers go out with the first event, or after ``HEADERS_AFTER_S`` without one, so a refusal before the
stream starts (a cap, a bad filter) is still an ordinary JSON error. A stream the implementation ends with
RESOURCE_EXHAUSTED (a client that stopped reading) has its connection dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from drsdtp.api.http.errors import ApiHttpError, from_drsdtp
from drsdtp.errors import DrsdtpError

__all__ = ["RESUME", "SseContext", "serve_stream"]

HEADERS_AFTER_S = 0.2
RETRY_MS = 2000
# For each stream: (the reply field that is its resume cursor, the request field that resumes after it).
RESUME: dict[str, tuple[str, str]] = {"WatchAnomalies": ("seq", "after_seq")}
Stream = Callable[[Any, Any], Awaitable[None]]


class _Aborted(Exception):
    pass


class SseContext:
    def __init__(self, request: web.Request, peer: str, cursor_field: str) -> None:
        self.request = request
        self._peer = peer
        self.cursor_field = cursor_field
        self.response: web.StreamResponse | None = None
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self._done: list[Callable[[Any], None]] = []

    # ----- the servicer context's surface the stream implementations use ---------------------------------
    def peer(self) -> str:
        return f"{self._peer}:0"  # as gRPC names a peer: with a port (callers are named without it)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._done.append(callback)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code, self.details = code, details
        raise _Aborted

    async def write(self, message: Message) -> None:
        await self.prepare()
        assert self.response is not None
        cursor = getattr(message, self.cursor_field, 0) if self.cursor_field else 0
        data = json_format.MessageToJson(message, indent=None)
        head = f"id: {cursor}\n" if cursor else ""
        await self.response.write(f"{head}data: {data}\n\n".encode())

    # ----- ours -------------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        if self.response is None:
            self.response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await self.response.prepare(self.request)
            await self.response.write(f"retry: {RETRY_MS}\n\n".encode())

    def done(self) -> None:
        for callback in self._done:
            callback(self)


async def serve_stream(
    request: web.Request, name: str, message: Message, stream: Stream, peer: str
) -> tuple[web.StreamResponse, grpc.StatusCode]:
    """Runs ``stream`` for ``message``; the response and the code the stream ended with."""
    cursor_field, resume_field = RESUME.get(name, ("", ""))
    last = request.headers.get("Last-Event-ID", "").strip()
    if last and resume_field:
        try:
            setattr(message, resume_field, int(last))
        except ValueError:
            raise ApiHttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name}: the Last-Event-ID header {last!r} is not a cursor (a number)",
                field=resume_field,
            ) from None
    context = SseContext(request, peer, cursor_field)
    task = asyncio.ensure_future(stream(message, context))
    try:
        done, _ = await asyncio.wait([task], timeout=HEADERS_AFTER_S)
        if not done:
            await context.prepare()
        try:
            await task
        except _Aborted:
            pass
        except DrsdtpError as exc:
            error = from_drsdtp(name, exc)
            context.code, context.details = error.code, error.message
    finally:
        task.cancel()
        context.done()
    code = context.code or grpc.StatusCode.OK
    if context.response is None:
        if code != grpc.StatusCode.OK:
            raise ApiHttpError(code, context.details or f"{name} refused")
        await context.prepare()
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and request.transport is not None:
        request.transport.abort()  # the client stopped reading: nothing more reaches it
    assert context.response is not None
    return context.response, code
