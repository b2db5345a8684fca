"""The audit trail: who changed what, when, why and through which path; append-only and hash-chained.

File ``audit.log``: one JSON object per line (keys sorted, compact separators)::

    {"action", "actor", "changes": {field: {"old", "new"}}, "hash", "prev", "reason", "ref", "seq",
     "ts_ms", "twin", "via"}

A write of several twins in one request is one record (the request is what happened, and one record a
request keeps the trail's cost per request, not per twin): ``twin`` is empty, ``changes`` is empty and
``twins`` holds each twin's part, ``{twin: {"action", "changes"}}``. Readers see one record per twin (its
part, with the request's seq, hash, actor, reason and time): :meth:`AuditLog.records` spells them out.
A request's numeric columns (telemetry, thousands of rows) are named, not spelt out: a twin's part lists
the fields they wrote as ``"readings": [field, ...]``, without values (those are in the history; each
reading's new and old value made the record larger than the write-ahead log's entry for it).

``hash`` is the SHA-256 of the line's canonical JSON without ``hash``; ``prev`` is the previous line's hash
(64 zeros for the first) and ``seq`` counts from 0. Editing a line breaks its hash; deleting or reordering
lines breaks ``prev`` and ``seq``. Cutting lines off the end leaves a valid chain, so :meth:`AuditLog.flush`
also writes ``audit.head`` (the last seq and hash) atomically, and :meth:`AuditLog.verify` checks the log
still reaches it. This detects corruption and casual tampering; someone able to rewrite both files can
rewrite history, so a deployment that needs more ships the head hash off the device (e.g. to its peers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drsdtp._core import readings_json
from drsdtp.history.files import atomic_write, fsync_dir, storage_error
from drsdtp.history.values import FieldValue, from_json, to_json

__all__ = [
    "GENESIS",
    "Action",
    "AuditLog",
    "AuditRecord",
    "Change",
    "Readings",
    "Verification",
    "Via",
    "changes_between",
]

_log = logging.getLogger(__name__)

GENESIS = "0" * 64
Via = Literal["api", "cli", "rollback", "rule", "snapshot", "system"]
# "recovery": an operator acknowledged what the write-ahead log's recovery found (``ref``: the entries).
# "command": a command to an actuator was issued, cancelled or reached a state (``ref``: the command id).
# "refused": the API refused a call (authorization); ``actor`` is who was refused, ``reason`` says why.
Action = Literal["write", "create", "delete", "snapshot", "rollback", "recovery", "command", "refused"]


@dataclass(frozen=True, slots=True)
class Change:
    """One field's change; ``old_known`` False when the writer did not know the previous value."""

    new: FieldValue
    old: FieldValue | None = None
    old_known: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {"new": to_json(self.new)}
        if self.old_known and self.old is not None:
            out["old"] = to_json(self.old)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Change:
        known = "old" in raw
        return cls(from_json(raw["new"]), from_json(raw["old"]) if known else None, known)


