"""The node's side of write-ahead log recovery (:mod:`drsdtp.recovery`): an acknowledgement that is audited,
and the ``drsdtp_recovery_*`` metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from drsdtp.metrics import NodeMetrics
from drsdtp.recovery import Audit, QuarantineEntry, RecoveryLedger

__all__ = ["accept", "register_metrics"]

log = logging.getLogger(__name__)


async def accept(ledger: RecoveryLedger, actor: str, reason: str, audit: Audit) -> list[QuarantineEntry]:
    """Acknowledges every pending recovery, then audits it (shielded: a caller that gives up does not leave
    an acknowledgement unaudited)."""

    async def run() -> list[QuarantineEntry]:
        done = await asyncio.to_thread(ledger.accept, actor, reason)
        if done:
            await audit(actor, reason, [e.id for e in done])
            log.warning(
                "%s acknowledged write-ahead log recoveries %s: %s", actor, [e.id for e in done], reason
            )
        return done

    return await asyncio.shield(run())


def _reader(report: Mapping[str, int], key: str) -> Callable[[], float]:
    return lambda: report.get(key, 0)


def register_metrics(metrics: NodeMetrics, ledger: RecoveryLedger) -> None:
    """``drsdtp_recovery_*``: this start's recovery, and the acknowledgements still missing."""
    report = ledger.report
    for key, doc in (
        ("records", "Log records replayed at this start."),
        ("records_skipped", "Records known lost to damage in the middle of the log at this start."),
        ("records_after_damage", "Valid records recovered after that damage at this start."),
        ("bytes_quarantined", "Damaged bytes copied to the quarantine at this start."),
        ("truncated_bytes", "Bytes of a torn tail cut at this start (a crash mid-write, not a loss)."),
    ):
        metrics.add_gauge(f"drsdtp_recovery_{key}", doc, _reader(report, key))
    metrics.add_gauge(
        "drsdtp_recovery_snapshots_rejected",
        "Damaged snapshots at this start (their verified chunks were still used).",
        lambda: report.get("corrupt_snapshots", 0),
    )
    metrics.add_gauge(
        "drsdtp_recovery_seconds", "Duration of this start's recovery.", lambda: ledger.recovery_s
    )
    metrics.add_gauge(
        "drsdtp_recovery_unaccepted",
        "Recoveries that found damage and no operator acknowledged yet (the node is not ready).",
        lambda: len(ledger.unaccepted),
    )
    metrics.add_gauge(
        "drsdtp_recovery_loss_suspected",
        "1 while an unacknowledged recovery suspects lost acknowledged data.",
        lambda: int(any(e.loss_suspected for e in ledger.unaccepted)),
    )
    metrics.add_counter(
        "drsdtp_recovery_quarantine_dropped",
        "Quarantine entries (or their copies) dropped to keep the quarantine within its bounds.",
        lambda: report.get("quarantine_dropped", 0),
    )
