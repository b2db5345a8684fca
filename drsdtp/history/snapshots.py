"""Twin snapshots: a twin's full CRDT state, with who took it and why, checksummed; and rollback to one.

File ``<directory>/<sha256(twin)[:32]>/<id>.snap`` (the twin id may hold any character; the name in the file
is authoritative)::

    DRSDTP-SNAPSHOT 1\\n
    <crc32 hex> <metadata JSON: id, twin, created_ms, reason, actor, checksum, size>\\n
    <state bytes: store.encode_state([twin]), canonical>

``checksum`` is the SHA-256 of the state bytes. Reading verifies the metadata CRC, the size, the checksum
and that the bytes decode to this twin; any mismatch is a :class:`~drsdtp.errors.StorageError` naming the
snapshot: a damaged snapshot is never rolled back to. Files are written atomically (temporary file, fsync,
rename). At most ``max_per_twin`` snapshots are kept per twin (the oldest go first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from drsdtp.core import Store, decode_state
from drsdtp.errors import DecodeError, MissingSnapshotError, StorageError, UnknownTwinError
from drsdtp.history.audit import AuditLog, Change, Via
from drsdtp.history.files import atomic_write, storage_error
from drsdtp.history.rollback import apply_plan, plan_rollback
from drsdtp.history.values import FieldValue

__all__ = ["PreparedRollback", "RollbackResult", "SnapshotInfo", "SnapshotStore"]

_log = logging.getLogger(__name__)

_MAGIC = b"DRSDTP-SNAPSHOT 1\n"
_ID = re.compile(r"[0-9]{13}-[0-9a-f]{8}(-[0-9]+)?")  # created_ms-sha256[:8], -n on a collision


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    id: str
    twin: str
    created_ms: int
    reason: str
    actor: str
    checksum: str  # sha256 hex of the canonical state bytes
    size: int  # bytes of state


@dataclass(frozen=True, slots=True)
class RollbackResult:
    snapshot: SnapshotInfo  # rolled back to
    delta: bytes  # the new writes, joined: replicate this (b"" when the twin already matched)
    changed: dict[str, tuple[FieldValue | None, FieldValue]]  # field: (value before, value restored)
    extra_fields: tuple[str, ...]  # fields the snapshot did not have: left unchanged
    skipped: dict[str, str]  # field: why it could not be restored
    safety_snapshot: SnapshotInfo | None  # taken just before, so the rollback itself can be undone


@dataclass(frozen=True, slots=True)
class PreparedRollback:
    snapshot: SnapshotInfo
    state: bytes  # verified
    safety_snapshot: SnapshotInfo | None


class SnapshotStore:
    """Snapshots of the twins of ``store``, kept under ``directory``; rollbacks recorded in ``audit``."""

    def __init__(
        self,
        directory: Path | str,
        store: Store,
        audit: AuditLog | None = None,
        *,
        max_per_twin: int = 100,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self._store = store
        self._audit = audit
        self._max_per_twin = max(1, max_per_twin)
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def _twin_dir(self, twin: str) -> Path:
        return self.directory / hashlib.sha256(twin.encode()).hexdigest()[:32]

    def snapshot(self, twin: str, reason: str, actor: str, *, via: Via = "api") -> SnapshotInfo:
        """Take a snapshot of ``twin`` now (durable on return). UnknownTwinError if the store lacks it."""
        if twin not in self._store:
            raise UnknownTwinError(f"no twin {twin!r} to snapshot")
        state = self._store.encode_state([twin])
        checksum = hashlib.sha256(state).hexdigest()
        created = self._clock_ms()
        twin_dir = self._twin_dir(twin)
        try:
            twin_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(f"cannot create the snapshot directory {twin_dir}", exc) from exc
        base = f"{created:013d}-{checksum[:8]}"
        snapshot_id, n = base, 1
        while (twin_dir / f"{snapshot_id}.snap").exists():
            n += 1
            snapshot_id = f"{base}-{n}"
        info = SnapshotInfo(snapshot_id, twin, created, reason, actor, checksum, len(state))
        meta = json.dumps(asdict(info), sort_keys=True, ensure_ascii=False).encode()
        atomic_write(
            twin_dir / f"{snapshot_id}.snap", _MAGIC + b"%08x %s\n" % (zlib.crc32(meta), meta) + state
        )
        _log.info("snapshot %s of twin %s taken by %s: %s", snapshot_id, twin, actor, reason)
        if self._audit is not None:
            self._audit.record(actor=actor, twin=twin, changes={}, reason=reason, via=via,
                               action="snapshot", ref=snapshot_id, ts_ms=created)  # fmt: skip
            self._audit.flush()
        self._prune(twin_dir)
        return info

    def _prune(self, twin_dir: Path) -> None:
        files = sorted(twin_dir.glob("*.snap"))
        for old in files[: max(0, len(files) - self._max_per_twin)]:
            _log.info("snapshot %s pruned (more than %d kept per twin)", old, self._max_per_twin)
            old.unlink(missing_ok=True)

    def list_snapshots(self, twin: str) -> list[SnapshotInfo]:
        """The twin's snapshots, oldest first (metadata only; damaged ones are logged and left out)."""
        out: list[SnapshotInfo] = []
        for path in sorted(self._twin_dir(twin).glob("*.snap")):
            try:
                info, _ = _parse(path.read_bytes(), path)
            except (OSError, StorageError) as exc:
                _log.warning("snapshot %s is unreadable: %s", path, exc)
                continue
            if info.twin == twin:
                out.append(info)
        return out

    def load(self, twin: str, snapshot_id: str) -> tuple[SnapshotInfo, bytes]:
        """A snapshot's metadata and verified state bytes; StorageError if it is missing or damaged."""
        if not _ID.fullmatch(snapshot_id):  # ids come from API callers: never a path outside the twin's dir
            raise MissingSnapshotError(f"twin {twin!r} has no snapshot {snapshot_id!r} (not a snapshot id)")
        path = self._twin_dir(twin) / f"{snapshot_id}.snap"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise MissingSnapshotError(f"twin {twin!r} has no snapshot {snapshot_id!r}") from exc
        except OSError as exc:
            raise storage_error(f"cannot read snapshot {snapshot_id} of twin {twin!r}", exc) from exc
        info, state = _parse(data, path)
        if info.twin != twin or info.id != snapshot_id:
            raise StorageError(
                f"snapshot {snapshot_id} of twin {twin!r} is corrupt: it names {info.twin!r}/{info.id}"
            )
        return info, state

    def values(self, twin: str, snapshot_id: str) -> dict[str, FieldValue]:
        """The twin's field values as the snapshot holds them."""
        _, state = self.load(twin, snapshot_id)
        return decode_state(state)[twin]

    def rollback(
        self, twin: str, snapshot_id: str, actor: str, reason: str, *, safety_snapshot: bool = True
    ) -> RollbackResult:
        """Bring ``twin`` back to the snapshot's values as new writes; returns the delta to replicate.

        With ``safety_snapshot`` the current state is snapshotted first (reason "before rollback to ..."),
        so a rollback can itself be rolled back. The audit record (via "rollback") lists every field
        changed with its value before and after. A host that must make the writes durable before anything
        else reads them runs the three steps itself: :meth:`prepare_rollback` (file I/O),
        :meth:`apply_rollback` (in memory), :meth:`audit_rollback` (file I/O).
        """
        prepared = self.prepare_rollback(twin, snapshot_id, actor, safety_snapshot=safety_snapshot)
        result = self.apply_rollback(prepared)
        self.audit_rollback(result, actor, reason)
        return result

    def prepare_rollback(
        self, twin: str, snapshot_id: str, actor: str, *, safety_snapshot: bool = True
    ) -> PreparedRollback:
        """Loads and verifies the snapshot (before anything is written), then takes the safety snapshot."""
        info, state = self.load(twin, snapshot_id)
        safety = None
        if safety_snapshot and twin in self._store:
            safety = self.snapshot(twin, f"before rollback to {snapshot_id}", actor, via="rollback")
        return PreparedRollback(info, state, safety)

    def apply_rollback(self, prepared: PreparedRollback) -> RollbackResult:
        """Writes the snapshot's values into the store (no I/O); the result holds the delta."""
        twin = prepared.snapshot.twin
        plan = plan_rollback(self._store.encode_state([twin]), prepared.state, twin)
        delta = apply_plan(self._store, twin, plan)
        _log.info(
            "twin %s rolled back to %s (%d fields changed, %d skipped)",
            twin, prepared.snapshot.id, len(plan.changes), len(plan.skipped),
        )  # fmt: skip
        return RollbackResult(
            prepared.snapshot, delta, dict(plan.changes), tuple(plan.extra_fields), dict(plan.skipped),
            prepared.safety_snapshot,
        )  # fmt: skip

    def audit_rollback(self, result: RollbackResult, actor: str, reason: str) -> None:
        if self._audit is None:
            return
        changes = {name: Change(then, now, now is not None) for name, (now, then) in result.changed.items()}
        self._audit.record(actor=actor, twin=result.snapshot.twin, changes=changes, reason=reason,
                           via="rollback", action="rollback", ref=result.snapshot.id)  # fmt: skip
        self._audit.flush()


