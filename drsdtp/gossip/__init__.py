"""Peer replication: delta-interval anti-entropy between nodes over one gRPC stream per peer.

* :mod:`~drsdtp.gossip.protocol`: the transport-agnostic protocol (buffers, acks, catch-up, limits);
* :mod:`~drsdtp.gossip.grpc_transport`: the thin gRPC shell (streams, caps, keepalive);
* :mod:`~drsdtp.gossip.replicator`: :class:`Replicator`, the node's async context manager;
* :mod:`~drsdtp.gossip.membership`, :mod:`~drsdtp.gossip.scopes`, :mod:`~drsdtp.gossip.tls`: who, what, how.
"""

from drsdtp.gossip.errors import HandshakeRefused, PeerError, ProtocolViolation, Refusal
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.replicator import Replicator
from drsdtp.gossip.stats import GossipPeerStats, PeerRegistry, ReplicatorStats

__all__ = [
    "GossipLimits",
    "GossipPeerStats",
    "HandshakeRefused",
    "PeerError",
    "PeerRegistry",
    "ProtocolViolation",
    "Refusal",
    "Replicator",
    "ReplicatorStats",
]
