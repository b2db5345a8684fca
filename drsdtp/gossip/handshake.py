"""The Hello each side sends first, and the checks a node applies to its peer's.

A node refuses a stream (with a reason that becomes the gRPC status detail) when the peer speaks another
protocol or state format, names itself badly or as this node, is not the node that was dialled, sends
absurd limits, or has a clock further ahead than the maximum offset (CockroachDB's ``max-offset`` gate: one
fast clock must not win every last-writer-wins register).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from drsdtp.core import FORMAT_VERSION, Store
from drsdtp.gossip.errors import HandshakeRefused, Refusal
from drsdtp.wire.v1.peer_pb2 import Hello, PeerMessage

__all__ = ["PROTOCOL_VERSION", "check_hello", "make_hello"]

PROTOCOL_VERSION: Final = 1
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as drsdtp.config names
_MAX_SCOPES: Final = 256
_MIN_MESSAGE_BYTES: Final = 64 * 1024


def make_hello(
    store: Store,
    node_id: str,
    incarnation: int,
    scopes: Sequence[str],
    max_message_bytes: int,
    *,
    advertise: str = "",
    clock_offset_s: float | None = None,
) -> PeerMessage:
    return PeerMessage(
        hello=Hello(
            protocol_version=PROTOCOL_VERSION,
            state_format=FORMAT_VERSION,
            node_id=node_id,
            incarnation=incarnation,
            hlc=store.now(),
            scopes=scopes,
            max_message_bytes=max_message_bytes,
            clock_offset_known=clock_offset_s is not None,
            clock_offset_s=clock_offset_s or 0.0,
            advertise=advertise,
            probes=True,
        )
    )


def check_hello(store: Store, node_id: str, message: PeerMessage, expected: str | None = None) -> Hello:
    """The peer's Hello if it is acceptable; raises :class:`HandshakeRefused` with the reason."""
    kind = message.WhichOneof("kind")
    if kind != "hello":
        raise HandshakeRefused(Refusal.MALFORMED, f"expected a Hello first, got {kind or 'nothing'}")
    h = message.hello
    if h.protocol_version != PROTOCOL_VERSION:
        raise HandshakeRefused(
            Refusal.VERSION,
            f"protocol version {h.protocol_version} is not supported (this node speaks {PROTOCOL_VERSION})",
        )
    if h.state_format != FORMAT_VERSION:
        raise HandshakeRefused(
            Refusal.VERSION,
            f"state format {h.state_format} is not supported (this node reads {FORMAT_VERSION})",
        )
    if not _NAME_RE.fullmatch(h.node_id):
        raise HandshakeRefused(Refusal.IDENTITY, f"invalid node id {h.node_id[:80]!r}")
    if h.node_id == node_id:
        raise HandshakeRefused(Refusal.SELF, f"the peer is this node ({node_id})")
    if expected is not None and h.node_id != expected:
        raise HandshakeRefused(Refusal.IDENTITY, f"expected node {expected!r}, the peer is {h.node_id!r}")
    if len(h.scopes) > _MAX_SCOPES or not all(_NAME_RE.fullmatch(s) for s in h.scopes):
        raise HandshakeRefused(Refusal.LIMIT, "too many scopes or an invalid scope name")
    if h.max_message_bytes < _MIN_MESSAGE_BYTES:
        raise HandshakeRefused(Refusal.LIMIT, f"max_message_bytes {h.max_message_bytes} is below 64 KiB")
    ahead_ms = (h.hlc >> 16) - store.physical_now()
    if ahead_ms > store.max_offset_ms:
        raise HandshakeRefused(
            Refusal.CLOCK_SKEW,
            f"node {h.node_id!r} has a clock {ahead_ms} ms ahead of ours "
            f"(max offset {store.max_offset_ms} ms)",
        )
    return h
