"""The thin gRPC shell around the protocol: one bidirectional stream per peer, raw bytes both ways.

Messages are ``PeerMessage`` bytes, parsed here (not by gRPC) so a malformed one is counted and answered
with a clear status instead of an internal error. A :class:`Session` runs one stream: a reader that hands
each message to :class:`~drsdtp.gossip.protocol.AntiEntropy` and schedules persistence, an acker that sends
each cumulative Ack once the deltas before it are durable, and a writer that sends control replies first
and then whatever the protocol has for the peer within its window.

No timer sits on the way of a delta. A local delta once durable (``Replicator.on_local_delta``) and a
received one relayed to the other peers wake every stream's writer, which sends it in the same loop step
(batched with whatever else is due, up to ``window_bytes`` unacknowledged per peer: beyond that the peer
is slow and sending waits for its acks; should the shared log shed what it still lacks, a digest catch-up
repairs it). An ack is sent as soon as the deltas before it are durable, one per run of received
messages. The writer's ``tick_s`` wait serves the timers only: retransmission after
``retransmit_after_s`` without ack progress, the periodic repair every ``repair_interval_s``, clock
probes every ``probe_interval_s``, and the retry of a payload refused for clock skew.

Channels carry explicit caps (``grpc.max_*_message_length``), keepalive (a silent peer is detected in
``keepalive_time_s + keepalive_timeout_s``), and a short reconnect backoff; reconnecting itself is the
reconnect supervisor's job (:mod:`drsdtp.supervisor`), with a fresh channel per attempt.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from drsdtp.config import Address
from drsdtp.core import MergedReadings
from drsdtp.gossip.errors import PeerError, ProtocolViolation, Refusal
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.link_hook import ShapedStream
from drsdtp.gossip.protocol import AntiEntropy, Inbound, PeerLink
from drsdtp.gossip.stats import ReplicatorStats
from drsdtp.gossip.throttle import ReceiveThrottle
from drsdtp.wire.v1 import peer_pb2
from drsdtp.wire.v1.peer_pb2 import PeerMessage

__all__ = [
    "METHOD",
    "SERVICE",
    "ClientStream",
    "ServerStream",
    "Session",
    "SessionHost",
    "channel_options",
    "server_options",
    "status_for",
]

log = logging.getLogger(__name__)

_SERVICE_DESCRIPTOR = peer_pb2.DESCRIPTOR.services_by_name["Peer"]
SERVICE: Final = _SERVICE_DESCRIPTOR.full_name  # drsdtp.wire.v1.Peer
METHOD: Final = f"/{SERVICE}/{_SERVICE_DESCRIPTOR.methods_by_name['Gossip'].name}"
_ACK_QUEUE: Final = 1024  # received messages awaiting persistence before the reader pauses

_STATUS: Final = {
    Refusal.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.VERSION: grpc.StatusCode.FAILED_PRECONDITION,
    Refusal.IDENTITY: grpc.StatusCode.PERMISSION_DENIED,
    Refusal.SELF: grpc.StatusCode.FAILED_PRECONDITION,
    Refusal.CLOCK_SKEW: grpc.StatusCode.FAILED_PRECONDITION,
    Refusal.DUPLICATE: grpc.StatusCode.ALREADY_EXISTS,
    Refusal.LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(reason: Refusal) -> grpc.StatusCode:
    return _STATUS[reason]


def _common_options(limits: GossipLimits) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", limits.grpc_message_bytes),
        ("grpc.max_receive_message_length", limits.grpc_message_bytes),
        ("grpc.keepalive_time_ms", int(limits.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(limits.keepalive_timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", int(limits.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options(limits: GossipLimits) -> list[tuple[str, Any]]:
    return [
        *_common_options(limits),
        # Accept the peers' keepalive pings (the default minimum of 5 min would make us kill the stream).
        ("grpc.http2.min_ping_interval_without_data_ms", int(limits.keepalive_time_s * 500)),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_concurrent_streams", 4),
        ("grpc.so_reuseport", 0),
    ]


def channel_options(limits: GossipLimits, target_name: str | None) -> list[tuple[str, Any]]:
    options = [
        *_common_options(limits),
        # One connection attempt per supervisor attempt; these only bound gRPC's own retries in between.
        ("grpc.initial_reconnect_backoff_ms", int(limits.reconnect_initial_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(limits.reconnect_initial_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(limits.reconnect_max_s * 1000)),
        ("grpc.enable_retries", 0),
        ("grpc.use_local_subchannel_pool", 1),  # never share a connection with another channel
    ]
    if target_name is not None:
        options.append(("grpc.ssl_target_name_override", target_name))
    return options


def open_channel(
    address: Address | str, credentials: grpc.ChannelCredentials | None, peer: str, limits: GossipLimits
) -> grpc.aio.Channel:
    target = str(address)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=channel_options(limits, None))
    return grpc.aio.secure_channel(target, credentials, options=channel_options(limits, peer))


# --- the two ends of a stream, as one interface --------------------------------------------------------


class ClientStream:
    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes], peer: str) -> None:
        self.call = call
        self.peer = peer

    async def read(self) -> bytes | None:
        try:
            data = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            raise PeerError(f"{self.peer}: {exc.code().name}: {exc.details()}") from None
        return None if data is grpc.aio.EOF else bytes(data)

    async def write(self, data: bytes) -> None:
        try:
            await self.call.write(data)
        except grpc.aio.AioRpcError as exc:
            raise PeerError(f"{self.peer}: {exc.code().name}: {exc.details()}") from None
        except asyncio.InvalidStateError:
            raise PeerError(f"{self.peer}: the stream is closed") from None

    def close(self) -> None:
        self.call.cancel()


class ServerStream:
    def __init__(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        self.context = context

    async def read(self) -> bytes | None:
        data = await self.context.read()
        return None if data is grpc.aio.EOF else bytes(data)

    async def write(self, data: bytes) -> None:
        try:
            await self.context.write(data)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as exc:
            raise PeerError(f"the stream is closed: {exc}") from None


class Stream(Protocol):
    async def read(self) -> bytes | None: ...
    async def write(self, data: bytes) -> None: ...


class SessionHost(Protocol):
    """What a session needs from the node's replicator."""

    core: AntiEntropy
    stats: ReplicatorStats
    persist: Callable[[bytes], Awaitable[None]] | None

    def now(self) -> float: ...
    async def sync(self) -> None: ...
    def received(self, link: PeerLink, result: Inbound) -> None: ...
    def durable(self, readings: list[MergedReadings]) -> None: ...


