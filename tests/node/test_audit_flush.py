"""The audit trail's fsyncs run beside the writes: a write that reaches its audit while a flush is syncing
appends at once, and the next flush makes it durable and names it as the head (a real audit log on disk)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from drsdtp._core import Store
from drsdtp.api.node import AuditEntry
from drsdtp.history import AuditLog, Change
from drsdtp.node import snapshots
from drsdtp.node.snapshots import SnapshotService


def _head(directory: Path) -> int:
    return int(json.loads((directory / "audit.head").read_bytes())["seq"])


def test_a_sync_names_its_point_while_later_appends_wait_for_the_next(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    audit.record(actor="a", twin="t", changes={"x": Change(1.0)}, reason="r", via="api")
    point = audit.flush_point()
    assert point is not None and audit.flush_point() is None  # nothing new since
    audit.record(actor="a", twin="t", changes={"x": Change(2.0)}, reason="r", via="api")  # during the sync
    audit.sync(point)
    assert _head(tmp_path) == 0 and audit.dirty
    audit.flush()
    assert _head(tmp_path) == 1 and not audit.dirty
    audit.sync(point)  # an older point never moves the head back
    assert _head(tmp_path) == 1
    assert audit.verify().ok
    audit.close()


async def test_a_write_is_audited_while_a_flush_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "AUDIT_FLUSH_S", 0.0)

    async def commit(delta: bytes, twins: object, origin: str) -> None:
        return None

    def entry(value: float) -> AuditEntry:
        return AuditEntry("t", "write", {"x": Change(value)}, "token:a", "")

    async with SnapshotService(tmp_path, Store(1), commit, per_twin=2) as service:
        audit = service.audit
        audit.flush()
        with audit._sync_lock:  # the flush's fsyncs cannot finish: a disk slow to sync
            await service.audit_writes([entry(1.0)])
            for _ in range(50):  # until the flush has taken its point and waits in its thread
                await asyncio.sleep(0.01)
                if not audit.dirty:
                    break
            assert not audit.dirty
            # Before, this write waited for the flush's lock until the fsyncs were done: a hang here.
            await asyncio.wait_for(service.audit_writes([entry(2.0)]), 10)
            assert audit.dirty
        for _ in range(500):  # the flush finishes; another one follows for the write made meanwhile
            await asyncio.sleep(0.01)
            if not audit.dirty and _head(tmp_path / "audit") == 1:
                break
        assert _head(tmp_path / "audit") == 1 and not audit.dirty
        assert [r.changes["x"].new for r in audit.records("t")] == [1.0, 2.0]
