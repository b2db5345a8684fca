"""Local history of a node: per-field time series, twin snapshots with rollback, and the audit trail.

* :class:`HistoryStore` (``store.py``): durable, bounded per-field time series (raw, then downsampled),
  queried by time range and exported as CSV/JSON.
* :class:`SnapshotStore` (``snapshots.py``): checksummed twin snapshots and CRDT-correct rollback.
* :class:`AuditLog` (``audit.py``): the hash-chained record of who changed what, when, why and how.
"""

from typing import TYPE_CHECKING

from drsdtp.lazy import exports

if TYPE_CHECKING:
    from drsdtp.history.audit import AuditLog, AuditRecord, Change, Verification, changes_between
    from drsdtp.history.export import ExportFormat
    from drsdtp.history.options import HistoryOptions, Tier
    from drsdtp.history.series import SeriesData
    from drsdtp.history.snapshots import RollbackResult, SnapshotInfo, SnapshotStore
    from drsdtp.history.store import CompactionReport, HistoryStats, HistoryStore

# Each name is imported from its submodule on first read: importing one submodule stays cheap.
__getattr__ = exports(
    __name__,
    {
        "AuditLog": "audit",
        "AuditRecord": "audit",
        "Change": "audit",
        "CompactionReport": "store",
        "ExportFormat": "export",
        "HistoryOptions": "options",
        "HistoryStats": "store",
        "HistoryStore": "store",
        "RollbackResult": "snapshots",
        "SeriesData": "series",
        "SnapshotInfo": "snapshots",
        "SnapshotStore": "snapshots",
        "Tier": "options",
        "Verification": "audit",
        "changes_between": "audit",
    },
)

__all__ = [
    "AuditLog",
    "AuditRecord",
    "Change",
    "CompactionReport",
    "ExportFormat",
    "HistoryOptions",
    "HistoryStats",
    "HistoryStore",
    "RollbackResult",
    "SeriesData",
    "SnapshotInfo",
    "SnapshotStore",
    "Tier",
    "Verification",
    "changes_between",
]
