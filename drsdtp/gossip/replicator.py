"""Peer replication of one node, as an async context manager.

The node wires it like this (the store, WAL and metrics are the node's)::

    async with Replicator(store, config.node_id, config.listen.peer, config.peers, config.scopes,
                          config.tls, config.limits, persist=wal.append_remote, stats=metrics,
                          sync=wal.sync, clock_offset=lambda: clock_monitor.latest) as replicator:
        ...  # after each WAL group commit: replicator.on_local_delta(delta) for every committed delta

On entry it binds the peer port, announces this node in the replicated membership twin, and starts one
dialer per known peer (configured seeds plus members); on exit it stops dialling, ends every stream and
stops the server, within bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Self

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from drsdtp.clock import ClockOffset
from drsdtp.config import Address, LimitsConfig, PeerConfig, TlsConfig
from drsdtp.core import MergedReadings, Store
from drsdtp.gossip import membership, tls
from drsdtp.gossip.errors import HandshakeRefused, PeerError, ProtocolViolation, Refusal
from drsdtp.gossip.grpc_transport import (
    METHOD,
    SERVICE,
    ClientStream,
    ServerStream,
    Session,
    open_channel,
    server_options,
    status_for,
)
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.link_hook import LinkFaults
from drsdtp.gossip.protocol import AntiEntropy, Inbound, PeerLink
from drsdtp.gossip.stats import GossipPeerStats, PeerRegistry, ReplicatorStats
from drsdtp.supervisor import Backoff, Supervisor
from drsdtp.wire.v1.peer_pb2 import Hello, PeerMessage

__all__ = ["Replicator"]

log = logging.getLogger(__name__)

_WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})
_STOP_GRACE_S: Final = 1.0


class Replicator:
    name = "gossip"

    def __init__(
        self,
        store: Store,
        node_id: str,
        listen: Address,
        peers: Sequence[PeerConfig],
        scopes: Sequence[str],
        tls_config: TlsConfig | None,
        limits: LimitsConfig | GossipLimits,
        persist: Callable[[bytes], Awaitable[None]] | None = None,
        stats: PeerRegistry | None = None,
        *,
        sync: Callable[[], Awaitable[None]] | None = None,
        clock_offset: Callable[[], ClockOffset] | None = None,
        advertise: str | None = None,
        on_change: Callable[[set[str]], None] | None = None,
        on_readings: Callable[[MergedReadings], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``persist(delta)`` makes a received delta durable (the node's WAL); acks wait for it. ``sync()``
        returns once every local write applied to the store before the call is durable (a WAL barrier);
        both may be None when the store is not backed by a log. ``stats`` receives one stats object per
        peer (``NodeMetrics`` fits). ``on_change`` hears the twins each received message changed;
        ``on_readings`` the readings of received deltas that changed the store, once they are durable (taken
        from the merge's decode: the node's history and intelligence learn from them)."""
        self.store = store
        self.node_id = node_id
        self.listen = listen
        self.limits = limits if isinstance(limits, GossipLimits) else GossipLimits.from_config(limits)
        self.tls = tls_config
        self.persist = persist
        self._sync = sync
        self._registry = stats
        self._clock_offset = clock_offset
        self._advertise = advertise
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._seeds = {p.name: str(p.address) for p in peers if p.name != node_id}
        self.core = AntiEntropy(
            store, node_id, scopes, self.limits, incarnation=self._rng.getrandbits(63) + 1
        )
        self.core.readings = on_readings is not None
        self._on_readings = on_readings
        self.stats: ReplicatorStats = self.core.stats
        self.port = 0
        self.advertised: str | None = None
        self._peer_stats: dict[str, GossipPeerStats] = {}
        self._sessions: dict[str, Session] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._supervisors: dict[str, Supervisor[Session]] = {}
        self._addresses: dict[str, str] = {}
        self._members: set[str] = set()
        self._inbound: set[asyncio.Task[Any]] = set()
        self._members_changed = asyncio.Event()
        self._progress = asyncio.Event()  # set (and replaced) whenever a peer message was taken in
        self._sessions_changed = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._group: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._certificates = tls.NodeCertificates(tls_config) if tls_config else None
        # Test-only (None unless DRSDTP_TEST_LINK is set): every peer stream becomes a slow, lossy link.
        self._link_faults = LinkFaults.from_environment()
        self._link_rng = random.Random(self._link_faults.seed if self._link_faults else None)

    # --- the node's interface -------------------------------------------------------------------------

    def on_local_delta(self, delta: bytes) -> None:
        """A local event's delta, after its WAL commit (only durable events may leave the node)."""
        self.core.local_delta(delta, self.now())
        self._wake_all()

    @property
    def log_head(self) -> int:
        """The sequence number of the newest delta in the replication log (local and relayed)."""
        return self.core.log.head

    def acked_by(self, seq: int) -> int:
        """Peers that acknowledged every delta up to ``seq`` (a peer acknowledges once it made them
        durable; one outside a delta's scope counts as acknowledging it, as does one switched to a full
        catch-up because the log shed what it lacked)."""
        return sum(1 for link in self.core.links.values() if link.acked >= seq)

    async def wait_acked(self, seq: int, peers: int, timeout_s: float) -> int:
        """Waits until ``peers`` peers acknowledged ``seq`` or ``timeout_s`` passed; returns how many had."""
        deadline = self.now() + timeout_s
        while (count := self.acked_by(seq)) < peers:
            left = deadline - self.now()
            if left <= 0:
                return count
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return count

    def _wake_all(self) -> None:
        for session in self._sessions.values():
            session.wake()

    def peer_stats(self) -> dict[str, GossipPeerStats]:
        self.core.refresh_stats(self.now())
        self._copy_dial_stats()
        return dict(self._peer_stats)

    def _copy_dial_stats(self) -> None:
        for peer, supervisor in self._supervisors.items():
            stats = self._peer_stats.get(peer)
            if stats is not None:
                stats.dial_failures = supervisor.stats.failures
                if supervisor.stats.last_error:
                    stats.last_error = supervisor.stats.last_error

    def connected_peers(self) -> list[str]:
        return sorted(self._sessions)

    async def wait_for_peers(self, peers: Iterable[str], timeout_s: float) -> None:
        """Until a stream with each of ``peers`` is up (tests, readiness)."""
        wanted = set(peers)
        async with asyncio.timeout(timeout_s):
            while not wanted <= self._sessions.keys():
                self._sessions_changed.clear()
                await self._sessions_changed.wait()

    async def remove_member(self, node_id: str) -> None:
        """Remove a node that left for good: out of the membership set, its address cleared, its stream
        closed and all replication state about it dropped."""
        for delta in membership.leave(self.store, node_id):
            await self._write_local(delta)
        self._members_changed.set()

    def now(self) -> float:
        return time.monotonic()

    async def sync(self) -> None:
        if self._sync is not None:
            await self._sync()

    # --- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        server = grpc.aio.server(options=server_options(self.limits))
        handler = grpc.stream_stream_rpc_method_handler(self._serve)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Gossip": handler}),))
        target = str(self.listen)
        if self._certificates is not None:
            creds = self._certificates.server_credentials(require_client_auth=True)  # identity = certificate
            self.port = server.add_secure_port(target, creds)
        else:
            self.port = server.add_insecure_port(target)
        if not self.port:
            raise OSError(f"cannot listen for peers on {target}")
        host = self.listen.host
        self.advertised = self._advertise or (None if host in _WILDCARDS else str(Address(host, self.port)))
        try:
            # Announce before serving: a catch-up served to the first peer must not see a write that is not
            # durable yet.
            for delta in membership.announce(self.store, self.node_id, self.advertised):
                await self._write_local(delta)
            await server.start()
        except BaseException:
            await server.stop(None)
            raise
        self._server = server
        where = str(Address(self.listen.host, self.port))
        log.info("peer replication on %s as %s (scopes %s)", where, self.node_id, ", ".join(self.core.scopes))
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._reconcile()  # dialers for the seeds and known members start now
        self._background = [
            group.create_task(self._manage_peers(), name="gossip peers"),
            group.create_task(self._housekeeping(), name="gossip housekeeping"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Stage 1: stop dialling and the background tasks (outbound streams end with their dialers).
        group, self._group = self._group, None
        if group is not None:
            for task in [*self._background, *self._dialers.values()]:
                task.cancel()
            try:
                await group.__aexit__(None, None, None)
            except BaseExceptionGroup as errors:
                raise errors.exceptions[0] from None
            finally:
                self._dialers.clear()
        # Stage 2: end the inbound streams, then stop the server.
        for session in list(self._sessions.values()):
            session.close("shutting down")
        for task in list(self._inbound):
            task.cancel()
        if self._server is not None:
            await self._server.stop(_STOP_GRACE_S)
            self._server = None

    # --- peers ----------------------------------------------------------------------------------------

    async def _manage_peers(self) -> None:
        while True:
            await self._members_changed.wait()
            self._members_changed.clear()
            self._reconcile()

    def _reconcile(self) -> None:
        current = membership.members(self.store)
        # Departed nodes count even if this node never saw them as members: one may have streamed to us
        # straight after joining, and its removal arrived before (or together with) its membership.
        known = self._members | self._peer_stats.keys()
        removed = (
            (self._members | (membership.departed(self.store) & known)) - current.keys() - self._seeds.keys()
        )
        self._members = set(current)
        addresses = dict(self._seeds)  # configured addresses win over advertised ones
        for node, address in current.items():
            if node != self.node_id and node not in addresses and address:
                addresses[node] = address
        self._addresses = addresses
        for peer in sorted(addresses):
            if peer not in self._dialers:
                self._start_dialer(peer)
        for peer in sorted(removed):
            if peer != self.node_id:
                self._forget(peer)

    def _forget(self, peer: str) -> None:
        log.info("peer %s left the cluster: dropping its replication state", peer)
        task = self._dialers.pop(peer, None)
        if task is not None:
            task.cancel()
        self._supervisors.pop(peer, None)
        session = self._sessions.get(peer)
        if session is not None:
            session.close("removed from the cluster")
        self.core.forget(peer)
        self._peer_stats.pop(peer, None)
        self._idle.pop(peer, None)
        if self._registry is not None:
            self._registry.remove_peer(peer)

    def _ensure_peer(self, peer: str) -> GossipPeerStats:
        stats = self._peer_stats.get(peer)
        if stats is None:
            stats = self._peer_stats[peer] = GossipPeerStats()
            self._idle[peer] = asyncio.Event()
            self._idle[peer].set()
            if self._registry is not None:
                self._registry.add_peer(peer, stats)
        return stats

    def _start_dialer(self, peer: str) -> None:
        assert self._group is not None
        self._ensure_peer(peer)
        backoff = Backoff(
            initial_s=self.limits.reconnect_initial_s, max_s=self.limits.reconnect_max_s, healthy_after_s=10.0
        )
        supervisor: Supervisor[Session] = Supervisor(
            f"peer {peer}", functools.partial(self._connect, peer), self._run_session, backoff, rng=self._rng
        )
        self._supervisors[peer] = supervisor
        self._dialers[peer] = self._group.create_task(supervisor.run(), name=f"gossip dial {peer}")

    @staticmethod
    async def _run_session(session: Session) -> None:
        await session.run()

    @contextlib.asynccontextmanager
    async def _connect(self, peer: str) -> AsyncIterator[Session]:
        # Never dial while a stream with the peer is up (it may have dialled us).
        while peer in self._sessions:
            await self._idle[peer].wait()
        address = self._addresses.get(peer)
        if address is None:
            raise PeerError(f"no address known for {peer}")
        credentials = self._certificates.channel_credentials() if self._certificates is not None else None
        channel = open_channel(address, credentials, peer, self.limits)
        try:
            call = channel.stream_stream(METHOD)()
            stream = ClientStream(call, peer)
            try:
                async with asyncio.timeout(self.limits.handshake_timeout_s):
                    await stream.write(self._hello().SerializeToString())
                    data = await stream.read()
            except TimeoutError:
                timeout = self.limits.handshake_timeout_s
                raise PeerError(f"{peer} at {address}: no handshake within {timeout} s") from None
            if data is None:
                raise PeerError(f"{peer} at {address} closed the stream during the handshake")
            try:
                hello = self.core.check_hello(_parse(data), expected=peer)
                session = self._open_session(hello, stream, dialer=self.node_id)
            except HandshakeRefused as exc:
                self._refused(exc, f"{peer} at {address}")
                raise
            try:
                yield session
            finally:
                self._close_session(session)
                stream.close()
        finally:
            await channel.close(grace=None)

    async def _serve(self, request_iterator: object, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        try:
            await self._serve_stream(context)
        finally:
            self._inbound.discard(task)

    async def _serve_stream(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        stream = ServerStream(context)
        try:
            async with asyncio.timeout(self.limits.handshake_timeout_s):
                data = await stream.read()
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello within the handshake timeout")
        if data is None:
            return
        try:
            hello = self.core.check_hello(_parse(data))
            if self.tls is not None:
                names = tls.peer_names(context.auth_context())
                tls.check_identity(hello.node_id, names, self.tls.allowed_names)
            session = self._open_session(hello, stream, dialer=hello.node_id)
        except HandshakeRefused as exc:
            self._refused(exc, context.peer())
            await context.abort(status_for(exc.reason), exc.detail)
            return  # abort raises; this keeps the flow obvious
        try:
            await stream.write(self._hello().SerializeToString())
            await session.run()
        except ProtocolViolation as exc:
            log.warning("peer %s: stream closed: %s", hello.node_id, exc.detail)
            await context.abort(status_for(exc.reason), exc.detail)
        except PeerError as exc:
            log.debug("inbound stream from %s ended: %s", hello.node_id, exc)
        finally:
            self._close_session(session)

    def _hello(self) -> PeerMessage:
        offset = self._clock_offset() if self._clock_offset is not None else None
        return self.core.hello(
            advertise=self.advertised or "", clock_offset_s=offset.offset_s if offset is not None else None
        )

    def _refused(self, exc: HandshakeRefused, who: str) -> None:
        self.stats.refused_handshakes[exc.reason] += 1
        if exc.reason is Refusal.DUPLICATE:
            log.debug("peer stream with %s not opened: %s", who, exc.detail)
        else:
            log.warning("peer stream with %s refused: %s", who, exc.detail)

    def _open_session(self, hello: Hello, stream: ClientStream | ServerStream, dialer: str) -> Session:
        peer = hello.node_id
        if peer not in self._peer_stats and len(self._peer_stats) >= self.limits.max_peers:
            raise HandshakeRefused(Refusal.LIMIT, f"already tracking {self.limits.max_peers} peers")
        stats = self._ensure_peer(peer)
        current = self._sessions.get(peer)
        if current is not None:
            # Both nodes may dial at once: keep the stream dialled by the smaller node id, on both sides.
            winner = min(self.node_id, peer)
            if current.dialer == winner and dialer != winner:
                raise HandshakeRefused(Refusal.DUPLICATE, f"a stream with {peer} dialled by {winner} is up")
            self._close_session(current)
            current.close("replaced by a new stream")
        link = self.core.open(hello, self.now(), stats)
        shaped = self._link_faults.wrap(stream, self._link_rng) if self._link_faults else stream
        session = Session(self, link, shaped, dialer)
        self._sessions[peer] = session
        self._sessions_changed.set()
        self._idle[peer].clear()
        self._wake_all()  # every peer hears of the new stream (Links)
        log.info("peer %s connected (%s)", peer, "outbound" if dialer == self.node_id else "inbound")
        return session

    def _close_session(self, session: Session) -> None:
        peer = session.peer
        if self._sessions.get(peer) is not session:
            return  # already replaced
        del self._sessions[peer]
        self._sessions_changed.set()
        self._members_changed.set()  # reconcile: the peer may have departed while its stream was up
        self.core.close(session.link)
        idle = self._idle.get(peer)  # gone when the peer was forgotten meanwhile
        if idle is not None:
            idle.set()
        self._wake_all()
        log.info("peer %s disconnected", peer)

    # --- what sessions report ---------------------------------------------------------------------------

    def received(self, link: PeerLink, result: Inbound) -> None:
        self._progress.set()  # acks may have moved: wakes every wait_acked at once
        self._progress = asyncio.Event()
        if result.relayed:
            for peer, session in self._sessions.items():
                if peer != link.peer:
                    session.wake()
        if result.changed:
            if membership.MEMBERS_TWIN in result.changed:
                self._members_changed.set()
            if self._on_change is not None:
                self._on_change(result.changed)

    def durable(self, readings: list[MergedReadings]) -> None:
        if self._on_readings is not None:
            for batch in readings:
                self._on_readings(batch)

    async def _write_local(self, delta: bytes) -> None:
        if self.persist is not None:
            await self.persist(delta)
        self.on_local_delta(delta)
        self._members_changed.set()

    async def _housekeeping(self) -> None:
        while True:
            self.core.refresh_stats(self.now())
            self._copy_dial_stats()
            await asyncio.sleep(self.limits.tick_s)


def _parse(data: bytes) -> PeerMessage:
    try:
        return PeerMessage.FromString(data)
    except ProtobufDecodeError:
        raise HandshakeRefused(Refusal.MALFORMED, f"not a PeerMessage ({len(data)} bytes)") from None