class Readings(Mapping[str, Change]):
    """Numeric readings as a record's changes (each field's new value; its old one where ``olds`` gives it,
    else not known), held as lists and written straight into the record's JSON: a bulk write of thousands
    of readings makes no :class:`Change` and no JSON tree per reading. ``names`` are distinct (``ordered``:
    already sorted); ``numbers`` are floats; ``olds``, when given, the floats they replaced (None: the field
    was new)."""

    __slots__ = ("_index", "names", "numbers", "olds", "ordered")

    def __init__(
        self,
        names: Sequence[str],
        numbers: Sequence[float],
        *,
        ordered: bool = False,
        olds: Sequence[float | None] | None = None,
    ) -> None:
        self.names, self.numbers, self.ordered, self.olds = names, numbers, ordered, olds
        self._index: dict[str, int] | None = None

    def __getitem__(self, name: str) -> Change:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        i = self._index[name]
        if self.olds is None:
            return Change(new=self.numbers[i])
        return Change(new=self.numbers[i], old=self.olds[i], old_known=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def canonical(self) -> str:
        """The ``changes`` object exactly as the record's canonical JSON holds it (keys sorted, compact;
        json writes a float as its repr), written natively: a Python step per reading cost a third of a
        bulk write's CPU."""
        names, numbers, olds = self.names, self.numbers, self.olds
        if not self.ordered:
            order = sorted(range(len(names)), key=names.__getitem__)
            names, numbers = [names[i] for i in order], [numbers[i] for i in order]
            olds = None if olds is None else [olds[i] for i in order]
        return readings_json(names if isinstance(names, list) else list(names), numbers, olds)


def changes_between(old: Mapping[str, FieldValue], new: Mapping[str, FieldValue]) -> dict[str, Change]:
    """The changes of a write: ``new`` values with their ``old`` values where ``old`` holds the field."""
    return {name: Change(value, old.get(name), name in old) for name, value in new.items()}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts_ms: int
    actor: str
    action: str
    twin: str
    changes: dict[str, Change]
    reason: str
    via: str
    ref: str | None  # the snapshot a snapshot/rollback record is about
    prev: str
    hash: str
    # Fields a request's numeric columns wrote: named, their values in the history (not in ``changes``).
    readings: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AuditRecord:
        return cls(
            int(raw["seq"]), int(raw["ts_ms"]), str(raw["actor"]), str(raw["action"]), str(raw["twin"]),
            {str(k): Change.from_json(v) for k, v in raw["changes"].items()}, str(raw["reason"]),
            str(raw["via"]), None if raw["ref"] is None else str(raw["ref"]),
            str(raw["prev"]), str(raw["hash"]), tuple(str(f) for f in raw.get("readings", ())),
        )  # fmt: skip


@dataclass(slots=True)
class Verification:
    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "hash"})).hexdigest()


_str: Callable[[str], str] = json.encoder.encode_basestring  # what json.dumps(s, ensure_ascii=False) uses


def _encoded(changes: Mapping[str, Change]) -> str:
    if isinstance(changes, Readings):
        return changes.canonical()
    raw = {name: change.to_json() for name, change in changes.items()}
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parts(raw: Mapping[str, Any], twin: str | None) -> list[AuditRecord]:
    """A line's records: itself, or (a request's record with ``twins``) one per twin (``twin``'s only)."""
    parts = raw.get("twins")
    if parts is None:
        return [AuditRecord.from_json(raw)]
    names = sorted(parts) if twin is None else [twin] if twin in parts else []
    return [AuditRecord.from_json({**raw, "twin": name, **parts[name]}) for name in names]


