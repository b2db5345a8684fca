"""Delta-interval anti-entropy (Almeida, Shoker & Baquero 2018), transport-agnostic ("sans-IO").

:class:`AntiEntropy` is the whole protocol of one node: the shared delta log, one :class:`PeerLink` per
peer, and the decisions. It never performs I/O and never awaits: a transport hands it received messages
(:meth:`AntiEntropy.receive`) and asks it what to send (:meth:`AntiEntropy.outgoing`); time is a number the
caller passes in. The gRPC shell (:mod:`drsdtp.gossip.grpc_transport`) and the deterministic simulation of
the tests drive this same class.

The design, briefly:

* Local-event deltas, once durable, are appended to the log (seq 1, 2, ...). Each link remembers how far
  the peer acknowledged (``acked``) and how far we sent (``sent``); a DeltaBatch carries the deltas of the
  log interval ``(from_seq, to_seq]`` as a list, or as their join when the batch is big or a resend.
* The receiver merges, persists, and acks its *contiguous frontier* cumulatively; a batch that arrives
  ahead of a gap is merged (merges commute) but acknowledged only once the gap is filled. Every message is
  an idempotent merge, so loss, duplication and reordering only delay convergence.
* Received deltas that changed something are appended to the log for the other peers (transitive gossip),
  tagged with their sender, and never sent back to it (no back-propagation, Enes et al. 2019). A delta that
  changed nothing is redundant and goes no further. Nodes tell each other which peers they have a live
  stream with (Links); a delta is not relayed to a peer its sender is connected to, because the sender's own
  log delivers it there (or its repair does, should that stream drop): in a full mesh each delta then
  crosses each link once, and relaying still carries it around a cut link.
* Backpressure: at most ``window_bytes`` unacknowledged per peer. The log is bounded; when it sheds deltas a
  peer still needed, that peer is repaired by a digest-driven catch-up instead.
* Catch-up: Digest -> Version of the differing twins -> StateChunks of what the asker lacks, plus a
  reciprocal Version so one round repairs both directions. It runs on a link's first session since this
  node started, after a truncation, once a payload refused for clock skew would pass the gate (the refused
  interval is acknowledged all the same), and periodically (the safety net). Catch-up chunks are computed
  for one peer's version: applied, never forwarded. They are sent only after a durability barrier
  (:attr:`Inbound.after_sync`), because they are read from the store, which may hold local writes not yet
  in the write-ahead log: a crash would otherwise let peers keep an event the node then reissues.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from google.protobuf.message import DecodeError as ProtobufDecodeError

from drsdtp.core import MergedReadings, Store, join, merge_with_readings
from drsdtp.errors import ClockSkewError, DecodeError, DrsdtpError
from drsdtp.gossip import handshake
from drsdtp.gossip.delta_log import DeltaLog
from drsdtp.gossip.handshake import PROTOCOL_VERSION
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.probe import ClockFilter, DigestComparison, answer, digest64, question
from drsdtp.gossip.scopes import ScopeFilter, version_twins
from drsdtp.gossip.stats import GossipPeerStats, ReplicatorStats
from drsdtp.wire.v1.peer_pb2 import (
    Ack,
    DeltaBatch,
    Digest,
    Hello,
    Links,
    PeerMessage,
    Probe,
    Reject,
    StateChunk,
    Version,
)

__all__ = ["EMPTY_STATE", "PROTOCOL_VERSION", "AntiEntropy", "Inbound", "PeerLink"]

log = logging.getLogger(__name__)

EMPTY_STATE: Final = join([])  # what catch_up returns for "nothing to send"
_MAX_PARTS: Final = 65_536
_MAX_PENDING_INTERVALS: Final = 4096
_MAX_REJECTS_PER_MESSAGE: Final = 8
_MAX_REASSEMBLIES: Final = 4
_MAX_LINKS: Final = 4096
_MIN_SKEW_RETRY_S: Final = 1.0
_MIN_DIGEST_COMPARE_S: Final = 1.0  # a peer's probes are compared with our digest at most this often


@dataclass(slots=True)
class Inbound:
    """What the transport must do after one received message."""

    replies: list[PeerMessage] = field(default_factory=list)  # send now
    # Send once every local write applied to the store so far is durable (catch-up chunks).
    after_sync: list[PeerMessage] = field(default_factory=list)
    persist: list[bytes] = field(default_factory=list)  # make durable, then send `ack`
    ack: PeerMessage | None = None
    changed: set[str] = field(default_factory=set)  # twins this message changed
    relayed: bool = False  # deltas were appended to the log for the other peers: wake their senders
    # Some deltas were already held: merged earlier (from another peer, or an earlier copy of this batch)
    # and perhaps not durable yet. The ack promises them durable, so it waits for a sync of the log.
    held: bool = False
    # With AntiEntropy.readings on: the readings of what `persist` holds, for history and intelligence once
    # it is durable (taken from the merge's own decode).
    readings: list[MergedReadings] = field(default_factory=list)


@dataclass(slots=True)
class _Receiver:
    """What we merged of one incarnation of the peer's log (in the peer's sequence numbers)."""

    incarnation: int = 0
    frontier: int = 0  # every entry up to here is merged
    pending: dict[int, int] = field(default_factory=dict)  # intervals merged ahead of a gap: from -> to

    def advance(self, base: int, start: int, end: int) -> None:
        self.frontier = max(self.frontier, base)
        if start > self.frontier:
            if len(self.pending) < _MAX_PENDING_INTERVALS:
                self.pending[start] = max(end, self.pending.get(start, 0))
            return
        self.frontier = max(self.frontier, end)
        while self.pending:
            ready = [s for s in self.pending if s <= self.frontier]
            if not ready:
                break
            for s in ready:
                self.frontier = max(self.frontier, self.pending.pop(s))


@dataclass(slots=True)
class _Parts:
    count: int
    received: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class _Violation(Exception):
    def __init__(self, reason: Reject.Reason.ValueType, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class PeerLink:
    """Protocol state for one peer. It outlives sessions (streams) within this node's incarnation."""

    def __init__(self, peer: str, stats: GossipPeerStats, log_head: int, now: float, owner: bool) -> None:
        self.peer = peer
        self.stats = stats
        self.connected = False
        # A new link starts at the head of the log: what came before is covered by the first repair.
        self.acked = log_head
        self.sent = log_head
        self.resend_until = 0  # batches starting below this are resends, shipped joined
        self.last_progress = now
        self.repair_wanted = True  # first session since this node started: we do not know what it has
        self.repair_owner = owner  # the periodic repair is started by one side only
        self.next_repair_at = now
        # A payload refused for clock skew was acknowledged all the same; it can pass once our clock has
        # caught up with its stamp, and a repair then brings it (see AntiEntropy._retry_after_skew).
        self.skew_repair_at = math.inf
        self.round = 0
        self.receiver = _Receiver()
        self.filter: ScopeFilter | None = None
        self.max_message_bytes = 0
        self.peer_links: frozenset[str] = frozenset()  # the peer's live streams, as it last told us
        self.links_sent = -1  # the version of our own live-stream set the peer was last told
        self.reassembly: dict[tuple[str, int, bool], _Parts] = {}
        self.probes = False  # the peer answers Probe messages (its Hello said so)
        self.next_probe_at = now
        self.clock = ClockFilter()
        self.digests = DigestComparison()


