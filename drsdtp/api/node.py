"""What the API services need from the node: a narrow, wire-free Protocol (no protobuf types, domain values
only) that :class:`drsdtp.node.node.Node` implements. The services get this, never the ``Node``, so a method
can only reach what is listed here, and a test (or another face) can serve the API from anything that
provides it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from drsdtp._core import Store
from drsdtp.api.feed import ChangeFeed
from drsdtp.config import LimitsConfig
from drsdtp.history.audit import AuditRecord, Change, Verification
from drsdtp.history.series import SeriesData
from drsdtp.history.snapshots import RollbackResult, SnapshotInfo
from drsdtp.ingest.deadletters import Letter
from drsdtp.intelligence.anomalies import AnomalyRecord
from drsdtp.intelligence.results import TwinHealth
from drsdtp.models import AssetModel
from drsdtp.recovery import QuarantineEntry, RecoveryLedger
from drsdtp.relations.edges import Edge
from drsdtp.relations.query import QueryHit, QuerySpec
from drsdtp.rules.ops import AlertingOps

if TYPE_CHECKING:
    from drsdtp.api.services.commands import CommandOps

__all__ = [
    "AnomalyReader",
    "AuditEntry",
    "DeadLetterOps",
    "LetterListing",
    "NodeApi",
    "NodeStatus",
    "PeerState",
    "RelationOps",
    "ReplayOutcome",
    "Selection",
    "SnapshotOps",
    "Value",
]


Value = float | int | bool | str | bytes  # what one register holds
TwinFilter = Callable[[str], bool]  # whether a twin id is visible to the caller


@dataclass(frozen=True, slots=True)
class PeerState:
    name: str
    address: str
    up: bool
    lag_s: float
    # Measured by replication probes (drsdtp.gossip.probe): the peer's clock minus ours, the round trip,
    # and convergence by state digest (the last comparison; seconds since digests were last equal, compared).
    clock_offset_s: float | None = None
    round_trip_s: float | None = None
    digest_equal: bool = False
    digest_equal_age_s: float | None = None
    digest_checked_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    replica_id: int
    version: str
    twins: int
    fields: int
    hlc: int
    clock_offset_s: float | None
    wal_records: int
    uptime_s: float
    scopes: tuple[str, ...]
    state_digest: int
    ingest: dict[str, int]  # received, invalid, dropped, late (summed over adapters)
    peers: tuple[PeerState, ...]
    recovery_unaccepted: int = 0  # write-ahead log recoveries that went past damage, not yet acknowledged
    not_ready_reason: str = ""  # why /readyz answers 503 (empty: ready)
    adapters: tuple[tuple[str, dict[str, int]], ...] = ()  # (adapter, its ingest counters) as in ``ingest``


@dataclass(frozen=True, slots=True)
class LetterListing:
    letters: list[Letter]  # the newest ``limit`` matching, oldest first
    total: int  # matching, before the limit
    held: int
    held_bytes: int


@dataclass(slots=True)
class ReplayOutcome:
    id: int
    applied: bool = False
    readings: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: ``ids``, or every one (``all``), of ``adapter`` when set."""

    ids: Sequence[int] = ()
    all: bool = False
    adapter: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One twin's part of an application write, for the audit trail."""

    twin: str
    action: Literal["write", "create", "delete", "refused"]  # refused: an API call authorization refused
    changes: Mapping[str, Change]
    actor: str
    reason: str


class SnapshotOps(Protocol):
    async def take(self, twin: str, reason: str, actor: str) -> SnapshotInfo: ...
    async def listing(self, twin: str) -> list[SnapshotInfo]: ...
    async def rollback(self, twin: str, snapshot_id: str, actor: str, reason: str) -> RollbackResult: ...
    async def read_audit(
        self, twin: str | None, start_ms: int | None, end_ms: int | None, actor: str | None
    ) -> tuple[list[AuditRecord], Verification]: ...


class DeadLetterOps(Protocol):
    def listing(self, adapter: str, limit: int) -> LetterListing: ...
    async def replay(self, select: Selection) -> list[ReplayOutcome]: ...
    async def purge(self, select: Selection) -> int: ...


