"""Bounds and timings of peer replication, derived from the node's ``[limits]`` config plus tunables."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from drsdtp.config import LimitsConfig

__all__ = ["GossipLimits"]

_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class GossipLimits:
    # Largest message accepted or sent (the gRPC cap is this plus envelope room).
    max_message_bytes: int = 4 * _MIB
    # The delta buffer shared by all peers: past either bound the oldest deltas are dropped and every peer
    # that had not acknowledged them is repaired by a digest-driven catch-up instead.
    buffer_entries: int = 100_000
    buffer_bytes: int = 256 * _MIB
    # Unacknowledged bytes in flight to one peer before sending pauses (backpressure).
    window_bytes: int = 16 * _MIB
    batch_entries: int = 1024  # deltas per DeltaBatch
    # A batch of at least this many deltas is shipped as their join (it collapses overwrites; a resend after
    # a reconnect is always joined). Smaller batches go as a list: a join decodes every delta once more.
    join_min_entries: int = 64
    relay: bool = True  # forward deltas received from one peer to the others (never back to the sender)
    max_peers: int = 256  # distinct peers this node keeps replication state for (bounds memory)
    repair_interval_s: float = 30.0  # periodic digest exchange, the safety net for anything lost
    retransmit_after_s: float = 10.0  # no ack progress for this long: resend everything unacknowledged
    handshake_timeout_s: float = 10.0
    keepalive_time_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.05
    reconnect_max_s: float = 2.0  # gRPC's own default would wait up to 120 s
    # Housekeeping (lag figures) and how often a stream's writer checks its timers (retransmission, repair,
    # probes). Never a push delay: a durable delta wakes the writers at once.
    tick_s: float = 1.0
    # A clock and state probe to each peer that answers them this often (0: none; see gossip.probe).
    probe_interval_s: float = 0.0
    # A digest or version split into parts is reassembled up to this size.
    max_reassembly_bytes: int = 64 * _MIB
    # Bytes per second read from one peer (0: unlimited); beyond it reading pauses and flow control slows
    # the sender. A burst of one second's worth (at least one message) passes unthrottled.
    receive_bytes_per_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_message_bytes < 64 * 1024:
            raise ValueError("max_message_bytes must be at least 64 KiB")
        if self.window_bytes < self.max_message_bytes:
            raise ValueError("window_bytes must be at least max_message_bytes")
        if min(self.buffer_entries, self.batch_entries, self.join_min_entries) < 1:
            raise ValueError("buffer_entries, batch_entries and join_min_entries must be >= 1")

    @classmethod
    def from_config(cls, limits: LimitsConfig, **overrides: Any) -> GossipLimits:
        base = cls(
            max_message_bytes=limits.max_message_bytes,
            buffer_entries=limits.peer_buffer,
            receive_bytes_per_s=limits.peer_receive_bytes_per_s,
            probe_interval_s=2.0,
        )
        return dataclasses.replace(base, **overrides)

    @property
    def payload_bytes(self) -> int:
        """Room for CRDT bytes in one message (the rest is envelope)."""
        return self.max_message_bytes - 4096

    @property
    def envelope_bytes(self) -> int:
        """Largest PeerMessage accepted: payload limit plus room for the envelope."""
        return self.max_message_bytes + 64 * 1024

    @property
    def grpc_message_bytes(self) -> int:
        """The transport's hard cap, well above ours: up to it our own check refuses with a reason and a
        count; beyond it gRPC refuses by itself (RESOURCE_EXHAUSTED, not counted here)."""
        return 4 * self.envelope_bytes
