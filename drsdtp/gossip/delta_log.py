"""The delta buffer of delta-interval anti-entropy: one log of deltas shared by all peers.

Each entry has a sequence number; every peer link keeps how far the peer acknowledged. Entries acknowledged
by every link are dropped (GC). The log is bounded in entries and bytes: past a bound the oldest entries
are dropped anyway, and the links that still needed them switch to a digest-driven catch-up (Almeida et al.
2018, "full state when the buffer was truncated").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["DeltaLog", "Entry"]


@dataclass(slots=True, frozen=True)
class Entry:
    seq: int
    delta: bytes
    source: str | None  # the peer it came from; None for a local event
    born: float  # monotonic seconds at append (replication lag)
    end_bytes: int  # bytes appended up to and including this entry (in-flight accounting)


class DeltaLog:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        self.floor = 0  # every seq <= floor is gone
        self.head = 0  # the newest seq (0: none yet)
        self._appended_bytes = 0
        self._floor_bytes = 0  # end_bytes of the entry at floor

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._appended_bytes - self._floor_bytes

    def append(self, delta: bytes, source: str | None, now: float) -> int:
        self.head += 1
        self._appended_bytes += len(delta)
        self._entries.append(Entry(self.head, delta, source, now, self._appended_bytes))
        return self.head

    def over_limit(self) -> bool:
        return len(self._entries) > self.max_entries or self.size_bytes > self.max_bytes

    def get(self, seq: int) -> Entry:
        """The entry ``seq`` (``floor < seq <= head``)."""
        return self._entries[seq - self.floor - 1]

    def end_bytes(self, seq: int) -> int:
        """Bytes appended up to ``seq`` (clamped to what the log still knows)."""
        if seq <= self.floor:
            return self._floor_bytes
        return self.get(min(seq, self.head)).end_bytes

    def trim(self, upto: int) -> None:
        """Drop every entry with ``seq <= upto``."""
        upto = min(upto, self.head)
        while self.floor < upto:
            entry = self._entries.popleft()
            self.floor = entry.seq
            self._floor_bytes = entry.end_bytes

    def shed(self) -> int:
        """Drop the oldest entries until within bounds; returns the new floor."""
        while self._entries and self.over_limit():
            entry = self._entries.popleft()
            self.floor = entry.seq
            self._floor_bytes = entry.end_bytes
        return self.floor
