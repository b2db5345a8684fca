"""Errors of peer replication. ``PeerError`` is a ``ConnectionError``, so the reconnect supervisor logs it
as one line and retries; ``HandshakeRefused`` says why a stream was refused (and maps to a gRPC status)."""

from __future__ import annotations

from enum import StrEnum

from drsdtp.errors import DrsdtpError

__all__ = ["HandshakeRefused", "PeerError", "ProtocolViolation", "Refusal"]


class PeerError(DrsdtpError, ConnectionError):
    """A peer stream could not be opened, failed, or ended; the dialer retries after a backoff."""


class Refusal(StrEnum):
    """Why a handshake was refused; also the label of the refusal counters."""

    MALFORMED = "malformed"  # not a PeerMessage, or not a Hello first
    VERSION = "version"  # protocol or state format this node does not speak
    IDENTITY = "identity"  # node id missing, unexpected, or not in the peer's certificate
    SELF = "self"  # a node dialled itself
    CLOCK_SKEW = "clock_skew"  # the peer's clock is further ahead than the maximum offset
    DUPLICATE = "duplicate"  # a stream with this peer is already up (the dialer with the smaller id wins)
    LIMIT = "limit"  # absurd sizes in the Hello


class HandshakeRefused(PeerError):
    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"handshake refused ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


class ProtocolViolation(PeerError):
    """A message that ends the stream (not a PeerMessage, or beyond the size limit)."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
