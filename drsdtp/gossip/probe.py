"""Clock and state probes between two peers (the Probe message): each side asks every
``GossipLimits.probe_interval_s``, the other answers at once.

* Clock offset, NTP-style (RFC 5905's on-wire exchange): from the asker's send time ``t1``, the answerer's
  receive and transmit times ``t2``, ``t3`` and the asker's arrival time ``t4``, the peer's clock minus ours
  is ``((t2 - t1) + (t3 - t4)) / 2`` and the round trip ``(t4 - t1) - (t3 - t2)``. Of the last few samples the
  one with the shortest round trip is kept (NTP's clock filter: queueing only ever adds delay, so the fastest
  exchange is the least skewed one).
* Convergence by state digest: a question carries the asker's digest of the twins both nodes replicate; the
  answerer compares it with its own at once. Both states keep moving while the nodes ingest, so one unequal
  comparison means little: what an operator reads is how long ago the digests were last equal.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from drsdtp.wire.v1.peer_pb2 import PeerMessage, Probe

__all__ = ["ClockFilter", "DigestComparison", "answer", "digest64", "question"]

_SAMPLES: Final = 8  # exchanges the clock filter keeps
_MAX_ROUND_TRIP_S: Final = 60.0  # an answer slower than this is not a clock sample (a stalled stream)


def digest64(digest: bytes) -> int:
    """The 64-bit summary of a (scope-filtered) store digest that probes carry."""
    return int.from_bytes(hashlib.blake2b(digest, digest_size=8).digest(), "big")


def question(wall_s: float, state_digest: int) -> PeerMessage:
    return PeerMessage(probe=Probe(origin_s=wall_s, state_digest=state_digest))


def answer(asked: Probe, received_s: float, answered_s: float) -> PeerMessage:
    return PeerMessage(
        probe=Probe(answer=True, origin_s=asked.origin_s, received_s=received_s, answered_s=answered_s)
    )


@dataclass(slots=True)
class ClockFilter:
    """The peer's clock offset from the answers to our questions."""

    outstanding: float | None = None  # origin of the question not answered yet
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def asked(self, origin_s: float) -> None:
        self.outstanding = origin_s

    def answered(self, probe: Probe, arrival_s: float) -> bool:
        """Takes an answer; False when it does not answer our last question or its times make no sense
        (then it is not a sample)."""
        t1, t2, t3, t4 = probe.origin_s, probe.received_s, probe.answered_s, arrival_s
        if self.outstanding is None or t1 != self.outstanding:
            return False
        self.outstanding = None
        if not all(math.isfinite(t) for t in (t2, t3)) or t3 < t2:
            return False
        round_trip = (t4 - t1) - (t3 - t2)
        if not 0.0 <= round_trip <= _MAX_ROUND_TRIP_S:
            return False
        self.samples.append((round_trip, ((t2 - t1) + (t3 - t4)) / 2))
        return True

    def best(self) -> tuple[float, float] | None:
        """(offset_s, round_trip_s) of the fastest recent exchange, None before the first."""
        if not self.samples:
            return None
        round_trip, offset = min(self.samples)
        return offset, round_trip


@dataclass(slots=True)
class DigestComparison:
    """What the peer's digests said, compared with ours as they arrived (times: the caller's clock)."""

    equal: bool = False  # the last comparison
    checked_at: float | None = None
    equal_at: float | None = None

    def compare(self, theirs: int, ours: int, now: float) -> None:
        self.equal = theirs == ours
        self.checked_at = now
        if self.equal:
            self.equal_at = now