class AnomalyReader(Protocol):
    """The node's anomaly log, read side (:class:`drsdtp.intelligence.anomalies.AnomalyJournal`)."""

    per_twin: int
    max_events: int

    # ``where``: only records of twins it holds for (the caller's scopes, drsdtp.api.visibility).
    def after(
        self,
        seq: int,
        twins: Sequence[str] | None = None,
        limit: int = 1000,
        where: TwinFilter | None = None,
    ) -> list[AnomalyRecord]: ...
    def latest(
        self, twins: Sequence[str] | None = None, limit: int = 100, where: TwinFilter | None = None
    ) -> list[AnomalyRecord]: ...
    def count(self, twins: Sequence[str] | None = None, where: TwinFilter | None = None) -> int: ...
    async def wait_after(self, seq: int) -> None: ...
    @property
    def next_seq(self) -> int: ...


class RelationOps(Protocol):
    """Relations between twins (:class:`drsdtp.relations.service.RelationService`)."""

    async def relate(self, add: Sequence[Edge], remove: Sequence[Edge]) -> int: ...
    def query(self, spec: QuerySpec) -> tuple[list[QueryHit], int]: ...


class NodeApi(Protocol):
    """The node as the API services see it."""

    @property
    def store(self) -> Store:
        """The twin store, for reads (writes go through :meth:`commit`)."""
        ...

    @property
    def feed(self) -> ChangeFeed: ...
    @property
    def snapshots(self) -> SnapshotOps: ...
    @property
    def dead_letter_service(self) -> DeadLetterOps: ...
    def status(self) -> NodeStatus: ...
    async def read_history(
        self, twin: str, field: str, start_ms: int, end_ms: int, resolution: str, limit: int
    ) -> SeriesData:
        """Raises :class:`drsdtp.errors.DrsdtpError` when the node keeps no history."""
        ...

    def insight(self, twin_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...
    @property
    def anomalies(self) -> AnomalyReader: ...
    @property
    def alerting(self) -> AlertingOps:
        """Rules and alarms (:mod:`drsdtp.rules.ops`)."""
        ...

    @property
    def relations(self) -> RelationOps: ...
    def health_view(self, twins: Sequence[str], model: str) -> list[TwinHealth]:
        """Health from the last intelligence pass, no forecast (every judged twin when ``twins`` is empty)."""
        ...

    def writer_name(self, replica: int) -> str:
        """The node id of a writer (replica id), "" when this node does not know it."""
        ...

    # ----- writes -----------------------------------------------------------------------------------------
    @property
    def limits(self) -> LimitsConfig: ...
    def model(self, name: str) -> AssetModel | None:
        """The asset model of that name, None when the node knows none."""
        ...

    def twin_defaults(self, twin: str, model: str) -> Mapping[str, Value]:
        """What a new twin gets: ``model`` (with its version) when given, else the model of the node's
        twin rules, and the rules' scope."""
        ...

    async def commit(self, delta: bytes, twins: Sequence[str], origin: str) -> None:
        """Makes a delta already applied to the store durable, then replicates and announces it. Its first
        step appends to the log: call it in the same loop step that applied the delta."""
        ...

    async def audit(self, entries: Sequence[AuditEntry]) -> None:
        """Appends the entries to the audit trail (fsynced shortly after, not waited for)."""
        ...

    async def audit_request(
        self, actor: str, reason: str, twins_json: str, intents: Sequence[AuditEntry] = ()
    ) -> None:
        """Appends one request's record whose twins part (``{"TWIN":{"action":...,"changes":...},...}``,
        canonical JSON) is already written, as :meth:`audit` would for its entries; ``intents``: the
        twins' changes of desired values that record names (for actuation, as :meth:`audit` sees them)."""
        ...

    def peer_count(self) -> int:
        """Peers this node replicates to (configured or learnt)."""
        ...

    async def wait_replicated(self, peers: int, timeout_s: float) -> int:
        """Waits until ``peers`` peers have acknowledged (made durable) everything this node committed up
        to the call, or the timeout; returns how many had."""
        ...

    @property
    def recovery(self) -> RecoveryLedger:
        """What the write-ahead log's recovery found (quarantine entries, this start's report)."""
        ...

    async def accept_recovery(self, actor: str, reason: str) -> list[QuarantineEntry]:
        """Acknowledges every pending recovery (audited); returns the entries acknowledged."""
        ...

    @property
    def commands(self) -> CommandOps:
        """The command book (issue, get, list, cancel, wait): the Command methods' only way in."""
        ...