def _parse(data: bytes, path: Path) -> tuple[SnapshotInfo, bytes]:
    def corrupt(why: str) -> StorageError:
        return StorageError(f"snapshot {path.name} is corrupt and refused: {why}")

    if not data.startswith(_MAGIC):
        raise corrupt("not a drsdtp snapshot file")
    end = data.find(b"\n", len(_MAGIC))
    if end < 0:
        raise corrupt("no metadata line")
    crc_hex, _, meta = data[len(_MAGIC) : end].partition(b" ")
    try:
        if int(crc_hex, 16) != zlib.crc32(meta):
            raise corrupt("metadata checksum mismatch")
        raw = json.loads(meta)
        info = SnapshotInfo(
            str(raw["id"]), str(raw["twin"]), int(raw["created_ms"]), str(raw["reason"]),
            str(raw["actor"]), str(raw["checksum"]), int(raw["size"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise corrupt(f"unreadable metadata ({exc})") from exc
    state = data[end + 1 :]
    if len(state) != info.size:
        raise corrupt(f"state is {len(state)} bytes, expected {info.size} (truncated?)")
    digest = hashlib.sha256(state).hexdigest()
    if digest != info.checksum:
        raise corrupt(
            f"state checksum mismatch (expected sha256 {info.checksum[:16]}..., got {digest[:16]}...)"
        )
    try:
        if info.twin not in decode_state(state):
            raise corrupt(f"state does not hold twin {info.twin!r}")
    except DecodeError as exc:
        raise corrupt(f"state does not decode ({exc})") from exc
    return info, state
