"""What recovery found stays reported until an operator acknowledges it: readiness, acknowledgement (audited
once), persistence across restarts, and a damaged report taken at its worst."""

from __future__ import annotations

from pathlib import Path

from drsdtp._core import Store
from drsdtp.config import WalConfig
from drsdtp.node.durable import DurableStore
from drsdtp.node.recovery import accept
from drsdtp.recovery import RecoveryLedger
from tests.daemon.walfiles import DELTA, RECORD_HEADER, flip, records


async def _damaged(tmp_path: Path) -> DurableStore:
    store = Store(7)
    async with DurableStore.open(tmp_path, store, WalConfig(fsync_interval_ms=0)) as durable:
        for i in range(10):
            await durable.record(store.set("t", f"f{i}", float(i)))
    seg = sorted((tmp_path / "wal").glob("wal-*.log"))[-1]
    victim = [r for r in records(seg) if r.kind == DELTA][4]
    flip(seg, victim.offset + RECORD_HEADER + 2)
    return DurableStore.open(tmp_path, Store(7), WalConfig())


async def test_not_ready_until_accepted_once_and_audited(tmp_path: Path) -> None:
    durable = await _damaged(tmp_path)
    ledger = RecoveryLedger(tmp_path / "wal", durable.stats.recovery, durable.stats.recovery_s)
    reason = ledger.not_ready_reason()
    assert reason is not None and "acknowledged data may be lost in 1" in reason
    assert "1 records skipped" in reason and "drsdtp recover --accept" in reason
    audited: list[tuple[str, str, list[str]]] = []

    async def audit(actor: str, why: str, ids: list[str]) -> None:
        audited.append((actor, why, ids))

    done = await accept(ledger, "ops@site", "restored from peers", audit)
    assert [e.id for e in done] == [e.id for e in ledger.entries]
    assert ledger.not_ready_reason() is None
    assert audited == [("ops@site", "restored from peers", [done[0].id])]
    # Nothing pending: nothing accepted, nothing audited again.
    assert await accept(ledger, "ops@site", "again", audit) == []
    assert len(audited) == 1
    # The acknowledgement is on disk: a restart reads it back.
    again = RecoveryLedger(tmp_path / "wal", {}, 0.0)
    assert again.not_ready_reason() is None
    assert again.entries[0].accepted is not None and again.entries[0].accepted["actor"] == "ops@site"


async def test_an_unreadable_report_counts_as_a_suspected_loss(tmp_path: Path) -> None:
    await _damaged(tmp_path)
    (entry,) = (tmp_path / "wal" / "quarantine").iterdir()
    (entry / "report.json").write_text("{ torn")
    ledger = RecoveryLedger(tmp_path / "wal", {}, 0.0)
    assert ledger.unaccepted[0].loss_suspected
    reason = ledger.not_ready_reason()
    assert reason is not None and "report unreadable" in reason


def test_a_log_without_quarantine_is_ready(tmp_path: Path) -> None:
    assert RecoveryLedger(tmp_path / "wal", {}, 0.0).not_ready_reason() is None
