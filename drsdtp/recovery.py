"""What the write-ahead log's recovery found, until an operator has acknowledged it.

Recovery (in Rust, :meth:`drsdtp._core.Wal.open`) never drops acknowledged data silently: damage it goes past
is copied to ``<data_dir>/wal/quarantine/<UTC time>/`` with a ``report.json``. An entry without an
``accepted.json`` is an unacknowledged recovery: the node answers ``/readyz`` with 503 and the reason, keeps
ingesting and replicating (peers' catch-up may restore what was lost), and says so in ``drsdtp status``,
until ``drsdtp recover --accept`` writes ``accepted.json`` (who, when, why) into every such entry and the
audit trail records it. The state lives in those files, so a restart does not make the node ready.

This module reads and marks those files (the API shows them); :mod:`drsdtp.node.recovery` wires them into
the node (acknowledgement with its audit record, metrics).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from drsdtp.history.files import atomic_write

__all__ = ["Audit", "QuarantineEntry", "RecoveryLedger"]

log = logging.getLogger(__name__)

QUARANTINE: Final = "quarantine"
REPORT: Final = "report.json"
ACCEPTED: Final = "accepted.json"

#: Appends an audit record: (actor, reason, entry ids).
Audit = Callable[[str, str, list[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """One recovery that found damage: its report, and who acknowledged it (None: nobody yet)."""

    id: str
    path: Path
    report: Mapping[str, Any]
    accepted: Mapping[str, Any] | None

    @property
    def loss_suspected(self) -> bool:
        # An unreadable report is taken at its worst.
        return bool(self.report.get("loss_suspected", True))

    def summary(self) -> str:
        r = self.report
        if "unreadable" in r:
            return f"{self.id}: report unreadable ({r['unreadable']})"
        parts = [
            "loss suspected" if self.loss_suspected else "no loss",
            f"{r.get('records_skipped', 0)} records skipped",
            f"{r.get('records_after_damage', 0)} recovered after the damage",
            f"{r.get('bytes_quarantined', 0)} bytes quarantined",
        ]
        snapshots = len(r.get("snapshots_rejected", ()))
        if snapshots:
            parts.append(f"{snapshots} snapshots rejected")
        return f"{self.id}: " + ", ".join(parts)


def _read_json(path: Path) -> dict[str, Any]:
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return raw


class RecoveryLedger:
    """The quarantine entries of one log directory and this start's recovery report."""

    def __init__(self, wal_dir: Path, report: Mapping[str, int], recovery_s: float) -> None:
        self.directory = wal_dir / QUARANTINE
        self.report = dict(report)
        self.recovery_s = recovery_s
        self.entries: list[QuarantineEntry] = []
        self.refresh()

    def refresh(self) -> None:
        """Reads the entries again (oldest first)."""
        entries = []
        try:
            paths = sorted(p for p in self.directory.iterdir() if p.is_dir())
        except FileNotFoundError:
            paths = []
        for path in paths:
            try:
                report = _read_json(path / REPORT)
            except (OSError, ValueError) as exc:
                report = {"unreadable": str(exc)}
            accepted = None
            if (path / ACCEPTED).exists():
                try:
                    accepted = _read_json(path / ACCEPTED)
                except (OSError, ValueError) as exc:
                    accepted = {"unreadable": str(exc)}
            entries.append(QuarantineEntry(path.name, path, report, accepted))
        self.entries = entries

    @property
    def unaccepted(self) -> list[QuarantineEntry]:
        return [e for e in self.entries if e.accepted is None]

    def not_ready_reason(self) -> str | None:
        """Why the node is not ready (None: it is, as far as recovery goes)."""
        pending = self.unaccepted
        if not pending:
            return None
        loss = sum(e.loss_suspected for e in pending)
        what = f"acknowledged data may be lost in {loss}" if loss else "damaged bytes were quarantined in"
        return (
            f"write-ahead log recovery needs an operator: {what} {len(pending)} unacknowledged "
            f"recover{'y' if len(pending) == 1 else 'ies'} ({pending[-1].summary()}); "
            f"see `drsdtp recover`, then `drsdtp recover --accept`"
        )

    def accept(self, actor: str, reason: str) -> list[QuarantineEntry]:
        """Marks every unacknowledged entry accepted (durably); returns them."""
        done = []
        for entry in self.unaccepted:
            doc = {"actor": actor, "reason": reason, "ts_ms": int(time.time() * 1000)}
            atomic_write(entry.path / ACCEPTED, (json.dumps(doc, sort_keys=True) + "\n").encode())
            done.append(entry)
        self.refresh()
        return done
