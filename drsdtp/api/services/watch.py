"""One Watch stream: the matching twins' current state (the snapshot), then their changes as they apply.

What a stream costs the node is bounded whatever its client does. gRPC takes one write at a time and
completes it only once HTTP/2 flow control let it through (measured: a client that stops reading stalls the
stream once its flow-control window is full), so a stream holds one message in flight, plus one page of
twin ids during the snapshot; changes wait in the shared feed (:mod:`drsdtp.api.feed`), where a watcher is
only a cursor. A write the client does not take within ``limits.api_watch_stall_s`` ends the stream with
RESOURCE_EXHAUSTED, saying why and what was sent last (also as trailing metadata ``drsdtp-watch-position``:
``snapshot:<twin id>``, every matching twin up to it sent, or ``change:<n>``, every change up to the
feed's n-th sent), so that a later resumable Watch has a position to start from.

(v2) Every change carries its ``cursor`` (its number in the feed: an HLC stamp, see
:mod:`drsdtp.api.feed`); the last snapshot message carries the feed position the snapshot started from.
``resume_after`` replaces the snapshot with every matching twin changed after that cursor, also across a
node restart. Filters: twin ids, prefix, fields (only those are sent; a twin with none of them is skipped),
origins (kinds of change: local, ingest, peer; a resume may also send "restart", a change from before the
node restarted). Deleted twins are left out of a snapshot; their deletion is sent as a change.

The stream itself (:meth:`WatchService.stream`) is transport-neutral: it writes each message through a
coroutine the face passes (gRPC's ``context.write``, an HTTP server-sent-events write) in the encoding the
face asks for (protobuf bytes, or protobuf's canonical JSON), under the same gate and stall bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Literal

import grpc
import grpc.aio
from google.protobuf import json_format

from drsdtp._core import Store
from drsdtp.api.errors import naming
from drsdtp.api.feed import RESTART, ChangeFeed
from drsdtp.api.visibility import in_scope
from drsdtp.api.watch_limits import WatchGate, WatchRefused, caller_of
from drsdtp.api.write_plan import visible
from drsdtp.errors import DrsdtpError
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.wire.v1 import api_pb2

__all__ = ["POSITION_KEY", "Encoding", "Stalled", "WatchService", "WriteMessage"]

log = logging.getLogger(__name__)

POSITION_KEY = "drsdtp-watch-position"
SNAPSHOT_PAGE = 512  # twin ids held at a time while the snapshot is sent
CHANGE_BATCH = 512  # changes read from the feed at a time
ENCODED_CACHE_BYTES = 4 << 20  # encoded changes shared between streams, at most this many bytes

TwinMessage = Callable[[Store, str, Sequence[str]], api_pb2.Twin]
WriteMessage = Callable[[bytes, int], Awaitable[object]]  # (message, its cursor)
Encoding = Literal["proto", "json"]
ORIGINS = ("local", "ingest", "peer")


class Stalled(Exception):
    """The client did not take a write within ``limits.api_watch_stall_s``; ``detail`` says so and what
    was sent last, ``position`` is that last position (``snapshot:<twin>`` or ``change:<n>``)."""

    def __init__(self, detail: str, position: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.position = position


class _Stalled(Exception):
    """The client did not take a write in time (raised inside a stream)."""


class WatchService:
    """Serves the Watch calls of one node, admitted by a :class:`WatchGate`."""

    def __init__(self, store: Store, feed: ChangeFeed, gate: WatchGate, twin_message: TwinMessage) -> None:
        self.store = store
        self.feed = feed
        self.gate = gate
        self.twin_message = twin_message
        self._warn = RateLimitedLog(log, "API Watch")
        # One change encoded once for every stream that sends it (bounded; oldest dropped first). A twin
        # that changes again gets a new feed number, so an entry never hides a newer state.
        self._encoded: dict[tuple[str, str, int, tuple[str, ...], Encoding], bytes | None] = {}
        self._encoded_bytes = 0

    def encoded(
        self, twin: str, origin: str, cursor: int, fields: Sequence[str], encoding: Encoding = "proto"
    ) -> bytes | None:
        """The change as bytes (None: the twin has none of ``fields``)."""
        # The origin is part of the message: a snapshot's last message carries the cursor of the twin's
        # latest change, which another stream may have been sent as a "local" or "peer" change.
        key = (twin, origin, cursor, tuple(fields), encoding)
        if cursor and key in self._encoded:
            return self._encoded[key]
        twin_msg = self.twin_message(self.store, twin, fields)
        data: bytes | None = None
        if not fields or twin_msg.fields:
            change = api_pb2.TwinChange(twin=twin_msg, origin=origin, cursor=cursor)
            data = (
                change.SerializeToString()
                if encoding == "proto"
                else json_format.MessageToJson(change, indent=None).encode()
            )
        size = len(data or b"")
        if cursor and size <= ENCODED_CACHE_BYTES // 4:  # snapshot messages (cursor 0) are per stream
            while self._encoded and self._encoded_bytes + size > ENCODED_CACHE_BYTES:
                self._encoded_bytes -= len(self._encoded.pop(next(iter(self._encoded))) or b"")
            self._encoded[key] = data
            self._encoded_bytes += size
        return data

    def check(self, request: api_pb2.WatchRequest) -> None:
        """Refuses a request no stream can serve (INVALID_ARGUMENT naming the field)."""
        bad = [o for o in request.origins if o not in ORIGINS]
        if bad:
            raise naming(
                DrsdtpError(f"origins: unknown {', '.join(map(repr, bad))} (known: {', '.join(ORIGINS)})"),
                "origins",
            )

    def admit(self, caller: str) -> Callable[[], None]:
        """A stream slot for ``caller`` (see :meth:`WatchGate.admit`), the refusal logged (rate-limited)."""
        try:
            return self.gate.admit(caller)
        except WatchRefused as exc:
            self._warn.warn(f"refused-{exc.reason}", "refused a stream: %s", exc.detail)
            raise

    async def stream(
        self, request: api_pb2.WatchRequest, caller: str, write: WriteMessage, encoding: Encoding
    ) -> None:
        """Runs one admitted stream until the client goes away (its write raises or the task is
        cancelled); raises :class:`Stalled` when a write is not taken in time."""
        stream = _Stream(self, request, write, encoding)
        try:
            await stream.run()
        except _Stalled:
            self.gate.cut_off += 1
            detail = (
                f"Watch cut off: a write was not taken within limits.api_watch_stall_s "
                f"({self.gate.limits.stall_s:g} s): the client is not reading; "
                f"last sent: {stream.position or 'nothing'}"
            )
            self._warn.warn("stalled", "%s: %s", caller, detail)
            raise Stalled(detail, stream.position) from None

    async def serve(self, request: api_pb2.WatchRequest, context: grpc.aio.ServicerContext) -> None:
        self.check(request)  # the guard maps the error
        caller = caller_of(context.peer(), context.auth_context())
        try:
            release = self.admit(caller)
        except WatchRefused as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.detail)
            return  # abort raises
        context.add_done_callback(lambda _: release())  # when gRPC is done with the call, not before
        try:
            await self.stream(request, caller, lambda data, _: context.write(data), "proto")
        except Stalled as exc:
            context.set_trailing_metadata(((POSITION_KEY, exc.position),))
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(exc.detail)
            # Returning rather than aborting: abort waits until the status is sent, which is behind the
            # unread data. gRPC sends the status when the client reads on, or drops it with the connection.


class _Stream:
    def __init__(
        self, service: WatchService, request: api_pb2.WatchRequest, write: WriteMessage, encoding: Encoding
    ) -> None:
        self.service = service
        self.write = write
        self.encoding: Encoding = encoding
        self.prefix = request.prefix
        self.wanted = frozenset(request.twin_ids)  # bounded by the request size limit
        self.fields = list(request.fields)
        # A filter on origins still lets a resume's "restart" changes through: they may be any of them.
        self.origins = frozenset(request.origins) | {RESTART} if request.origins else None
        self.resume = request.resume_after if request.HasField("resume_after") else None
        self.position = ""
        self.within = in_scope()  # a scoped caller's stream carries its twins only

    def match(self, twin: str) -> bool:
        return (
            (not self.wanted or twin in self.wanted)
            and twin.startswith(self.prefix)
            and (self.within is None or self.within(twin))
        )

    async def run(self) -> None:
        store = self.service.store
        # Subscribed before the snapshot: a change made meanwhile is sent again.
        sub = self.service.feed.subscribe(self.resume)
        if self.resume is None:
            start, last = sub.cursor, None
            for twin in self.snapshot():
                if last is not None:
                    await self.send(last, "snapshot", f"snapshot:{last}", 0)
                last = twin
            if last is not None:  # the last one says where the snapshot started: resume from there
                await self.send(last, "snapshot", f"snapshot:{last}", start)
        while True:
            for change in await sub.next_batch(CHANGE_BATCH):
                if self.origins is not None and change.origin not in self.origins:
                    continue
                if self.match(change.twin) and change.twin in store:
                    await self.send(change.twin, change.origin, f"change:{change.seq}", change.seq)

    def snapshot(self) -> Iterator[str]:
        """The matching twins in id order, read from the store a page of ids at a time."""
        store = self.service.store
        if self.wanted:
            yield from (t for t in sorted(self.wanted) if t.startswith(self.prefix) and visible(store, t))
            return
        after: str | None = None
        while page := store.twins_page(after, self.prefix, SNAPSHOT_PAGE):
            yield from (t for t in page if visible(store, t) and (self.within is None or self.within(t)))
            after = page[-1]

    async def send(self, twin: str, origin: str, position: str, cursor: int) -> None:
        message = self.service.encoded(twin, origin, cursor, self.fields, self.encoding)
        if message is None:
            return  # none of the fields asked for
        try:
            async with asyncio.timeout(self.service.gate.limits.stall_s):
                await self.write(message, cursor)
        except TimeoutError:
            raise _Stalled from None
        self.position = position