# --- one stream ----------------------------------------------------------------------------------------

_Pending = tuple[list[asyncio.Task[None]], PeerMessage | None, list[MergedReadings]]


class Session:
    """One live stream with a peer. :meth:`run` returns only by raising :class:`PeerError` (or when
    cancelled); the caller then closes the link."""

    def __init__(self, host: SessionHost, link: PeerLink, stream: Stream, dialer: str) -> None:
        self.host = host
        self.link = link
        self.stream = stream
        self.dialer = dialer  # who opened it: of two concurrent streams, the smaller dialer id's survives
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._close_reason = ""
        self._control: collections.deque[PeerMessage] = collections.deque()
        self._control_bytes = 0
        # Per received message: its persistence, its ack, and the readings to pass on once durable.
        self._acks: asyncio.Queue[_Pending] = asyncio.Queue(_ACK_QUEUE)
        limits = host.core.limits
        self._throttle = (
            ReceiveThrottle(
                limits.receive_bytes_per_s, max(limits.receive_bytes_per_s, limits.envelope_bytes)
            )
            if limits.receive_bytes_per_s > 0
            else None
        )

    @property
    def peer(self) -> str:
        return self.link.peer

    def wake(self) -> None:
        self._wake.set()

    def close(self, reason: str) -> None:
        """End the session from outside (replaced by a newer stream, peer removed, shutdown). It ends by
        raising PeerError, not by cancellation, so a dialer's supervisor simply reconnects."""
        self._close_reason = reason
        self._closed.set()

    async def run(self) -> None:
        tg = asyncio.TaskGroup()
        try:
            async with tg:
                tg.create_task(self._read_loop(), name=f"gossip read {self.peer}")
                tg.create_task(self._write_loop(), name=f"gossip write {self.peer}")
                tg.create_task(self._ack_loop(), name=f"gossip ack {self.peer}")
                tg.create_task(self._close_when_asked(), name=f"gossip close {self.peer}")
                if isinstance(self.stream, ShapedStream) and self.stream.delayed:
                    tg.create_task(self.stream.pump(), name=f"gossip test link {self.peer}")  # test hook
        except BaseExceptionGroup as group:
            _take_back_group_cancel(tg)
            # The first failure ends the session; surface it as itself.
            raise group.exceptions[0] from None

    async def _close_when_asked(self) -> None:
        await self._closed.wait()
        raise PeerError(f"stream with {self.peer} closed: {self._close_reason}")

    def _queue(self, message: PeerMessage) -> None:
        self._control.append(message)
        self._control_bytes += message.ByteSize()
        self._wake.set()

    async def _read_loop(self) -> None:
        core, link, st = self.host.core, self.link, self.link.stats
        while True:
            data = await self.stream.read()
            if data is None:
                raise PeerError(f"{self.peer} closed the stream")
            st.received += 1
            st.bytes_received += len(data)
            if len(data) > core.limits.envelope_bytes:
                self.host.stats.oversized_messages += 1
                st.refused_oversized += 1
                raise ProtocolViolation(
                    Refusal.LIMIT,
                    f"message of {len(data)} bytes exceeds the limit of {core.limits.envelope_bytes} bytes",
                )
            if self._throttle is not None:
                st.throttled_s += await self._throttle.take(len(data))
            try:
                message = PeerMessage.FromString(data)
            except ProtobufDecodeError:
                self.host.stats.malformed_messages += 1
                st.refused_malformed += 1
                raise ProtocolViolation(
                    Refusal.MALFORMED, f"malformed message ({len(data)} bytes) is not a PeerMessage"
                ) from None
            result = core.receive(link, message, self.host.now())
            self.host.received(link, result)
            for reply in result.replies:
                self._queue(reply)
            if result.after_sync:
                await self._send_after_sync(result.after_sync)
            if result.persist or result.ack is not None:
                persist = self.host.persist
                futures = [_persisting(persist(d)) for d in result.persist] if persist else []
                if result.held and persist is not None:
                    # A delta we already held may have been merged from another stream and not be durable
                    # yet: acking it before a sync would promise what a crash could still lose (TLC found it).
                    futures.append(_persisting(self.host.sync()))
                # A full queue pauses reading: backpressure.
                await self._acks.put((futures, result.ack, result.readings))
            if message.HasField("ack"):
                self._wake.set()  # the window may have opened

    async def _send_after_sync(self, messages: list[PeerMessage]) -> None:
        # A catch-up computed from the store may include local writes not yet durable: wait for them.
        limit = 2 * self.host.core.limits.window_bytes
        if self._control_bytes > limit:
            log.warning(
                "peer %s: catch-up reply dropped, %d bytes already queued", self.peer, self._control_bytes
            )
            return
        await self.host.sync()
        for m in messages:
            self._queue(m)

    async def _ack_loop(self) -> None:
        latest: PeerMessage | None = None
        while True:
            futures, ack, readings = await self._acks.get()
            for future in futures:
                # Shielded: a session ending mid-wait must not cancel the write itself. A persistence
                # failure ends the session, its deltas unacknowledged.
                await asyncio.shield(future)
            if readings:
                self.host.durable(readings)  # nothing is learnt from a delta a crash could still lose
            if ack is not None:
                latest = ack
            if latest is not None and self._acks.empty():
                self._queue(latest)  # cumulative: only the newest of a run of acks is sent
                latest = None

    async def _write_loop(self) -> None:
        core, link = self.host.core, self.link
        tick = core.limits.tick_s
        while True:
            self._wake.clear()
            while self._control:
                message = self._control.popleft()
                self._control_bytes -= message.ByteSize()
                await self._send(message)
            sent = False
            for message in core.outgoing(link, self.host.now()):
                await self._send(message)
                sent = True
            if sent or self._control:
                continue
            try:
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            except TimeoutError:
                pass  # timers: retransmission, periodic repair

    async def _send(self, message: PeerMessage) -> None:
        data = message.SerializeToString()
        await self.stream.write(data)
        self.link.stats.sent += 1
        self.link.stats.bytes_sent += len(data)


def _take_back_group_cancel(group: asyncio.TaskGroup) -> None:
    """Python 3.11's TaskGroup cancels its parent task when a child fails while the parent already waits in
    ``__aexit__``, and never takes that request back (3.12 does, after the wait). The session's tasks only
    fail that way (its body just starts them), so the dialler's task would look cancelled for good and its
    supervisor (``raise_if_cancelling``) would stop reconnecting after the first failed session. Take back
    the group's own request only: a real cancel makes the group abort first and request nothing."""
    task = asyncio.current_task()
    if sys.version_info < (3, 12) and task is not None and getattr(group, "_parent_cancel_requested", False):
        task.uncancel()


# Persistence outlives the session that asked for it (a write handed to the WAL completes either way), so
# its tasks are held here rather than by the session.
_PERSISTING: set[asyncio.Task[None]] = set()


def _persisting(awaitable: Awaitable[None]) -> asyncio.Task[None]:
    async def run() -> None:
        await awaitable

    task = asyncio.get_running_loop().create_task(run(), name="gossip persist")
    _PERSISTING.add(task)
    task.add_done_callback(_persisted)
    return task


def _persisted(task: asyncio.Task[None]) -> None:
    _PERSISTING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("persisting a received delta failed: %s", task.exception())
