"""The anomaly log: every anomaly event of a node's twins, bounded per twin and in total, kept on disk.

Events come from the engine (:class:`~drsdtp.intelligence.traits.AnomalyLog` listeners): each gets a
sequence number (increasing, also across restarts: it is the resume cursor of a stream), the wall time it was
logged, the twin's model and the twins it may affect (its relations). Bounds, held across restarts:
``per_twin`` newest events of a twin and ``max_events`` in all (past that, the oldest eighth goes). Both are
``[intelligence]`` settings.

On disk: ``<data_dir>/anomalies/log.jsonl``, one JSON object per line. New events are appended by
:meth:`AnomalyJournal.flush` (one write and one fsync for everything logged since the last flush, run off
the event loop); once the file holds more than twice the kept events, it is rewritten with only those
(atomic rename). On open, a line that is not a valid record (a torn tail after a crash, damage) is skipped
and counted (``bad_lines``); the rest load. What was logged but not yet flushed is lost in a crash: the
node flushes at every intelligence pass (a few seconds at most).

Reads (:meth:`after`, :meth:`latest`) are in memory; :meth:`wait_after` lets a stream sleep until a newer
event is logged.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drsdtp.errors import InvalidValueError
from drsdtp.history.files import atomic_write, fsync_dir, storage_error
from drsdtp.intelligence.results import AnomalyEvent, Severity

__all__ = ["AnomalyJournal", "AnomalyRecord"]

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """One logged anomaly event: the engine's event with its log position, model and related twins."""

    seq: int
    logged_ms: int
    model: str
    event: AnomalyEvent
    related: tuple[str, ...] = ()
    # what related twins measuring the same field say (drsdtp.relations.corroborate): "process" (they saw
    # it too: ``evidence`` names them), "sensor" (they did not: suspect this sensor), "" (no such twin)
    cause: str = ""
    evidence: tuple[str, ...] = ()

    @property
    def twin(self) -> str:
        return self.event.twin

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready: the engine event's keys plus ``seq``, ``logged_ms``, ``model``, ``related``."""
        doc = self.event.to_dict()
        doc.update(
            seq=self.seq,
            logged_ms=self.logged_ms,
            model=self.model,
            related=list(self.related),
            cause=self.cause,
            evidence=list(self.evidence),
        )
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AnomalyRecord:
        """The record of :meth:`to_dict`'s output; ValueError/KeyError/TypeError when it is not one."""

        def number(key: str) -> float | None:
            value = doc.get(key)
            return None if value is None else float(value)

        event = AnomalyEvent(
            twin=str(doc["twin"]),
            field=str(doc["field"]),
            kind=str(doc["kind"]),
            severity=Severity[str(doc["severity"])],
            t_s=float(doc["t_s"]),
            value=number("value"),
            detail=str(doc.get("detail", "")),
            test=str(doc.get("test", "")),
            magnitude=number("magnitude"),
            score=number("score"),
        )
        related, evidence = doc.get("related") or [], doc.get("evidence") or []
        if not isinstance(related, list) or not isinstance(evidence, list):
            raise TypeError("related or evidence is not a list")
        return cls(
            int(doc["seq"]),
            int(doc["logged_ms"]),
            str(doc["model"]),
            event,
            tuple(map(str, related)),
            str(doc.get("cause", "")),
            tuple(map(str, evidence)),
        )


