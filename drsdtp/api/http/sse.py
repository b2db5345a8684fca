"""Watch over server-sent events: the same stream as on gRPC (:meth:`WatchService.stream`, the same gate,
filters and stall bound), each message one event whose data is the ``TwinChange`` in protobuf's JSON
mapping and whose ``id`` is its cursor (snapshot messages before the last carry none). A browser's
``EventSource`` reconnects by itself with ``Last-Event-ID``: that header (or ``resume_after``) resumes
after the cursor, missing nothing the node still holds, also across a node restart.

A refusal before the stream starts (bad filter, too many streams) is an ordinary JSON error. A client that
does not read within ``limits.api_watch_stall_s`` is cut off: its connection is closed (it could not read
a final event anyway); it resumes from the last id it got.
"""

from __future__ import annotations

import collections
import logging

import grpc
from aiohttp import web

from drsdtp.api.http.errors import ApiHttpError, from_drsdtp
from drsdtp.api.services.watch import Stalled, WatchService
from drsdtp.api.watch_limits import WatchRefused
from drsdtp.errors import DrsdtpError
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.wire.v1 import api_pb2

__all__ = ["WatchEvents"]

log = logging.getLogger(__name__)

LAST_EVENT_ID = "Last-Event-ID"
RETRY_MS = 2000  # how long EventSource waits before reconnecting


class WatchEvents:
    def __init__(
        self, watches: WatchService, counts: collections.Counter[tuple[str, ...]], warn: RateLimitedLog
    ) -> None:
        self.watches = watches
        self.counts = counts
        self._warn = warn

    async def serve(
        self, request: web.Request, message: api_pb2.WatchRequest, caller: str
    ) -> web.StreamResponse:
        """``caller``: who the per-caller cap counts (as on gRPC: a proven identity, else the address)."""
        last = request.headers.get(LAST_EVENT_ID, "").strip()
        if last:
            try:
                message.resume_after = int(last)
            except ValueError:
                raise ApiHttpError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Watch: the {LAST_EVENT_ID} header {last!r} is not a cursor (a number)",
                    field="resume_after",
                ) from None
        code = grpc.StatusCode.OK
        try:
            try:
                self.watches.check(message)
                release = self.watches.admit(caller)
            except DrsdtpError as exc:
                raise from_drsdtp("Watch", exc) from None
            except WatchRefused as exc:
                raise ApiHttpError(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.detail) from None
            try:
                response, stalled = await self._stream(request, message, caller)
            finally:
                release()
            if stalled:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
            return response
        except ApiHttpError as exc:
            code = exc.code
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED  # the client went away (the only way a stream ends)
            raise
        finally:
            self.counts[("Watch", code.name)] += 1

    async def _stream(
        self, request: web.Request, message: api_pb2.WatchRequest, caller: str
    ) -> tuple[web.StreamResponse, bool]:
        """The response, and whether the client was cut off for not reading."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
            }
        )
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())

        async def write(data: bytes, cursor: int) -> None:
            head = f"id: {cursor}\ndata: ".encode() if cursor else b"data: "
            await response.write(head + data + b"\n\n")

        try:
            await self.watches.stream(message, caller, write, "json")
        except Stalled:
            # The client is not reading: nothing more can reach it. Drop the connection (and what is
            # queued for it) rather than wait on it.
            if request.transport is not None:
                request.transport.abort()
            return response, True
        raise AssertionError("unreachable: a stream ends only by its client or a stall")