class AntiEntropy:
    """The replication protocol of one node (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        scopes: Sequence[str],
        limits: GossipLimits,
        *,
        incarnation: int,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``wall``: the wall clock probes measure offsets with (Unix seconds)."""
        self.store = store
        self.wall = wall
        self.node_id = node_id
        self.scopes = tuple(scopes)
        self.limits = limits
        self.incarnation = incarnation
        self.log = DeltaLog(limits.buffer_entries, limits.buffer_bytes)
        self.links: dict[str, PeerLink] = {}
        self.stats = ReplicatorStats()
        # Whether merges list the readings of what they merged (Inbound.readings): a node's history and
        # intelligence learn from peers' deltas.
        self.readings = False
        self._connected_version = 0  # bumped whenever the set of live streams changes

    # --- handshake and sessions ---------------------------------------------------------------------------

    def hello(self, *, advertise: str = "", clock_offset_s: float | None = None) -> PeerMessage:
        return handshake.make_hello(
            self.store,
            self.node_id,
            self.incarnation,
            self.scopes,
            self.limits.max_message_bytes,
            advertise=advertise,
            clock_offset_s=clock_offset_s,
        )

    def check_hello(self, message: PeerMessage, expected: str | None = None) -> Hello:
        """The peer's Hello if it is acceptable; raises :class:`HandshakeRefused` with the reason."""
        return handshake.check_hello(self.store, self.node_id, message, expected)

    def open(self, hello: Hello, now: float, stats: GossipPeerStats | None = None) -> PeerLink:
        """Start a session with the peer of an accepted Hello."""
        peer = hello.node_id
        link = self.links.get(peer)
        if link is None:
            link = PeerLink(peer, stats or GossipPeerStats(), self.log.head, now, self.node_id < peer)
            self.links[peer] = link
        elif link.repair_owner:
            # The old stream may have died mid-repair (chunks lost with it): one side repairs again.
            link.repair_wanted = True
        link.filter = ScopeFilter(self.store, self.scopes, hello.scopes)
        link.max_message_bytes = min(self.limits.max_message_bytes, hello.max_message_bytes)
        link.probes = hello.probes
        link.clock.outstanding = None  # a question asked on the old stream is never answered
        if hello.incarnation != link.receiver.incarnation:
            link.receiver = _Receiver(incarnation=hello.incarnation)
        link.connected = True
        link.links_sent = -1
        self._connected_version += 1
        # Whatever was in flight on the old stream may be lost: resend everything unacknowledged, joined.
        if link.sent > link.acked:
            link.stats.retransmits += 1
        link.resend_until = link.sent
        link.sent = link.acked
        link.last_progress = now
        link.reassembly.clear()
        st = link.stats
        st.up = True
        st.sessions += 1
        st.incarnation = hello.incarnation
        st.clock_offset_s = hello.clock_offset_s if hello.clock_offset_known else None
        return link

    def close(self, link: PeerLink) -> None:
        """The session ended; the link keeps its acknowledgements for the next one."""
        link.connected = False
        link.stats.up = False
        link.reassembly.clear()
        link.peer_links = frozenset()
        self._connected_version += 1

    def forget(self, peer: str) -> None:
        """Drop all state about a peer (it left the cluster)."""
        if self.links.pop(peer, None) is not None:
            self._connected_version += 1
            self._collect()

    def request_repair(self, peer: str | None = None) -> None:
        """Start a digest exchange with one peer (or all) at the next :meth:`outgoing`."""
        for link in self.links.values():
            if peer is None or link.peer == peer:
                link.repair_wanted = True

    # --- local events --------------------------------------------------------------------------------------

    def local_delta(self, delta: bytes, now: float) -> None:
        """A local event's delta, already durable. Nobody to send it to: a future link repairs instead."""
        self.stats.local_deltas += 1
        if self.links:
            self.log.append(delta, None, now)
            self._bound()

    # --- receiving -----------------------------------------------------------------------------------------

    def receive(self, link: PeerLink, message: PeerMessage, now: float) -> Inbound:
        result = Inbound()
        kind = message.WhichOneof("kind")
        try:
            if kind == "deltas":
                self._on_deltas(link, message.deltas, result, now)
            elif kind == "ack":
                self._on_ack(link, message.ack.seq, now)
            elif kind == "digest":
                self._on_digest(link, message.digest, result)
            elif kind == "version":
                self._on_version(link, message.version, result)
            elif kind == "chunk":
                self._on_chunk(link, message.chunk, result, now)
            elif kind == "reject":
                self._on_reject(link, message.reject)
            elif kind == "links":
                if len(message.links.peers) > _MAX_LINKS:
                    raise _Violation(Reject.REASON_LIMIT, "too many peers in Links")
                links = frozenset(message.links.peers)
                for lost in link.peer_links - links:
                    # Deltas held back from `lost` because this peer's own stream would deliver them may
                    # not have got there: let a repair with `lost` settle it now, not at the next tick.
                    self.request_repair(lost)
                link.peer_links = links
            elif kind == "probe":
                self._on_probe(link, message.probe, result, now)
            else:
                raise _Violation(Reject.REASON_PROTOCOL, f"unexpected {kind or 'empty'} message")
        except _Violation as v:
            link.stats.refused_protocol += 1
            _throttled(link.stats.refused_protocol, "peer %s: refused a message: %s", link.peer, v.detail)
            result.replies.append(_reject(v.reason, v.detail))
        return result

    def _on_deltas(self, link: PeerLink, batch: DeltaBatch, result: Inbound, now: float) -> None:
        if batch.from_seq > batch.to_seq or batch.base > batch.to_seq:
            raise _Violation(Reject.REASON_PROTOCOL, "DeltaBatch interval out of order")
        relay = self.limits.relay and any(p != link.peer for p in self.links)
        deltas = list(batch.deltas)
        link.stats.deltas_received += len(deltas)
        outcomes = self._merge_all(link, deltas, result, batch.to_seq, now)
        for delta, changed in zip(deltas, outcomes, strict=True):
            if changed is False:
                result.held = True
            if not changed:
                continue  # refused, or redundant: nothing to persist or pass on
            result.persist.append(delta)
            if relay:
                self.log.append(delta, link.peer, now)
                self.stats.relayed_deltas += 1
                result.relayed = True
        if result.relayed:
            self._bound()
        link.receiver.advance(batch.base, batch.from_seq, batch.to_seq)
        result.ack = PeerMessage(ack=Ack(seq=link.receiver.frontier))

    def _merge_all(
        self, link: PeerLink, payloads: list[bytes], result: Inbound, seq: int, now: float
    ) -> list[bool | None]:
        """Merge a batch's payloads in one native call (the GIL released); per payload whether it changed
        the store, or None where it was refused (counted, logged and answered as :meth:`_merge` does).
        The twins they changed go to ``result.changed``."""
        cap = self.limits.max_message_bytes
        fitting = [p for p in payloads if len(p) <= cap]
        outcomes: list[bool | DrsdtpError] = []
        if fitting and self.readings:
            outcomes, changed, readings = merge_with_readings(self.store, fitting)
            if len(readings.values):
                result.readings.append(readings)
        elif fitting:
            outcomes, changed = self.store.merge_many(fitting)
        else:
            changed = []
        result.changed.update(changed)
        merged = iter(outcomes)
        out: list[bool | None] = []
        for payload in payloads:
            outcome = next(merged) if len(payload) <= cap else None
            if isinstance(outcome, bool):
                out.append(outcome)
            else:
                self._refused(link, payload, outcome, result, seq, now)
                out.append(None)
        return out

    def _merge(
        self, link: PeerLink, payload: bytes, result: Inbound, seq: int, now: float
    ) -> list[str] | None:
        """Merge one payload; a refusal is counted, logged with the peer's id and answered with a Reject."""
        if len(payload) <= self.limits.max_message_bytes:
            try:
                return self.store.merge(payload)
            except DrsdtpError as exc:
                self._refused(link, payload, exc, result, seq, now)
                return None
        self._refused(link, payload, None, result, seq, now)
        return None

    def _refused(
        self,
        link: PeerLink,
        payload: bytes,
        error: DrsdtpError | None,
        result: Inbound,
        seq: int,
        now: float,
    ) -> None:
        """Count, log (throttled) and answer with a Reject a payload the store refused (``error``) or that
        was too large to try (None)."""
        st = link.stats
        reason: Reject.Reason.ValueType
        if error is None:
            st.refused_oversized += 1
            count, reason = st.refused_oversized, Reject.REASON_OVERSIZED
            detail = f"payload of {len(payload)} bytes exceeds the limit of {self.limits.max_message_bytes}"
        elif isinstance(error, ClockSkewError):
            st.refused_clock_skew += 1
            count, reason = st.refused_clock_skew, Reject.REASON_CLOCK_SKEW
            # The engine sets remote_ms, local_ms and max_offset_ms on the exception.
            ahead = getattr(error, "remote_ms", 0) - getattr(error, "local_ms", 0)
            limit = getattr(error, "max_offset_ms", self.store.max_offset_ms)
            detail = f"a stamp {ahead} ms ahead of the receiver's clock (max offset {limit} ms)"
            self._retry_after_skew(link, ahead - limit, now)
        elif isinstance(error, DecodeError):
            st.refused_malformed += 1
            count, reason, detail = st.refused_malformed, Reject.REASON_MALFORMED, str(error)
        else:
            st.refused_protocol += 1
            count, reason, detail = st.refused_protocol, Reject.REASON_LIMIT, str(error)
        _throttled(count, "peer %s: refused a payload: %s", link.peer, detail)
        if sum(1 for r in result.replies if r.HasField("reject")) < _MAX_REJECTS_PER_MESSAGE:
            result.replies.append(_reject(reason, detail, seq))

    def _retry_after_skew(self, link: PeerLink, excess_ms: int, now: float) -> None:
        """A refused stamp passes the gate once our clock has moved ``excess_ms`` on (or, if ours had jumped
        back, once it is right again). The refused payload's interval is acknowledged all the same, so only
        a repair brings it: ask for one then, not at the next periodic repair (with a floor, so a peer whose
        clock stays wrong is not asked every few milliseconds)."""
        wait_s = min(max(excess_ms / 1000 + 0.1, _MIN_SKEW_RETRY_S), self.limits.repair_interval_s)
        link.skew_repair_at = min(link.skew_repair_at, now + wait_s)

    def _on_ack(self, link: PeerLink, seq: int, now: float) -> None:
        seq = min(seq, self.log.head)  # an ack beyond what we ever appended is nonsense: clamp it
        if seq > link.acked:
            link.acked = seq
            link.last_progress = now
            link.stats.acked_seq = seq
            link.sent = max(link.sent, seq)
            self._collect()

    def _on_digest(self, link: PeerLink, part: Digest, result: Inbound) -> None:
        data = self._reassemble(link, "digest", part.round, False, part.part, part.parts, part.data)
        if data is None:
            return
        assert link.filter is not None
        try:
            differing = self.store.differing_twins(data)
            wanted = link.filter.wanted(differing, data)
        except (DecodeError, ProtobufDecodeError) as exc:
            raise _Violation(Reject.REASON_MALFORMED, f"digest: {exc}") from None
        if wanted:
            result.replies += self._version_messages(wanted, part.round, reciprocate=True)

    def _on_version(self, link: PeerLink, part: Version, result: Inbound) -> None:
        data = self._reassemble(
            link, "version", part.round, part.reciprocate, part.part, part.parts, part.data
        )
        if data is None:
            return
        assert link.filter is not None
        try:
            twins = version_twins(data) if part.reciprocate else []
            chunks = self.store.catch_up(
                link.filter.version(data), only_listed=True, max_bytes=self._payload_cap(link)
            )
        except (DecodeError, ProtobufDecodeError) as exc:
            raise _Violation(Reject.REASON_MALFORMED, f"version: {exc}") from None
        chunks = [c for c in chunks if c != EMPTY_STATE]
        for i, chunk in enumerate(chunks):
            message = StateChunk(round=part.round, index=i, count=len(chunks), state=chunk)
            result.after_sync.append(PeerMessage(chunk=message))
            link.stats.catchup_bytes_sent += len(chunk)
        if chunks:
            link.stats.catchups += 1
        if part.reciprocate and twins:
            # Ask back about every twin the peer asked about: it listed only twins it holds as shared and
            # filters what it sends by its own account. A twin we hold without a known scope (its _scope
            # write not received yet) is asked about too; that is how it gets its _scope.
            result.replies += self._version_messages(twins, part.round, reciprocate=False)

    def _on_chunk(self, link: PeerLink, chunk: StateChunk, result: Inbound, now: float) -> None:
        link.stats.catchup_bytes_received += len(chunk.state)
        if self.readings:
            (outcome,) = self._merge_all(link, [chunk.state], result, 0, now)
            if outcome:
                result.persist.append(chunk.state)
            return
        changed = self._merge(link, chunk.state, result, 0, now)
        if changed:
            # Persisted but never appended to the log: a catch-up chunk is valid for this node only.
            result.persist.append(chunk.state)
            result.changed.update(changed)

    def _on_probe(self, link: PeerLink, probe: Probe, result: Inbound, now: float) -> None:
        st = link.stats
        if probe.answer:
            if link.clock.answered(probe, self.wall()):
                st.peer_offset_s, st.probe_round_trip_s = link.clock.best() or (None, None)
            return
        received = self.wall()
        # A digest of the store costs a pass over every twin: a peer asking faster than it should (a
        # misbehaving one) gets its clock answered, but its digest compared at most once a second.
        last = link.digests.checked_at
        if last is None or now - last >= _MIN_DIGEST_COMPARE_S:
            link.digests.compare(probe.state_digest, self._state_digest(link), now)
            st.digest_equal, st.digest_checked_at = link.digests.equal, link.digests.checked_at
            st.digest_equal_at = link.digests.equal_at
        result.replies.append(answer(probe, received, self.wall()))

    def _state_digest(self, link: PeerLink) -> int:
        """Our digest of the twins this peer replicates too (what its probes' digests are compared with)."""
        assert link.filter is not None
        return digest64(link.filter.digest(self.store.digest()))

    def _on_reject(self, link: PeerLink, reject: Reject) -> None:
        link.stats.rejected_by_peer += 1
        reason = Reject.Reason.Name(reject.reason) if reject.reason in Reject.Reason.values() else "?"
        _throttled(
            link.stats.rejected_by_peer,
            "peer %s refused our message (%s): %s",
            link.peer,
            reason,
            reject.detail,
        )

    def _reassemble(
        self, link: PeerLink, kind: str, round_: int, flag: bool, part: int, count: int, data: bytes
    ) -> bytes | None:
        if not 0 <= part < count <= _MAX_PARTS:
            raise _Violation(Reject.REASON_PROTOCOL, f"{kind} part {part} of {count}")
        if count == 1:
            return data
        key = (kind, round_, flag)
        parts = link.reassembly.get(key)
        if parts is None or parts.count != count:
            while len(link.reassembly) >= _MAX_REASSEMBLIES:
                del link.reassembly[next(iter(link.reassembly))]
            parts = link.reassembly[key] = _Parts(count)
        parts.size += len(data) - len(parts.received.get(part, b""))
        parts.received[part] = data
        if parts.size > self.limits.max_reassembly_bytes:
            del link.reassembly[key]
            raise _Violation(
                Reject.REASON_LIMIT, f"{kind} larger than {self.limits.max_reassembly_bytes} bytes"
            )
        if len(parts.received) < count:
            return None
        del link.reassembly[key]
        return b"".join(parts.received[i] for i in range(count))

    # --- sending -------------------------------------------------------------------------------------------

    def outgoing(self, link: PeerLink, now: float) -> list[PeerMessage]:
        """Everything to send to the peer now: a repair round if due, then delta batches within the window."""
        if not link.connected:
            return []
        out: list[PeerMessage] = []
        if link.links_sent != self._connected_version:
            link.links_sent = self._connected_version
            live = sorted(p for p, other in self.links.items() if other.connected and p != link.peer)
            out.append(PeerMessage(links=Links(peers=live)))
        if now >= link.skew_repair_at:
            link.skew_repair_at = math.inf
            link.repair_wanted = True
        if link.repair_wanted or (link.repair_owner and now >= link.next_repair_at):
            out += self._start_repair(link, now)
        if link.probes and self.limits.probe_interval_s > 0 and now >= link.next_probe_at:
            link.next_probe_at = now + self.limits.probe_interval_s
            origin = self.wall()
            link.clock.asked(origin)
            out.insert(0, question(origin, self._state_digest(link)))  # ahead of big batches: less skew
        if link.sent > link.acked and now - link.last_progress >= self.limits.retransmit_after_s:
            link.resend_until = link.sent
            link.sent = link.acked
            link.last_progress = now
            link.stats.retransmits += 1
        while link.sent < self.log.head:
            in_flight = self.log.end_bytes(link.sent) - self.log.end_bytes(link.acked)
            if in_flight >= self.limits.window_bytes:
                break  # backpressure: wait for acks
            batch = self._next_batch(link)
            if batch is not None:
                out.append(batch)
        return out

    def _next_batch(self, link: PeerLink) -> PeerMessage | None:
        assert link.filter is not None
        start = seq = link.sent
        cap = self._payload_cap(link)
        payload: list[bytes] = []
        size = 0
        while seq < self.log.head and len(payload) < self.limits.batch_entries:
            entry = self.log.get(seq + 1)
            if self._needed_by(link, entry.source):
                delta = link.filter.delta(entry.delta)
                if delta is not None and len(delta) > cap:
                    link.repair_wanted = True  # too big for one message: the twin travels by catch-up
                elif delta is not None:
                    if payload and size + len(delta) > cap:
                        break
                    payload.append(delta)
                    size += len(delta)
            seq += 1
        link.sent = seq
        if not payload and start == link.acked:
            # Nothing in flight and nothing the peer needs: count the interval as acknowledged.
            link.acked = seq
            link.stats.acked_seq = seq
            self._collect()
            return None
        if len(payload) >= self.limits.join_min_entries or (len(payload) > 1 and start < link.resend_until):
            try:
                payload = [join(payload, max_message_bytes=self.limits.max_message_bytes)]
            except DrsdtpError:
                pass  # keep the list (the join would not fit one message)
        link.stats.deltas_sent += len(payload)
        return PeerMessage(deltas=DeltaBatch(base=link.acked, from_seq=start, to_seq=seq, deltas=payload))

    def _needed_by(self, link: PeerLink, source: str | None) -> bool:
        """Whether an entry received from ``source`` (None: local) must go to ``link``'s peer."""
        if source is None:
            return True
        if source == link.peer:
            return False  # never back to where it came from
        sender = self.links.get(source)
        # The sender has a live stream to the peer: its own log delivers this entry there.
        return sender is None or not sender.connected or link.peer not in sender.peer_links

    def _start_repair(self, link: PeerLink, now: float) -> list[PeerMessage]:
        assert link.filter is not None
        link.repair_wanted = False
        link.next_repair_at = now + self.limits.repair_interval_s
        link.round += 1
        link.stats.repairs_started += 1
        digest = link.filter.digest(self.store.digest())
        return [
            PeerMessage(digest=Digest(round=link.round, part=i, parts=n, data=piece))
            for i, n, piece in _split(digest, self.limits.payload_bytes)
        ]

    def _version_messages(self, twins: list[str], round_: int, *, reciprocate: bool) -> list[PeerMessage]:
        version = self.store.version(twins)
        return [
            PeerMessage(version=Version(round=round_, part=i, parts=n, data=piece, reciprocate=reciprocate))
            for i, n, piece in _split(version, self.limits.payload_bytes)
        ]

    def _payload_cap(self, link: PeerLink) -> int:
        return (
            min(link.max_message_bytes or self.limits.max_message_bytes, self.limits.max_message_bytes) - 4096
        )

    # --- buffer bounds and garbage collection --------------------------------------------------------------

    def _bound(self) -> None:
        """Shed the oldest deltas past the log's bounds; links that still needed them get a repair."""
        if not self.log.over_limit():
            return
        floor = self.log.shed()
        for link in self.links.values():
            if link.acked < floor:
                link.acked = floor
                link.sent = max(link.sent, floor)
                link.repair_wanted = True
                link.stats.truncations += 1
                _throttled(
                    link.stats.truncations,
                    "delta buffer full: peer %s is behind and will catch up from a digest",
                    link.peer,
                )

    def _collect(self) -> None:
        """Drop the entries every link has acknowledged."""
        floor = min((link.acked for link in self.links.values()), default=self.log.head)
        self.log.trim(floor)

    def refresh_stats(self, now: float) -> None:
        """Lag per link (age of the oldest unacknowledged delta) and the buffer's size."""
        for link in self.links.values():
            if link.acked < self.log.head and link.acked >= self.log.floor:
                link.stats.lag_s = max(0.0, now - self.log.get(link.acked + 1).born)
            else:
                link.stats.lag_s = 0.0
        self.stats.buffer_entries = len(self.log)
        self.stats.buffer_bytes = self.log.size_bytes

    def idle(self, link: PeerLink) -> bool:
        """Nothing unacknowledged and no repair pending (the simulation's quiescence test)."""
        return link.acked >= self.log.head and not link.repair_wanted and not link.reassembly


def _split(data: bytes, size: int) -> Iterable[tuple[int, int, bytes]]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return ((i, len(pieces), piece) for i, piece in enumerate(pieces))


def _reject(reason: Reject.Reason.ValueType, detail: str, seq: int = 0) -> PeerMessage:
    return PeerMessage(reject=Reject(reason=reason, seq=seq, detail=detail[:500]))


def _throttled(count: int, message: str, *args: object) -> None:
    """Log the first few occurrences of a repeated problem, then every thousandth."""
    if count <= 3 or count % 1000 == 0:
        log.warning(message + ("" if count <= 3 else f" ({count} times so far)"), *args)