class AnomalyJournal:
    """The bounded anomaly log of one node (in memory only when ``directory`` is None)."""

    def __init__(self, directory: Path | None, *, per_twin: int = 1000, max_events: int = 100_000) -> None:
        if per_twin < 1 or max_events < 1:
            raise InvalidValueError(f"anomaly log bounds must be >= 1, got {per_twin}, {max_events}")
        self.per_twin, self.max_events = per_twin, max_events
        self.path = None if directory is None else directory / LOG_FILE
        self._records: dict[int, AnomalyRecord] = {}  # seq -> record, oldest first
        self._order: list[int] = []  # seqs, increasing; may hold evicted ones (compacted now and then)
        self._of_twin: dict[str, collections.deque[int]] = {}
        self._pending: list[bytes] = []  # lines not yet on disk
        self._lines_on_disk = 0
        self._rewrite = False
        self._lock = threading.Lock()  # _pending is swapped by the flushing thread
        self._wake = asyncio.Event()
        self.next_seq = 1
        self.logged = 0  # since start
        self.evicted = 0  # dropped by a bound since start
        self.bad_lines = 0  # unreadable lines found on open
        self.failed_flushes = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load()

    # -- reading ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def after(
        self,
        seq: int,
        twins: Iterable[str] | None = None,
        limit: int = 1000,
        where: Callable[[str], bool] | None = None,
    ) -> list[AnomalyRecord]:
        """Up to ``limit`` records with a sequence number above ``seq``, oldest first (of ``twins`` only,
        when given; of twins ``where`` holds for, when given)."""
        wanted = None if twins is None else frozenset(twins)
        out: list[AnomalyRecord] = []
        i = bisect.bisect_right(self._order, seq)
        while i < len(self._order) and len(out) < limit:
            record = self._records.get(self._order[i])
            i += 1
            if (
                record is not None
                and (wanted is None or record.twin in wanted)
                and (where is None or where(record.twin))
            ):
                out.append(record)
        return out

    def latest(
        self,
        twins: Iterable[str] | None = None,
        limit: int = 100,
        where: Callable[[str], bool] | None = None,
    ) -> list[AnomalyRecord]:
        """The newest ``limit`` records (of ``twins`` only, when given; ``where``: as :meth:`after`), oldest
        first."""
        if limit <= 0:
            return []
        if twins is None and where is not None:
            twins = [t for t in self._of_twin if where(t)]
        elif twins is not None and where is not None:
            twins = [t for t in twins if where(t)]
        if twins is not None:
            seqs = sorted(s for t in set(twins) for s in self._of_twin.get(t, ()))[-limit:]
            return [self._records[s] for s in seqs]
        out: list[AnomalyRecord] = []
        for seq in reversed(self._order):
            record = self._records.get(seq)
            if record is not None:
                out.append(record)
                if len(out) >= limit:
                    break
        return out[::-1]

    def count(self, twins: Iterable[str] | None = None, where: Callable[[str], bool] | None = None) -> int:
        if twins is None and where is None:
            return len(self._records)
        chosen = set(self._of_twin if twins is None else twins)
        return sum(len(self._of_twin.get(t, ())) for t in chosen if where is None or where(t))

    async def wait_after(self, seq: int) -> None:
        """Returns once a record newer than ``seq`` has been logged."""
        while self.next_seq - 1 <= seq:
            await self._wake.wait()

    # -- writing ----------------------------------------------------------------------------------------

    def append(
        self,
        events: Sequence[AnomalyEvent],
        model: dict[str, str],
        related: dict[str, tuple[str, ...]],
        causes: Sequence[tuple[str, tuple[str, ...]]] | None = None,
    ) -> list[AnomalyRecord]:
        """Log ``events`` (``model`` and ``related`` by twin; ``causes``: ``(cause, evidence)`` per event);
        returns their records."""
        now_ms = int(time.time() * 1000)
        out: list[AnomalyRecord] = []
        lines: list[bytes] = []
        for i, event in enumerate(events):
            cause, evidence = causes[i] if causes is not None else ("", ())
            record = AnomalyRecord(
                self.next_seq,
                now_ms,
                model.get(event.twin, ""),
                event,
                related.get(event.twin, ()),
                cause,
                evidence,
            )
            self.next_seq += 1
            self._keep(record)
            out.append(record)
            lines.append(_line(record))
        if out:
            self.logged += len(out)
            if self.path is not None:
                with self._lock:
                    self._pending.extend(lines)
            self._enforce_total()
            self._wake.set()  # wakes every waiting stream; later waiters wait on a fresh event
            self._wake = asyncio.Event()
        return out

    def flush(self) -> None:
        """Write what was logged since the last flush (blocking: run it in a worker thread, one at a time).
        Rewrites the file with only the kept records once it holds more than twice as many lines."""
        if self.path is None:
            return
        with self._lock:
            lines, self._pending = self._pending, []
            rewrite = self._rewrite or self._lines_on_disk + len(lines) > 2 * len(self._records) + 64
            self._rewrite = False
            kept = [_line(r) for r in list(self._records.values())] if rewrite else []
        if not lines and not rewrite:
            return
        try:
            if rewrite:
                atomic_write(self.path, b"".join(kept))
                self._lines_on_disk = len(kept)
                return
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                data = memoryview(b"".join(lines))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                fsync_dir(self.path.parent)
            self._lines_on_disk += len(lines)
        except OSError as exc:
            self.failed_flushes += 1
            with self._lock:
                self._rewrite = self._rewrite or rewrite
                self._pending[:0] = lines  # kept for the next flush, still bounded by the log's bounds
                del self._pending[: max(0, len(self._pending) - self.max_events)]
            raise storage_error(f"cannot write the anomaly log {self.path}", exc) from exc

    # -- internals --------------------------------------------------------------------------------------

    def _keep(self, record: AnomalyRecord) -> None:
        self._records[record.seq] = record
        self._order.append(record.seq)
        seqs = self._of_twin.setdefault(record.twin, collections.deque())
        seqs.append(record.seq)
        while len(seqs) > self.per_twin:
            del self._records[seqs.popleft()]
            self.evicted += 1

    def _enforce_total(self) -> None:
        if len(self._records) > self.max_events:
            # the oldest eighth at once: eviction costs O(1) per event amortised
            target = self.max_events - max(1, self.max_events // 8)
            for seq in self._order:
                if len(self._records) <= target:
                    break
                record = self._records.pop(seq, None)
                if record is not None:
                    self.evicted += 1
                    seqs = self._of_twin[record.twin]
                    seqs.popleft()  # the twin's oldest: records leave in sequence order
                    if not seqs:
                        del self._of_twin[record.twin]
        if len(self._order) > 2 * len(self._records) + 64:
            self._order = [s for s in self._order if s in self._records]

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise storage_error(f"cannot read the anomaly log {self.path}", exc) from exc
        records: list[AnomalyRecord] = []
        for raw in data.splitlines():
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise TypeError("not an object")
                records.append(AnomalyRecord.from_dict(doc))
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_lines += 1
                log.warning("anomaly log: skipping an unreadable line of %s: %s", self.path, exc)
        records.sort(key=lambda r: r.seq)
        for record in records:
            if record.seq not in self._records:
                self._keep(record)
        self._enforce_total()
        self.next_seq = max([self.next_seq, *(r.seq + 1 for r in records)])
        self._lines_on_disk = len(records) + self.bad_lines
        # damage, or more lines than the bounds keep: the next flush rewrites the file
        self._rewrite = bool(self.bad_lines) or len(records) > len(self._records)
        self.evicted = 0


def _line(record: AnomalyRecord) -> bytes:
    return json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=False).encode() + b"\n"
