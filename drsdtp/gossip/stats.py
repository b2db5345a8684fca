"""Plain counters of peer replication, read by the metrics module at scrape time.

``GossipPeerStats`` extends :class:`drsdtp.stats.PeerStats` (so ``NodeMetrics.add_peer`` takes it as is) with
what an operator needs to tell a slow peer from a misbehaving one. ``ReplicatorStats`` counts what happens
before a peer is known (refused handshakes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from drsdtp.stats import PeerState, PeerStats

__all__ = ["GossipPeerStats", "PeerRegistry", "ReplicatorStats"]


@dataclass(slots=True)
class GossipPeerStats(PeerStats):
    bytes_sent: int = 0
    bytes_received: int = 0
    deltas_sent: int = 0  # deltas (or joins) inside DeltaBatches
    deltas_received: int = 0
    acked_seq: int = 0  # our log position the peer has acknowledged
    retransmits: int = 0  # unacknowledged intervals sent again (after a reconnect or an ack timeout)
    truncations: int = 0  # times our buffer dropped deltas this peer had not acknowledged
    repairs_started: int = 0  # digest exchanges we started
    catchup_bytes_sent: int = 0
    catchup_bytes_received: int = 0
    refused_clock_skew: int = 0  # payloads from this peer refused by the clock gate
    refused_malformed: int = 0
    refused_oversized: int = 0
    refused_protocol: int = 0
    rejected_by_peer: int = 0  # our payloads the peer refused (see the node log for its reasons)
    sessions: int = 0  # streams opened
    dial_failures: int = 0  # outbound connection attempts or streams that failed (we retry)
    throttled_s: float = 0.0  # time reading from the peer paused for limits.receive_bytes_per_s
    incarnation: int = 0  # the peer's process incarnation seen last
    clock_offset_s: float | None = None  # the peer's own NTP offset, as it reported it
    # Measured by probes (drsdtp.gossip.probe): the peer's clock minus ours, and the exchange's round trip.
    peer_offset_s: float | None = None
    probe_round_trip_s: float | None = None
    digest_equal: bool = False  # the peer's last digest equalled ours when it arrived
    digest_checked_at: float | None = None  # monotonic time of that comparison
    digest_equal_at: float | None = None  # monotonic time digests were last equal
    last_error: str = ""


@dataclass(slots=True)
class ReplicatorStats:
    """Node-wide counters."""

    refused_handshakes: Counter[str] = field(default_factory=Counter)  # by drsdtp.gossip.errors.Refusal
    malformed_messages: int = 0  # stream messages that were not a PeerMessage (stream closed)
    oversized_messages: int = 0  # stream messages beyond the size limit (stream closed)
    local_deltas: int = 0
    relayed_deltas: int = 0  # received deltas appended to the buffer for the other peers
    buffer_entries: int = 0
    buffer_bytes: int = 0


class PeerRegistry(Protocol):
    """Where per-peer stats are published; :class:`drsdtp.metrics.NodeMetrics` fits."""

    def add_peer(self, peer: str, stats: PeerState) -> None: ...
    def remove_peer(self, peer: str) -> None: ...
