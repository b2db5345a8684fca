"""The drsdtp node: one store made durable, fed by ingestion, replicated to peers, read through the API.

:class:`Node` builds every part from a :class:`NodeConfig` and hands them, in dependency order, to
:func:`drsdtp.lifecycle.run_services`, which starts them in order and stops them in reverse within the
shutdown deadline: intake stops first, then the API, peers, and the durable store flushes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Self

from drsdtp import __version__, stages
from drsdtp._core import Store
from drsdtp.actions import CommandBook
from drsdtp.api.feed import Change, ChangeFeed, FeedKeeper
from drsdtp.api.idempotency import IdempotencyStore
from drsdtp.api.node import AuditEntry, NodeStatus, PeerState
from drsdtp.api.server import ApiServer
from drsdtp.clock import ClockMonitor, HighWaterKeeper, restore_high_water
from drsdtp.clock_offset_hook import ClockOffsetHook
from drsdtp.config import LimitsConfig, NodeConfig
from drsdtp.core import replica_id
from drsdtp.errors import PreconditionError
from drsdtp.gossip.membership import members
from drsdtp.gossip.replicator import Replicator
from drsdtp.gossip.scopes import SCOPE_FIELD
from drsdtp.gossip.stats import GossipPeerStats
from drsdtp.history.series import SeriesData
from drsdtp.ingest.deadletters import DeadLetterOptions, DeadLetterStore
from drsdtp.intelligence.anomalies import AnomalyJournal
from drsdtp.intelligence.results import TwinHealth
from drsdtp.metrics import MetricsServer, NodeMetrics
from drsdtp.models import MODEL_FIELD, AssetModel
from drsdtp.node.actuation import Actuation
from drsdtp.node.archived_history import read_archived
from drsdtp.node.deadletters import DeadLetterService
from drsdtp.node.durable import WAL_DIR, DurableStore
from drsdtp.node.history import HistoryService
from drsdtp.node.insight import MODEL_VERSION_FIELD, InsightService, register_intel_metrics
from drsdtp.node.intake import Intake
from drsdtp.node.peer_readings import PeerReadings
from drsdtp.node.recovery import accept, register_metrics
from drsdtp.node.snapshots import SnapshotService
from drsdtp.recovery import QuarantineEntry, RecoveryLedger
from drsdtp.relations.service import RelationService
from drsdtp.rules.alerting import Alerting
from drsdtp.stats import StoreSize

if TYPE_CHECKING:
    from drsdtp.api.http import HttpApiServer
    from drsdtp.kubeedge.mapper import KubeEdgeMapper
    from drsdtp.northbound.postgres import ChangeSink, EventSink, PostgresSink
    from drsdtp.northbound.sparkplug import SparkplugPublisher

log = logging.getLogger(__name__)

HLC_FILE = "hlc.mark"
# The group commit's own stamps (DurableStore.last_commit_ns) as a traced write names them (drsdtp.stages).
COMMIT_STAGES = ("committer_woke", "fsync_handed", "fsync_started", "fsync_done", "committer_resumed")
Service = AbstractAsyncContextManager[Any]


class Node:
    """Everything one node runs. Use :meth:`services` with ``run_services`` (the daemon), or ``async with``
    (tests and embedding), which enters the same services in the same order."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        limits = config.limits
        self._store = Store(
            replica_id(config.node_id),
            max_offset_ms=config.clock.max_offset_ms,
            max_message_bytes=max(limits.max_message_bytes, 64 << 20),
            max_name_bytes=limits.max_name_bytes,
        )
        # Test-only (None unless DRSDTP_TEST_CLOCK_OFFSET_FILE is set): applied before anything is stamped.
        self.clock_hook = ClockOffsetHook.from_environment(self._store)
        mark = restore_high_water(config.data_dir / HLC_FILE)
        if mark is not None:
            self._store.restore_clock(mark)
        # Models are validated before anything is opened: a bad model stops the node at once.
        self.intelligence = InsightService(self)
        self.durable = DurableStore.open(config.data_dir, self._store, config.wal)
        # Numbered by the HLC and seeded with every twin, so a Watch cursor survives a restart.
        self._feed = ChangeFeed(clock=self._store.now, names=self._store)
        self.feed_keeper = FeedKeeper(self._feed, config.data_dir / "api" / "feed", self._store.twins())
        # Called with the twins of each local commit once it is in the store and appended to the log, before
        # it is durable: a follower (the executor watching for an echo) can act at once, and anything it
        # appends is durable only after what it saw (one log, in order).
        self.appended_hooks: list[Callable[[Sequence[str]], None]] = []
        self.metrics = NodeMetrics(config.node_id)
        self.metrics.watch_store(self._store_size)
        self.clock = ClockMonitor(
            config.clock.ntp_server,
            interval_s=config.clock.ntp_interval_s,
            timeout_s=config.clock.ntp_timeout_s,
            max_offset_s=config.clock.max_offset_ms / 1000,
        )
        self.metrics.watch_clock(lambda: self.clock.latest)
        self.high_water = HighWaterKeeper(
            config.data_dir / HLC_FILE,
            self._store.clock_high_water,
            interval_s=config.clock.persist_interval_s,
        )
        self.idempotency = IdempotencyStore(
            config.data_dir / "api" / "idempotency",
            max_keys=limits.api_idempotency_keys,
            max_age_s=limits.api_idempotency_s,
        )
        self._writer_names: dict[int, str] = {}
        self._names_read = 0.0
        self.api = ApiServer(
            self, config.listen.api, limits, tls=config.tls, keys=self.idempotency, api=config.api
        )
        self.metrics.add_labelled_counter(
            "drsdtp_api_auth_refusals",
            "API calls refused by authorization: credentials, issuer (its keys could not be fetched), method "
            "(role), scope, rate (limit per caller).",
            ("reason",),
            lambda: self.api.authority.refusals,
        )
        oidc = self.api.authority.oidc
        if oidc is not None:
            signing = oidc.keys
            self.metrics.add_labelled_counter(
                "drsdtp_api_oidc_fetch_errors",
                "Failed fetches of the OIDC issuer's discovery document or key set, by stage.",
                ("stage",),
                lambda: signing.errors,
            )
            self.metrics.add_gauge(
                "drsdtp_api_oidc_keys", "OIDC signing keys held (static and fetched).", lambda: len(signing)
            )
        watchers = self.api.watchers
        self.metrics.add_gauge("drsdtp_api_watchers", "Watch streams open.", lambda: watchers.open)
        keys = self.idempotency
        self.metrics.add_gauge(
            "drsdtp_api_idempotency_keys", "Write idempotency keys remembered (bounded).", lambda: len(keys)
        )
        self.metrics.add_counter(
            "drsdtp_api_write_repeats",
            "Writes answered from an idempotency key (a retry: nothing applied).",
            lambda: keys.repeats,
        )
        self.metrics.add_labelled_counter(
            "drsdtp_api_write_paths",
            "Write requests by path: bulk (numeric reports decoded natively, checked per twin and field "
            "name) or general.",
            ("path",),
            lambda: {(path,): n for path, n in self.api.write_paths.items()},
        )
        self.metrics.add_labelled_counter(
            "drsdtp_api_watchers_refused",
            "Watch streams refused over limits.api_max_watchers (node) or _per_caller (caller).",
            ("reason",),
            lambda: {(reason,): n for reason, n in watchers.refused.items()},
        )
        self.metrics.add_counter(
            "drsdtp_api_watchers_cut_off",
            "Watch streams ended because a write was not taken within limits.api_watch_stall_s.",
            lambda: watchers.cut_off,
        )
        self.metrics.add_labelled_counter(
            "drsdtp_api_requests",
            "Application API requests by method and status.",
            ("method", "code"),
            lambda: self.api.requests.counts,
        )
        self.api_http: HttpApiServer | None = None
        if config.api.http.listen is not None:
            # Imported here: aiohttp costs a node without the HTTP face ~11 MB.
            from drsdtp.api.http import http_face

            self.api_http = http_face(self.api, config.api.http, limits)
            http = self.api_http
            self.metrics.add_labelled_counter(
                "drsdtp_api_http_requests",
                "HTTP/JSON API requests by method and status (the gRPC code of the reply).",
                ("method", "code"),
                lambda: http.counts,
            )
        self.recovery = RecoveryLedger(
            config.data_dir / WAL_DIR, self.durable.stats.recovery, self.durable.stats.recovery_s
        )
        register_metrics(self.metrics, self.recovery)
        self.metrics_server = MetricsServer(
            self.metrics, config.listen.metrics, not_ready=self.recovery.not_ready_reason
        )
        self._known_twins: set[str] = set(self._store.twins())
        dl = config.deadletters
        self.dead_letters: DeadLetterStore = DeadLetterStore(
            config.data_dir / "deadletters",
            DeadLetterOptions(dl.max_letters, dl.max_bytes, dl.max_payload_bytes),
        )
        self.intake = Intake(self)
        self.dead_letter_service = DeadLetterService(self.dead_letters, lambda: self.intake.service.runners)
        self.metrics.apply_latency = self.intake.sink.apply_latency
        self.metrics.wal_fsync_latency = self.durable.stats.fsync_latency
        wal = self.durable.stats
        self.metrics.add_counter("drsdtp_wal_records", "Records made durable.", lambda: wal.records)
        self.metrics.add_counter("drsdtp_wal_snapshots", "Log snapshots taken.", lambda: wal.snapshots)
        self.metrics.add_counter(
            "drsdtp_wal_failed_snapshots",
            "Snapshots that could not be written or did not verify (the older ones were kept).",
            lambda: wal.failed_snapshots,
        )
        self.metrics.add_counter(
            "drsdtp_wal_failed_commits",
            "Failed log writes; after one the node acknowledges nothing until restarted.",
            lambda: wal.failed_commits,
        )
        # Readings in peers' deltas reach history and intelligence too: every replica understands its twins.
        self.peer_readings = PeerReadings(self._store)
        self.history: HistoryService | None = None
        # History's journal: each ingested batch also goes to the log, in the batch's own group commit, so a
        # reading acknowledged to its source is in history after any crash (drsdtp.history.journal).
        journalled = list(self.durable.take_recovered_aux())
        if config.history.enabled:
            self.history = HistoryService(
                config.data_dir,
                config.history,
                self._store,
                journal_to=self._journal if config.wal.enabled else None,
            )
            self.history.recover(journalled)
            self.durable.add_snapshot_barrier(self.history.flush)
            self.intake.sink.observers.append(self.history.observe)
            self.peer_readings.observers.append(self.history.observe_replicated)
        self.postgres: PostgresSink | None = None
        if config.postgres is not None and self.history is not None:
            # Northbound and KubeEdge modules are imported only when configured (an idle node's RSS).
            from drsdtp.northbound.postgres import PostgresSink, add_sink_metrics

            self.postgres = PostgresSink(config.data_dir / "postgres", config.postgres, config.node_id)
            self.postgres.recover(journalled)
            self.history.reserve_journal(self.postgres.outbox.mark)
            # Before a snapshot truncates the log, the outbox holds every journalled batch.
            self.durable.add_snapshot_barrier(self.postgres.flush)
            self.history.journal_listeners.append(self.postgres.observe)
            add_sink_metrics(self.metrics, self.postgres)
        self.sparkplug: SparkplugPublisher | None = None
        if config.sparkplug is not None:
            from drsdtp.northbound.sparkplug import SparkplugPublisher, add_publisher_metrics

            self.sparkplug = SparkplugPublisher(
                config.sparkplug,
                config.node_id,
                self._store,
                self._feed,
                config.data_dir,
                forecasts=self.intelligence,
            )
            add_publisher_metrics(self.metrics, self.sparkplug)
        self.kubeedge: KubeEdgeMapper | None = None
        if config.kubeedge is not None:
            # A KubeEdge mapper (DMI): reads and writes twins through the API's own GetTwin and Write.
            from drsdtp.kubeedge.mapper import KubeEdgeMapper, TwinAccess, add_mapper_metrics

            methods = self.api.methods
            twins = TwinAccess(methods["GetTwin"], methods["Write"])
            self.kubeedge = KubeEdgeMapper(config.kubeedge, config.data_dir, twins)
            add_mapper_metrics(self.metrics, self.kubeedge)
        self.replicator = Replicator(
            self._store,
            config.node_id,
            config.listen.peer,
            config.peers,
            config.scopes,
            config.tls,
            config.limits,
            persist=self.durable.record,
            stats=self.metrics,
            sync=self.durable.sync,
            clock_offset=lambda: self.clock.latest,
            on_change=lambda twins: self._feed.publish(twins, "peer"),
            on_readings=self.peer_readings.observe_merged,
        )

        self.snapshots = SnapshotService(
            config.data_dir, self._store, self.commit, per_twin=config.history.snapshots_per_twin
        )
        refusals = self.replicator.stats.refused_handshakes
        self.metrics.add_labelled_counter(
            "drsdtp_peer_handshakes_refused",
            "Peer connections refused at the handshake (identity, version, scope ...).",
            ("reason",),
            lambda: {(str(reason),): n for reason, n in refusals.items()},
        )
        self.intake.sink.observers.append(self.intelligence.observe)
        self.peer_readings.observers.append(self.intelligence.observe_replicated)
        readings, intel = self.peer_readings, self.intelligence
        self.metrics.add_counter(
            "drsdtp_peer_readings",
            "Numeric readings learnt from peers' deltas (fed to history and intelligence).",
            lambda: readings.readings,
        )
        self.metrics.add_counter(
            "drsdtp_peer_readings_failed",
            "Peer deltas whose readings could not be passed on (the deltas themselves were applied).",
            lambda: readings.failures,
        )
        self.metrics.add_counter(
            "drsdtp_model_reloads", "Model reloads applied (SIGHUP, drsdtp reload).", lambda: intel.reloads
        )
        self.metrics.add_counter(
            "drsdtp_model_reloads_refused",
            "Model reloads refused (the config did not validate; the running models stayed).",
            lambda: intel.refused_reloads,
        )
        register_intel_metrics(self.metrics, intel)
        # Relations between twins: replicated edges, queried locally; the intelligence reads them.
        self.relation_service = RelationService(self, config.relations)
        intel.related, intel.peers = self.relation_service.affected, self.relation_service.peers
        # Commands: every node takes them and shows their status; the owner of an actuator executes them.
        self.actuation = Actuation(self)
        self.snapshots.before_read.append(self.actuation.audits_written)  # a read shows every event queued
        # Rules, alarms and notifications (drsdtp.rules, drsdtp.alarms, drsdtp.notify).
        self.alerting = Alerting(self)
        self.postgres_events: EventSink | None = None
        if self.postgres is not None and self.postgres.config.events:
            from drsdtp.northbound.postgres import EventSink, add_event_metrics

            self.postgres_events = EventSink(
                self.postgres.config,
                config.node_id,
                self.intelligence.anomalies,
                self._feed,
                alarms=self.alerting.alarm_book,
                commands=self.actuation.book,
            )
            add_event_metrics(self.metrics, self.postgres_events)
        self.postgres_changes: ChangeSink | None = None
        if self.postgres is not None and self.postgres.config.changes:
            from drsdtp.northbound.postgres import ChangeSink, add_change_metrics

            self.postgres_changes = ChangeSink(self.postgres.config, config.node_id, self._store, self._feed)
            add_change_metrics(self.metrics, self.postgres_changes)
        self._stack: contextlib.AsyncExitStack | None = None

    # ----- the NodeApi of the API (drsdtp.api.node) -------------------------------------------------

    @property
    def store(self) -> Store:
        return self._store

    @property
    def feed(self) -> ChangeFeed:
        return self._feed

    def status(self) -> NodeStatus:
        addresses = {p.name: f"{p.address.host}:{p.address.port}" for p in self.config.peers}
        return NodeStatus(
            node_id=self.config.node_id,
            replica_id=self._store.replica_id,
            version=__version__,
            twins=sum(not t.startswith("_") for t in self._store.twins()),
            fields=self._store.stats()["fields"],
            hlc=self._store.clock_high_water(),
            clock_offset_s=self.clock.latest.offset_s,
            wal_records=self.durable.stats.records,
            uptime_s=time.monotonic() - self.started,
            scopes=tuple(self.config.scopes),
            state_digest=self.state_digest(),
            ingest=dict(self.intake.totals()),
            peers=tuple(
                peer_state(name, addresses.get(name, ""), peer, time.monotonic())
                for name, peer in sorted(self.replicator.peer_stats().items())
            ),
            recovery_unaccepted=len(self.recovery.unaccepted),
            not_ready_reason=self.recovery.not_ready_reason() or "",
            adapters=self.intake.per_adapter(),
        )

    async def accept_recovery(self, actor: str, reason: str) -> list[QuarantineEntry]:
        """Acknowledges what the log's recovery found (audited); the node becomes ready."""
        return await accept(self.recovery, actor, reason, self.snapshots.audit_recovery)

    async def read_history(
        self, twin: str, field: str, start_ms: int, end_ms: int, resolution: str, limit: int
    ) -> SeriesData:
        if self.history is None:
            raise PreconditionError("history is not enabled on this node")
        if self.postgres is not None and self.postgres.archive is not None:
            return await read_archived(
                self.history, self.postgres.archive, self.history.store.options,
                twin, field, start_ms, end_ms, resolution, limit,
            )  # fmt: skip
        return await self.history.query(twin, field, start_ms, end_ms, resolution, limit)

    def insight(self, twin_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.intelligence.insight(twin_id, kind, params)

    @property
    def anomalies(self) -> AnomalyJournal:
        """The anomaly log (read: ``latest``, ``after``, ``count``, ``wait_after``; see its module)."""
        return self.intelligence.anomalies

    @property
    def relations(self) -> RelationService:
        """Relations between twins: ``relate(add, remove)``, ``query(spec)``, ``index`` (see its module)."""
        return self.relation_service

    def changed_twins(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        return self._feed.read(cursor, limit)

    def judged_health(self, twins: Sequence[str]) -> dict[str, tuple[str, str]]:
        return self.intelligence.judged_health(twins)

    def health_view(self, twins: Sequence[str], model: str = "") -> list[TwinHealth]:
        """Twin health from the last intelligence pass, no forecast computed (every judged twin when
        ``twins`` is empty; of ``model`` only when set)."""
        return self.intelligence.health_view(twins, model)

    @property
    def limits(self) -> LimitsConfig:
        return self.config.limits

    def model(self, name: str) -> AssetModel | None:
        return self.intelligence.catalog.models.get(name)  # the running models (SIGHUP reloads them)

    def twin_defaults(self, twin: str, model: str) -> dict[str, str | bytes | float | int | bool]:
        meta = self.twin_meta(twin)
        if model:
            meta[MODEL_FIELD] = model
            meta[MODEL_VERSION_FIELD] = self.intelligence.catalog.get(model).tag
        return meta

    async def audit(self, entries: Sequence[AuditEntry]) -> None:
        await self.snapshots.audit_writes(entries)
        await self.actuation.on_writes(entries)

    async def audit_request(
        self, actor: str, reason: str, twins_json: str, intents: Sequence[AuditEntry] = ()
    ) -> None:
        await self.snapshots.audit_request(actor, reason, twins_json)
        if intents:
            await self.actuation.on_writes(intents)

    @property
    def commands(self) -> CommandBook:
        """The in-process command interface (``issue_command``, ``get``, ``list``, ``cancel``, ``wait``)."""
        return self.actuation.book

    def writer_name(self, replica: int) -> str:
        name = self._writer_names.get(replica)
        if name is None and time.monotonic() - self._names_read > 1.0:  # the members may have grown
            self._names_read = time.monotonic()
            known = [self.config.node_id, *(p.name for p in self.config.peers), *members(self._store)]
            self._writer_names = {replica_id(n): n for n in known}
            name = self._writer_names.get(replica)
        return name or ""

    def peer_count(self) -> int:
        return len(self.replicator.peer_stats())

    async def wait_replicated(self, peers: int, timeout_s: float) -> int:
        return await self.replicator.wait_acked(self.replicator.log_head, peers, timeout_s)

    def state_digest(self) -> int:
        """A 64-bit digest of the whole state (equal on converged nodes)."""
        return int.from_bytes(hashlib.blake2b(self._store.digest(), digest_size=8).digest(), "big")

    def _store_size(self) -> StoreSize:
        st = self._store.stats()
        return StoreSize(twins=st["twins"], fields=st["fields"])

    # ----- writes -----------------------------------------------------------------------------------------

    async def commit(self, delta: bytes, twins: Sequence[str], origin: str) -> None:
        """Makes a delta already applied to the store durable, then announces it. Returns once durable:
        only then may the caller acknowledge the update."""
        durable = self.durable.append(delta)
        stages.mark("appended")
        self._appended(twins)
        await asyncio.shield(durable)
        if stages.ENABLED:
            for name, ns in zip(COMMIT_STAGES, self.durable.last_commit_ns, strict=True):
                stages.mark_at(name, ns)
            stages.mark("durable")
        # Announced in this task: its own follow-up (the API's audit, a desired value's command with its
        # caller) runs before the watchers the feed wakes.
        self.replicator.on_local_delta(delta)
        self._feed.publish(twins, origin)

    def start_commit(self, delta: bytes, twins: Sequence[str], origin: str) -> asyncio.Future[None]:
        """:meth:`commit` without waiting: appends now (anything appended later is durable only after it)
        and returns a future that resolves once it is durable and announced (or fails with the log's
        error). The caller may go on at once and await it later, or never (then nothing is lost: it is
        announced all the same)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        durable = self.durable.append(delta)
        self._appended(twins)

        def announce(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                done.cancel()
                return
            exc = f.exception()
            if exc is not None:  # the log's error: the caller gets it (if it waits)
                done.set_exception(exc)
                done.exception()  # retrieved here too: a caller that did not wait is no error
                return
            done.set_result(None)
            self.replicator.on_local_delta(delta)
            self._feed.publish(twins, origin)

        durable.add_done_callback(announce)
        return done

    def _appended(self, twins: Sequence[str]) -> None:
        for hook in self.appended_hooks:
            try:
                hook(twins)
            except Exception:  # a follower's bug must not fail the commit
                log.exception("a commit hook failed")

    async def commit_all(self, deltas: Sequence[tuple[bytes, Sequence[str]]], origin: str) -> None:
        """Several deltas in one group commit: all appended at once (before anything else runs), then
        awaited together, then announced."""
        if not deltas:  # every ingest batch asks (ensure_twins), almost always with nothing new
            return
        durable = [self.durable.append(delta) for delta, _ in deltas]
        for _, twins in deltas:
            self._appended(twins)
        await asyncio.shield(asyncio.gather(*durable))
        for delta, twins in deltas:
            self.replicator.on_local_delta(delta)
            self._feed.publish(twins, origin)

    async def ensure_twins(self, twins: Sequence[str]) -> None:
        """Gives twins seen for the first time their model and scope from the config's twin rules."""
        fresh = [t for t in twins if t not in self._known_twins]
        self._known_twins.update(fresh)
        unnamed = [t for t in fresh if t not in self._store or self._store.get(t, SCOPE_FIELD) is None]
        await self.commit_all([(self._store.set_many(t, self.twin_meta(t)), [t]) for t in unnamed], "local")

    def twin_meta(self, twin: str) -> dict[str, str | bytes | float | int | bool]:
        """Model, model version and scope for a twin this node creates, by the first matching twin rule."""
        for rule in self.config.twins:
            if fnmatch.fnmatchcase(twin, rule.match):
                version = self.intelligence.catalog.get(rule.model).tag
                scope = rule.scope or self.config.scopes[0]
                return {MODEL_FIELD: rule.model, MODEL_VERSION_FIELD: version, SCOPE_FIELD: scope}
        return {SCOPE_FIELD: self.config.scopes[0]}

    def reload(self, config: NodeConfig) -> None:
        """SIGHUP: apply the models of a freshly read config (see :meth:`InsightService.reload`)."""
        self.intelligence.reload(config)

    def _journal(self, record: bytes) -> None:
        """Appends a history journal record to the log. Nothing awaits it: the batch's delta, appended
        after it, is what the source's acknowledgement waits for, and one commit makes both durable."""
        self.durable.append_aux(record).add_done_callback(_retrieve)

    # ----- lifecycle --------------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        """In start order; stopped in reverse."""
        return [
            self.durable,
            self.feed_keeper,
            self.snapshots,
            self.high_water,
            self.clock,
            *([self.clock_hook] if self.clock_hook is not None else []),
            *([self.history] if self.history is not None else []),
            *([self.postgres] if self.postgres is not None else []),
            *([self.postgres_events] if self.postgres_events is not None else []),
            *([self.postgres_changes] if self.postgres_changes is not None else []),
            self.intelligence,
            self.replicator,
            self.relation_service,
            self.api,
            *([self.api_http] if self.api_http is not None else []),
            *([self.sparkplug] if self.sparkplug is not None else []),
            *([self.kubeedge] if self.kubeedge is not None else []),
            self.metrics_server,
            *self.alerting.services(),
            self.dead_letters,
            self.intake,
            self.actuation,  # after intake: the executor writes through its adapters
        ]

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for service in self.services():
                await stack.enter_async_context(service)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None


def _retrieve(future: asyncio.Future[None]) -> None:
    """A failed commit is reported to the writers of the same group; here it only must not go unretrieved."""
    if not future.cancelled():
        future.exception()


def peer_state(name: str, address: str, peer: GossipPeerStats, now: float) -> PeerState:
    """What Status says of one peer (``now``: the monotonic clock the replicator's times are on)."""

    def age(at: float | None) -> float | None:
        return None if at is None else max(0.0, now - at)

    return PeerState(
        name,
        address,
        peer.up,
        peer.lag_s or 0.0,
        clock_offset_s=peer.peer_offset_s,
        round_trip_s=peer.probe_round_trip_s,
        digest_equal=peer.digest_equal,
        digest_equal_age_s=age(peer.digest_equal_at),
        digest_checked_age_s=age(peer.digest_checked_at),
    )
