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

(v2.1) ``max_changes`` > 1 lets one message carry many changes (``TwinChange.changes``, joined from the
changes' cached bytes, at most BATCH_BYTES): one gRPC write per stream per feed step instead of one per
change, which was the fan-out's bound (measured: ~1M writes/s of per-message overhead for 100 watchers at
10k changes/s). What a view (the filters, encoding and batch size) is sent after a feed position is built
once (:meth:`WatchService.chunk`) and shared by every stream of that view at that position, so the node's
work per change does not grow with the streams. A message of one change is sent as v1 sends it.

The stream itself (:meth:`WatchService.stream`) is transport-neutral: it writes each message through a
coroutine the face passes (gRPC's ``context.write``, an HTTP server-sent-events write) in the encoding the
face asks for (protobuf bytes, or protobuf's canonical JSON), under the same gate and stall bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import grpc
import grpc.aio

from drsdtp._core import Store
from drsdtp.api.caller import current_caller
from drsdtp.api.errors import naming
from drsdtp.api.feed import RESTART, ChangeFeed
from drsdtp.api.visibility import TwinFilter, in_scope
from drsdtp.api.watch_limits import WatchGate, WatchRefused, caller_of
from drsdtp.api.write_plan import visible
from drsdtp.errors import DrsdtpError
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.protobytes import LENGTH, length_prefixed, tag
from drsdtp.wire.v1 import api_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message as ProtoMessage

__all__ = ["POSITION_KEY", "Encoding", "Stalled", "View", "WatchService", "WriteMessage"]

log = logging.getLogger(__name__)

POSITION_KEY = "drsdtp-watch-position"
SNAPSHOT_PAGE = 512  # twin ids held at a time while the snapshot is sent
CHANGE_BATCH = 512  # changes read from the feed at a time, and at most in one message
BATCH_BYTES = 16 << 10  # a message of several changes stops growing past this (one change may be bigger)
ENCODED_CACHE_BYTES = 4 << 20  # encoded changes shared between streams, at most this many bytes
CHUNK_CACHE_BYTES = 4 << 20  # messages shared between streams of the same view, at most this many bytes
_CHANGES_TAG = tag(api_pb2.TwinChange, "changes", LENGTH)  # from the descriptor: a renumbering follows

TwinMessage = Callable[[Store, str, Sequence[str]], api_pb2.Twin]
WriteMessage = Callable[[bytes, int], Awaitable[object]]  # (message, its cursor)
Encoding = Literal["proto", "json"]
Message = tuple[bytes, str, int]  # (encoded message, the position it takes the stream to, its cursor)
ORIGINS = ("local", "ingest", "peer")


class Chunk(NamedTuple):
    """The messages a view is sent for the feed's changes after one cursor, and the cursor after them."""

    messages: tuple[Message, ...]
    cursor: int
    size: int
    head: int  # the feed's latest change when it was built


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
        # What streams of one view are sent from one feed position, built by the first of them to get there
        # (bounded; oldest dropped first): the fan-out costs one gRPC write per stream, not a feed read,
        # filter and lookup per change per stream.
        self._chunks: dict[tuple[View, int], Chunk] = {}
        self._chunk_bytes = 0

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
            data = change.SerializeToString() if encoding == "proto" else _json(change)
        size = len(data or b"")
        if cursor and size <= ENCODED_CACHE_BYTES // 4:  # snapshot messages (cursor 0) are per stream
            while self._encoded and self._encoded_bytes + size > ENCODED_CACHE_BYTES:
                self._encoded_bytes -= len(self._encoded.pop(next(iter(self._encoded))) or b"")
            self._encoded[key] = data
            self._encoded_bytes += size
        return data

    def chunk(self, view: View, cursor: int) -> Chunk:
        """The messages for ``view`` after feed position ``cursor`` (at most CHANGE_BATCH changes)."""
        key, head = (view, cursor), self.feed.seq
        hit = self._chunks.get(key)
        if hit is not None and (hit.head == head or hit.cursor < hit.head):
            return hit
        # Built anew when it reached the feed's head and the feed has moved on since: a stream that fell
        # behind (its client read slowly, or the streams before it took long) gets everything since its
        # cursor at once, each twin once, in as few messages as fit, instead of a message per feed step
        # with the changes later steps superseded. Streams at the same cursor share the new chunk.
        changes, after = self.feed.read(cursor, CHANGE_BATCH)
        packer, messages = _Packer(view), []
        for change in changes:
            if view.origins is not None and change.origin not in view.origins:
                continue
            if not view.match(change.twin) or change.twin not in self.store:
                continue
            data = self.encoded(change.twin, change.origin, change.seq, view.fields, view.encoding)
            if data is not None and (full := packer.add((data, f"change:{change.seq}", change.seq))):
                messages.append(full)
        if (last := packer.flush()) is not None:
            messages.append(last)
        # Its size counts a constant for the entry itself: chunks with no message (all filtered out) are
        # bounded too.
        chunk = Chunk(tuple(messages), after, 256 + sum(len(m[0]) for m in messages), head)
        if hit is not None:
            del self._chunks[key]
            self._chunk_bytes -= hit.size
        if chunk.size <= CHUNK_CACHE_BYTES // 4:
            while self._chunks and self._chunk_bytes + chunk.size > CHUNK_CACHE_BYTES:
                self._chunk_bytes -= self._chunks.pop(next(iter(self._chunks))).size
            self._chunks[key] = chunk
            self._chunk_bytes += chunk.size
        return chunk

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


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    """What a stream asks for, apart from where it starts: streams with equal views at the same feed
    position are sent the same messages, built once (:meth:`WatchService.chunk`)."""

    prefix: str
    wanted: frozenset[str]  # bounded by the request size limit
    fields: tuple[str, ...]
    origins: frozenset[str] | None
    encoding: Encoding
    max_changes: int  # per message, 1..CHANGE_BATCH
    # The caller's twin scopes (None: every twin): streams share messages only with the same scopes.
    scopes: tuple[str, ...] | None
    within: TwinFilter | None = dataclasses.field(compare=False)  # a scoped caller's twins only

    @classmethod
    def of(cls, request: api_pb2.WatchRequest, encoding: Encoding) -> View:
        # A filter on origins still lets a resume's "restart" changes through: they may be any of them.
        origins = frozenset(request.origins) | {RESTART} if request.origins else None
        within = in_scope()
        return cls(
            request.prefix,
            frozenset(request.twin_ids),
            tuple(request.fields),
            origins,
            encoding,
            max(1, min(request.max_changes, CHANGE_BATCH)),
            None if within is None else tuple(sorted(set(current_caller().scopes))),
            within,
        )

    def match(self, twin: str) -> bool:
        return (
            (not self.wanted or twin in self.wanted)
            and twin.startswith(self.prefix)
            and (self.within is None or self.within(twin))
        )


def _join(group: Sequence[Message], encoding: Encoding) -> Message:
    """One message carrying ``group`` (each already encoded as a TwinChange) in ``TwinChange.changes``:
    built from the bytes, since a repeated message field is its elements' bytes, each tagged."""
    if len(group) == 1:
        return group[0]
    if encoding == "proto":
        data = b"".join(_CHANGES_TAG + length_prefixed(d) for d, _, _ in group)
    else:
        data = b'{"changes":[' + b",".join(d for d, _, _ in group) + b"]}"
    return data, group[-1][1], max(c for _, _, c in group)


class _Packer:
    """Groups encoded changes into messages of at most ``limit`` changes and about BATCH_BYTES."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.group: list[Message] = []
        self.size = 0

    def add(self, piece: Message) -> Message | None:
        """Adds ``piece``; returns a full message to send first, if the piece does not fit beside it."""
        full = None
        if self.group and (
            len(self.group) >= self.view.max_changes or self.size + len(piece[0]) > BATCH_BYTES
        ):
            full = self.flush()
        self.group.append(piece)
        self.size += len(piece[0])
        return full

    def flush(self) -> Message | None:
        if not self.group:
            return None
        message = _join(self.group, self.view.encoding)
        self.group, self.size = [], 0
        return message


class _Stream:
    def __init__(
        self, service: WatchService, request: api_pb2.WatchRequest, write: WriteMessage, encoding: Encoding
    ) -> None:
        self.service = service
        self.write = write
        self.view = View.of(request, encoding)
        self.resume = request.resume_after if request.HasField("resume_after") else None
        self.position = ""
        # The stall bound without a timer per write (one per write was a timer created and cancelled per
        # message per stream: ~8% of a write's cost at 10k writes/s): when the write in flight started,
        # and one timer that checks it at most every stall_s, re-armed only while writes go on.
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._writing_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cut = False

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _run(self) -> None:
        service = self.service
        # The position before the snapshot: a change made meanwhile is sent again.
        cursor = service.feed.seq if self.resume is None else self.resume
        if self.resume is None:
            await self.send_snapshot(cursor)
        while True:
            await service.feed.changed_after(cursor)
            chunk = service.chunk(self.view, cursor)
            for message in chunk.messages:
                await self.send(message)
            cursor = chunk.cursor

    async def send_snapshot(self, start: int) -> None:
        """The matching twins' current state; the last message carries ``start``: resume from there."""
        packer = _Packer(self.view)
        twins = self.snapshot()
        twin = next(twins, None)
        while twin is not None:
            after = next(twins, None)
            cursor = start if after is None else 0
            data = self.service.encoded(twin, "snapshot", cursor, self.view.fields, self.view.encoding)
            if data is not None and (full := packer.add((data, f"snapshot:{twin}", cursor))) is not None:
                await self.send(full)
            twin = after
        if (last := packer.flush()) is not None:
            await self.send(last)

    def snapshot(self) -> Iterator[str]:
        """The matching twins in id order, read from the store a page of ids at a time."""
        store, view = self.service.store, self.view
        if view.wanted:
            yield from (t for t in sorted(view.wanted) if t.startswith(view.prefix) and visible(store, t))
            return
        after: str | None = None
        while page := store.twins_page(after, view.prefix, SNAPSHOT_PAGE):
            yield from (t for t in page if visible(store, t) and (view.within is None or view.within(t)))
            after = page[-1]

    async def send(self, message: Message) -> None:
        data, position, cursor = message
        self._writing_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(
                self._writing_since + self.service.gate.limits.stall_s, self._check
            )
        try:
            await self.write(data, cursor)
        except asyncio.CancelledError:
            if self._cut and self._task is not None:
                self._task.uncancel()  # our own cancellation, not the caller's: the stream ends as stalled
                raise _Stalled from None
            raise
        finally:
            self._writing_since = None
        self.position = position

    def _check(self) -> None:
        """Cuts the stream off if the write in flight was not taken within stall_s; else checks again
        when it would be due (no write in flight: the next write arms the timer)."""
        self._timer = None
        since = self._writing_since
        if since is None:
            return
        due = since + self.service.gate.limits.stall_s
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
        elif self._task is not None and not self._cut:
            self._cut = True
            self._task.cancel()


def _json(message: ProtoMessage) -> bytes:
    """A change as JSON, for a stream that asked for it: json_format is imported at the first (idle RSS)."""
    from google.protobuf import json_format

    return json_format.MessageToJson(message, indent=None).encode()