class AuditLog:
    """Append-only audit trail in ``directory``. ``record`` appends; ``flush`` makes it durable."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "audit.log"
        self.head_path = self.directory / "audit.head"
        self.cut_bytes = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(f"cannot create the audit directory {self.directory}", exc) from exc
        self._seq, self._last_hash = self._load_tail()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise storage_error(f"cannot open the audit log {self.path}", exc) from exc
        self._dirty = True
        self._closed = False
        self._sync_lock = threading.Lock()  # one sync at a time: they share the head's temporary file
        self._synced = -2  # the seq the head names (-1: an empty log)

    def _load_tail(self) -> tuple[int, str]:
        """Next seq and last hash; cuts a torn last line (a crash mid-append, never flushed)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0, GENESIS
        except OSError as exc:
            raise storage_error(f"cannot read the audit log {self.path}", exc) from exc
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            self.cut_bytes = len(data) - keep
            _log.warning("audit log %s: torn last line cut (%d bytes)", self.path, self.cut_bytes)
            try:
                os.truncate(self.path, keep)
            except OSError as exc:
                raise storage_error(f"cannot cut the torn tail of {self.path}", exc) from exc
            data = data[:keep]
        for line in reversed(data.splitlines()):
            try:
                raw = json.loads(line)
                return int(raw["seq"]) + 1, str(raw["hash"])
            except (ValueError, KeyError, TypeError):
                # Keep appending (an audit trail must not stop the node); verify() reports the damage.
                _log.error("audit log %s: unreadable line; the chain continues after it", self.path)
        return 0, GENESIS

    def record(
        self,
        *,
        actor: str,
        twin: str,
        changes: Mapping[str, Change],
        reason: str,
        via: Via,
        action: Action = "write",
        ref: str | None = None,
        ts_ms: int | None = None,
    ) -> AuditRecord:
        """Append one record (not yet fsynced: call :meth:`flush`)."""
        body = self._append(actor, twin, changes, reason, via, action, ref, ts_ms)
        body["changes"] = {name: change.to_json() for name, change in sorted(changes.items())}
        return AuditRecord.from_json(body)

    def append(
        self,
        *,
        actor: str,
        twin: str,
        changes: Mapping[str, Change],
        reason: str,
        via: Via,
        action: Action = "write",
        ref: str | None = None,
    ) -> None:
        """:meth:`record` for a writer that needs nothing back (the API's writes, command events: spares
        parsing it)."""
        self._append(actor, twin, changes, reason, via, action, ref, None)

    def append_request(
        self,
        *,
        actor: str,
        reason: str,
        via: Via,
        twins: Sequence[tuple[str, Action, Mapping[str, Change]]],
    ) -> None:
        """One record for a request that wrote ``twins`` (each: twin, action, changes; distinct twins): a
        record with ``twins`` (see the module's docstring), or :meth:`append`'s for a single twin."""
        if len(twins) == 1:
            twin, action, changes = twins[0]
            self._append(actor, twin, changes, reason, via, action, None, None)
            return
        ordered = sorted(twins, key=lambda part: part[0])  # json's sort_keys order: by code point
        if len({part[0] for part in ordered}) < len(ordered):
            raise ValueError("append_request: a twin listed twice")
        parts = ",".join(
            f'{_str(twin)}:{{"action":{_str(action)},"changes":{_encoded(changes)}}}'
            for twin, action, changes in ordered
        )
        self.append_twins(actor=actor, reason=reason, via=via, twins_json="{" + parts + "}")

    def append_twins(self, *, actor: str, reason: str, via: Via, twins_json: str) -> None:
        """:meth:`append_request`'s record for two or more twins, their part already written as the
        record's canonical JSON holds it (``{"TWIN":{"action":...,"changes":...},...}``, keys sorted)."""
        self._append(actor, "", {}, reason, via, "write", None, None, twins_json)

    def _append(
        self,
        actor: str,
        twin: str,
        changes: Mapping[str, Change],
        reason: str,
        via: Via,
        action: Action,
        ref: str | None,
        ts_ms: int | None,
        twins: str | None = None,
    ) -> dict[str, Any]:
        if self._closed:
            raise storage_error(f"audit log {self.path} is closed")
        body: dict[str, Any] = {
            "seq": self._seq,
            "ts_ms": _now() if ts_ms is None else ts_ms,
            "actor": actor,
            "action": action,
            "twin": twin,
            "changes": None,  # record() sets them; the line is built with them encoded once
            "reason": reason,
            "via": via,
            "ref": ref,
            "prev": self._last_hash,
        }
        # The same bytes as _canonical(body) with the changes in (what verify() recomputes), spelt out in
        # the keys' sorted order ("hash" goes between "changes" and "prev") with json's own string encoder:
        # a request's record holds thousands of readings, and a json.dumps of its body cost as much as the
        # rest of the write.
        parts = "" if twins is None else f'"twins":{twins},'  # sorts between "twin" and "via"
        head = f'{{"action":{_str(action)},"actor":{_str(actor)},"changes":{_encoded(changes)}'
        tail = (
            f',"prev":{_str(body["prev"])},"reason":{_str(reason)},'
            f'"ref":{"null" if ref is None else _str(ref)},"seq":{int(body["seq"])},'
            f'"ts_ms":{int(body["ts_ms"])},"twin":{_str(twin)},{parts}"via":{_str(via)}}}'
        )
        # Encoded once and hashed in two parts, the line written from its parts: a request's record is
        # tens of KB, and each joined copy of it cost as much as the hash.
        head_b, tail_b = head.encode(), tail.encode()
        sha = hashlib.sha256(head_b)
        sha.update(tail_b)
        digest = sha.hexdigest()
        parts_b = (head_b, b',"hash":"' + digest.encode() + b'"', tail_b, b"\n")
        size = sum(len(p) for p in parts_b)
        body["hash"] = digest
        try:
            written = os.writev(self._fd, parts_b)  # O_APPEND: one write, so a crash tears at most this line
            if written != size:
                raise OSError(f"short write ({written} of {size} bytes)")
        except OSError as exc:
            raise storage_error(f"cannot append to the audit log {self.path}", exc) from exc
        self._seq += 1
        self._last_hash = body["hash"]
        self._dirty = True
        return body

    def flush(self) -> None:
        """fsync the log, then record its head (the truncation anchor)."""
        point = self.flush_point()
        if point is not None:
            self.sync(point)

    @property
    def dirty(self) -> bool:
        """Records were appended since the last flush point."""
        return self._dirty and not self._closed

    def flush_point(self) -> tuple[int, str] | None:
        """The last record appended, which a :meth:`sync` now makes durable (None: nothing new). Call it
        where no append runs at the same time; the sync may then run in another thread while appends go on
        (they are named by the next flush point)."""
        if not self._dirty or self._closed:
            return None
        self._dirty = False
        return self._seq - 1, self._last_hash

    def sync(self, point: tuple[int, str]) -> None:
        """fsyncs the log (everything written so far, ``point`` included), then records ``point`` as its
        head unless a later one is recorded already."""
        seq, digest = point
        with self._sync_lock:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._dirty = True
                raise storage_error(f"cannot fsync the audit log {self.path}", exc) from exc
            fsync_dir(self.directory)
            if seq > self._synced:
                atomic_write(self.head_path, _canonical({"seq": seq, "hash": digest}) + b"\n")
                self._synced = seq

    def close(self) -> None:
        if not self._closed:
            self.flush()
            os.close(self._fd)
            self._closed = True

    def _lines(self) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as f:
                yield from f
        except FileNotFoundError:
            return
        except OSError as exc:
            raise storage_error(f"cannot read the audit log {self.path}", exc) from exc

    def records(
        self,
        twin: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        actor: str | None = None,
    ) -> list[AuditRecord]:
        """Records (oldest first) of ``twin`` and/or ``actor`` with ``start_ms <= ts_ms < end_ms``."""
        out: list[AuditRecord] = []
        for line in self._lines():
            try:
                recs = _parts(json.loads(line), twin)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # damaged: verify() reports it
            for rec in recs:
                if twin is not None and rec.twin != twin:
                    continue
                if actor is not None and rec.actor != actor:
                    continue
                if (start_ms is not None and rec.ts_ms < start_ms) or (
                    end_ms is not None and rec.ts_ms >= end_ms
                ):
                    continue
                out.append(rec)
        return out

    def verify(self) -> Verification:
        """Walk the chain: every hash, every link, consecutive seqs, and the flushed head still present."""
        result = Verification(ok=True, records=0)
        prev, expected_seq = GENESIS, 0
        hashes: dict[int, str] = {}
        for number, line in enumerate(self._lines(), start=1):
            result.records += 1
            try:
                body = json.loads(line)
                seq, stored, link = int(body["seq"]), str(body["hash"]), str(body["prev"])
            except (ValueError, KeyError, TypeError):
                result.problems.append(f"line {number}: not an audit record")
                prev, expected_seq = "", expected_seq + 1
                continue
            if _hash(body) != stored:
                result.problems.append(f"line {number} (seq {seq}): content does not match its hash (edited)")
            if link != prev:
                result.problems.append(f"line {number} (seq {seq}): does not follow the previous record")
            if seq != expected_seq:
                result.problems.append(f"line {number}: seq {seq}, expected {expected_seq} (records missing)")
            hashes[seq] = stored
            prev, expected_seq = stored, seq + 1
        self._check_head(hashes, result)
        result.ok = not result.problems
        return result

    def _check_head(self, hashes: dict[int, str], result: Verification) -> None:
        try:
            head = json.loads(self.head_path.read_bytes())
            seq, digest = int(head["seq"]), str(head["hash"])
        except FileNotFoundError:
            return  # never flushed: nothing to anchor to
        except (OSError, ValueError, KeyError, TypeError) as exc:
            result.problems.append(f"audit.head is unreadable: {exc}")
            return
        if seq >= 0 and seq not in hashes:
            result.problems.append(
                f"the log ends before seq {seq}, which was flushed (records cut off the end)"
            )
        elif seq >= 0 and hashes[seq] != digest:
            result.problems.append(f"seq {seq} differs from the flushed head (rewritten)")

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> int:
    return time.time_ns() // 1_000_000
