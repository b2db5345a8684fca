"""The durable, bounded outbox of notifications: one file per pending notification.

A notification is durable once :meth:`Outbox.put` returns (written to a temporary file, fsynced, renamed,
the directory fsynced), and leaves only when delivered (:meth:`Outbox.done`). So a target that is down, or
a node restart, loses nothing: delivery resumes from the files. Bounds: ``max_items`` and ``max_bytes``
(they hold across restarts, the files are counted at start); beyond either the *oldest* pending
notification is dropped and counted, so a long outage keeps the newest. A file that cannot be read at start
is moved aside (``*.bad``) and counted, never retried for ever.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Item", "Outbox"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    seq: int
    target: str
    event: dict[str, Any]
    size: int


class Outbox:
    def __init__(self, directory: Path, *, max_items: int, max_bytes: int) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items: OrderedDict[int, Item] = OrderedDict()
        self.bytes = 0
        self.dropped = 0
        self.unreadable = 0
        self._seq = 0
        self._load()

    def _load(self) -> None:
        for path in sorted(self.dir.glob("*.json")):
            try:
                raw = json.loads(path.read_bytes())
                item = Item(int(raw["seq"]), str(raw["target"]), dict(raw["event"]), path.stat().st_size)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.unreadable += 1
                log.warning("notification outbox: %s is unreadable (%s); moved aside", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            self.items[item.seq] = item
            self.bytes += item.size
            self._seq = max(self._seq, item.seq)
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # a put that a crash cut short was never acknowledged

    def __len__(self) -> int:
        return len(self.items)

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:016d}.json"

    def put(self, target: str, event: dict[str, Any]) -> Item:
        """Durable on return (blocking file I/O: call it off the loop when it matters)."""
        self._seq += 1
        seq = self._seq
        body = json.dumps({"seq": seq, "target": target, "event": event}, separators=(",", ":")).encode()
        tmp = self._path(seq).with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self._path(seq))
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        item = Item(seq, target, event, len(body))
        self.items[seq] = item
        self.bytes += item.size
        while len(self.items) > self.max_items or (self.bytes > self.max_bytes and len(self.items) > 1):
            oldest = next(iter(self.items))
            self.dropped += 1
            log.warning(
                "notification outbox full: dropped the oldest (%s)", self.items[oldest].event.get("id")
            )
            self.done(oldest)
        return item

    def pending(self, target: str) -> Item | None:
        """The oldest pending notification for ``target``."""
        for item in self.items.values():
            if item.target == target:
                return item
        return None

    def done(self, seq: int) -> None:
        item = self.items.pop(seq, None)
        if item is None:
            return
        self.bytes -= item.size
        self._path(seq).unlink(missing_ok=True)
