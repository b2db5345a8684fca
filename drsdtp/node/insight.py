"""Twin intelligence in the node: readings of modelled twins feed the rolling windows; a periodic pass
computes health, traits, forecasts and divergence; the API serves health, forecasts, what-if runs,
recommendations and the model itself as JSON documents.

Models are data (:mod:`drsdtp.models`): the library's, ``models_dir`` and the config's ``[[models]]``. A twin
gets its model from the ``[[twins]]`` rules when it is created (its ``_model`` field) and, on the node that
assigns it, the model's ``<version>#<fingerprint>`` as ``_model_version``, so replicas can tell when they
hold a different version.

Every node that holds a twin understands it: readings come from local ingestion and from peers' deltas
(:mod:`drsdtp.node.peer_readings`, coalesced values). Only the node that ingests a twin writes its quality
scores back (``<field>.q``, replicated with the values) and its model version; a replica's health prefers
those scores (:mod:`drsdtp.node.replica_health`).

Time: the engine runs in plant seconds, ``wall seconds * intelligence.time_scale``. A simulated plant running
10x faster than real time (the demo) is declared with ``time_scale = 10``: expected periods, kernels,
forecast horizons and the divergence monitor then keep their physical meaning, and passes run every
``PASS_INTERVAL_S`` plant seconds (at most every ``MIN_PASS_WALL_S`` of wall time).

Reload (SIGHUP, ``drsdtp reload``): :meth:`InsightService.reload` re-validates the models of a freshly read
config and swaps them in; a bad config is refused and the running models stay. A changed model restarts the
node's intelligence (its windows fill again from new readings); nothing else of the config is reloaded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from drsdtp.adapters.base import ReadingBatch
from drsdtp.config import NodeConfig
from drsdtp.errors import (
    ConfigError,
    DrsdtpError,
    InvalidValueError,
    NotReadyError,
    StorageError,
    UnknownTwinError,
)
from drsdtp.ingest.same_ids import SameIds
from drsdtp.intelligence.anomalies import AnomalyJournal
from drsdtp.intelligence.results import AnomalyEvent, TwinHealth
from drsdtp.intelligence.serialize import to_jsonable
from drsdtp.intelligence.status import STATUS_CODES
from drsdtp.kernels import KernelRegistry, Scenario, TrackingKernel, default_registry
from drsdtp.lifecycle import BackgroundService
from drsdtp.models import MODEL_FIELD, AssetModel, ModelCatalog
from drsdtp.node.replica_health import overlay_origin_quality
from drsdtp.relations.corroborate import corroborate

if TYPE_CHECKING:
    from drsdtp.intelligence.engine import TwinIntelligence
    from drsdtp.metrics import NodeMetrics
    from drsdtp.node.node import Node
    from drsdtp.northbound.sparkplug_forecast import Outlook  # built for a Sparkplug publisher only

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "MODEL_VERSION_FIELD",
    "InsightService",
    "ReloadResult",
    "pass_interval_s",
    "register_intel_metrics",
]

log = logging.getLogger(__name__)

PASS_INTERVAL_S = 2.0  # plant seconds between passes ...
MIN_PASS_WALL_S = 0.25  # ... but not more often than this in wall time (a plant simulated 100x faster)
QUALITY_STEP = 0.05  # write a quality back only when it moved this much (spares the log and the peers)
MODEL_VERSION_FIELD = "_model_version"
ANOMALY_DIR = "anomalies"
MAX_UNLOGGED = 10_000  # events waiting for the next pass; more are logged at once
CORROBORATION_WINDOW_S = 600.0  # plant seconds within which related sensors count as seeing the same change


def pass_interval_s(time_scale: float) -> float:
    """Wall seconds between intelligence passes at ``time_scale`` plant seconds per wall second."""
    return max(MIN_PASS_WALL_S, PASS_INTERVAL_S / time_scale)


class ReloadResult:
    """What a reload did: the models that changed (added, removed, new content) and what needs a restart."""

    def __init__(self, changed: tuple[str, ...], restart_needed: tuple[str, ...]) -> None:
        self.changed, self.restart_needed = changed, restart_needed


class InsightService(BackgroundService):
    name = "intelligence"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry: KernelRegistry = default_registry()
        self.catalog = ModelCatalog.from_config(node.config, self.registry)
        self.time_scale = node.config.intelligence.time_scale
        self._engine: TwinIntelligence | None = None
        self._twins: dict[int, str] = {}  # twin id -> model, for twins with one
        # By twin id, 1: known to have no model (a byte per twin, where a dict entry took 71 B: issue 13).
        self._plain = bytearray()
        self._rows: dict[int, int] = {}  # (twin id << 32 | field id) -> engine row, -1: not a model field
        self._observed = False  # a reading was seen since the models were (re)loaded
        self._local: set[int] = set()  # twins this node ingests: it writes their quality and model version
        self._twin_ids = SameIds()  # a poller's batches repeat their twin ids
        self._local_seen: object = None  # the unique twin ids last added to _local
        self._written: dict[tuple[str, str], float] = {}
        self._tags: dict[str, str] = {}  # model versions written, per twin
        self.passes = 0
        self.reloads = 0
        self.refused_reloads = 0
        self.replicated_readings = 0
        settings = node.config.intelligence
        # The durable anomaly log (node.anomalies): every event of the engine, with model and related twins.
        self.anomalies = AnomalyJournal(
            node.config.data_dir / ANOMALY_DIR,
            per_twin=settings.anomalies_per_twin,
            max_events=settings.anomalies_max,
        )
        self.anomaly_counts: collections.Counter[tuple[str, ...]] = collections.Counter()  # (model, kind)
        # The twins an anomaly of a twin may affect, and the twins whose sensors can confirm it (the node
        # plugs its relations in here).
        self.related: Callable[[str], tuple[str, ...]] = lambda twin: ()
        self.peers: Callable[[str], Iterable[str]] = lambda twin: ()
        self._unlogged: list[AnomalyEvent] = []  # judged and logged at the next pass
        self.health_counts: dict[tuple[str, ...], float] = {}  # (model, status) -> twins, at the last pass

    @property
    def models(self) -> set[str]:
        return set(self.catalog.models)

    @property
    def engine(self) -> TwinIntelligence:
        """Built on first use: its windows cost a few MB that a node without modelled twins should not pay."""
        if self._engine is None:
            # Imported here too: the engine's modules are most of the intelligence's import cost.
            from drsdtp.intelligence.engine import TwinIntelligence

            self._engine = TwinIntelligence(registry=self.registry)
            for model in self.catalog:
                self._engine.add_model(model.spec)
            self._engine.anomaly_log.listeners.append(self._log_anomalies)
        return self._engine

    def _log_anomalies(self, events: Sequence[AnomalyEvent]) -> None:
        """Events wait for the next pass: judged together, a process change seen by several related
        sensors at once is told from one sensor going wrong whichever reading arrived first."""
        self._unlogged.extend(events)
        if len(self._unlogged) >= MAX_UNLOGGED:
            self._log_pending()

    def _log_pending(self) -> None:
        events, self._unlogged = self._unlogged, []
        if not events:
            return
        engine = self.engine
        twins = {e.twin for e in events}
        models = {t: engine.model_of(t) or "" for t in twins}
        related: dict[str, tuple[str, ...]] = {}
        causes: list[tuple[str, tuple[str, ...]]] | None = None
        try:  # a relation lookup must never lose the events themselves
            related = {t: self.related(t) for t in twins}
            peers = {t: list(self.peers(t)) for t in twins}
            index = engine.table.index
            verdicts = corroborate(
                events,
                peers.__getitem__,
                lambda twin, field: (twin, field) in index,
                lambda twin, field: (
                    r.event.t_s for r in self.anomalies.latest([twin], 64) if r.event.field == field
                ),
                CORROBORATION_WINDOW_S,
            )
            causes = [(v.cause, v.evidence) for v in verdicts]
        except Exception:
            log.exception("anomaly log: the related twins of %s could not be read", sorted(twins))
        for record in self.anomalies.append(events, models, related, causes):
            self.anomaly_counts[(record.model, record.event.kind)] += 1

    # -- twins and rows -------------------------------------------------------------------------------------

    def _model_of(self, twin_id: int) -> str | None:
        known = self._twins.get(twin_id)
        if known is not None or (twin_id < len(self._plain) and self._plain[twin_id]):
            return known
        name = self.node.store.twin_name(twin_id) or ""
        model = self.node.store.get(name, MODEL_FIELD)
        if isinstance(model, str) and model in self.catalog:
            self.engine.add_twin(name, model)
            self._twins[twin_id] = model
            return model
        if twin_id >= len(self._plain):
            self._plain.extend(bytes(max(twin_id + 1, 2 * len(self._plain)) - len(self._plain)))
        self._plain[twin_id] = 1
        return None

    def _row(self, key: int) -> int:
        row = self._rows.get(key)
        if row is None:
            self._observed = True
            twin_id, field_id = key >> 32, key & 0xFFFFFFFF
            # A twin without a model is known as such per twin (_plain): caching -1 for each of its fields
            # took 627 MB for a million 10-field twins (issue 13).
            if self._model_of(twin_id) is None:
                return -1
            twin = self.node.store.twin_name(twin_id) or ""
            field = self.node.store.field_name(field_id) or ""
            try:
                row = self.engine.row(twin, field)
            except DrsdtpError:
                row = -1
            self._rows[key] = row
        return row

    def _rows_of(self, batch: ReadingBatch) -> np.ndarray:
        rows = np.full(len(batch.twin_ids), -1, np.intp)
        if len(rows):
            self._observed = True
        # Twins without a model drop out once per distinct twin, not once per field (a replica receiving a
        # peer's stream spent a fifth of its time here, issue 13).
        twins = self._twin_ids.unique(batch.twin_ids)
        modelled = np.fromiter((self._model_of(int(t)) is not None for t in twins), np.bool_, len(twins))
        if not modelled.any():
            return rows
        sel = np.isin(batch.twin_ids, twins[modelled])
        keys = (batch.twin_ids[sel].astype(np.int64) << 32) | batch.field_ids[sel].astype(np.int64)
        distinct, inverse = np.unique(keys, return_inverse=True)
        rows[sel] = np.fromiter((self._row(int(k)) for k in distinct), np.intp, len(distinct))[inverse]
        return rows

    def observe(self, batch: ReadingBatch, twins: list[str]) -> None:
        """Intake observer (readings ingested here): map ids to engine rows once per pair, one ingest."""
        ids = self._twin_ids.unique(batch.twin_ids)
        if ids is not self._local_seen:  # the same ids as the last batch: already in _local
            self._local.update(ids.tolist())
            self._local_seen = ids
        rows = self._rows_of(batch)
        keep = rows >= 0
        if keep.any():
            self.engine.ingest(
                rows[keep], batch.source_ms[keep] / 1000.0 * self.time_scale, batch.values[keep]
            )

    def observe_replicated(self, batch: ReadingBatch) -> None:
        """Readings from a peer's delta: only values newer than what the windows hold (a catch-up resends
        registers already seen; those are no new readings)."""
        rows = self._rows_of(batch)
        keep = rows >= 0
        if not keep.any():
            return
        rows, t = rows[keep], batch.source_ms[keep] / 1000.0 * self.time_scale
        last = self.engine.windows.last_t[rows]
        newer = np.isnan(last) | (t > last)
        if newer.any():
            self.replicated_readings += int(
                self.engine.ingest(rows[newer], t[newer], batch.values[keep][newer])
            )

    # -- the periodic pass ----------------------------------------------------------------------------------

    def now(self) -> float:
        """Plant time now."""
        return time.time() * self.time_scale

    @property
    def pass_interval_s(self) -> float:
        """Wall seconds between passes: the same plant-time cadence at any speed, so a simulation run
        faster than real time is judged as the real plant would be (trackers step once per pass)."""
        return pass_interval_s(self.time_scale)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.pass_interval_s)
            await self.pass_once()

    async def pass_once(self) -> bool:
        """One pass, if there is anything to judge: readings seen and a modelled twin among them (the engine
        is built with the first one). Readings of twins without a model alone build nothing: importing the
        engine on the event loop took ~0.2 s, a stall every peer stream and API call of the node waited
        out, once the first of those readings arrived (the replication latency bench's p99)."""
        if not self._observed or self._engine is None:
            return False
        self._engine.evaluate(self.now())
        self.passes += 1
        self.health_counts = self._health_counts()
        self._log_pending()
        await self._write_back()
        await self._flush_anomalies()
        return True

    async def stopped(self) -> None:
        if self._engine is not None:
            self._log_pending()
        await self._flush_anomalies()

    def judged_health(self, twins: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{twin: (model, status)}`` of the twins judged at the last pass (others are left out)."""
        engine = self._engine
        if engine is None or engine.last is None:
            return {}
        status = engine.last.health.status
        index = engine.table.index
        out: dict[str, tuple[str, str]] = {}
        for twin in twins:
            model = engine.model_of(twin)
            if model is None:
                continue
            rows = [r for f in engine.models[model].fields if (r := index.get((twin, f.name))) is not None]
            rows = [r for r in rows if r < status.shape[0]]
            if rows:
                out[twin] = (model, STATUS_CODES[int(status[rows].max())].name)
        return out

    def outlook(self, twin: str, field: str) -> Outlook | None:
        """The field's linear-trend forecast at the first horizon of the last pass (the Sparkplug edge
        node's forecast metrics); None if the engine does not forecast the field or has not run."""
        engine = self._engine
        last = engine.last if engine is not None else None
        if engine is None or last is None:
            return None
        row = engine.table.index.get((twin, field))
        if row is None or row >= last.health.quality.shape[0]:
            return None
        fc = last.forecast
        if fc.horizons_s.size == 0:
            return None
        usable = bool(last.health.quality[row] >= engine.config.health.quality_threshold)

        def number(x: float) -> float | None:
            return float(x) if usable and math.isfinite(x) else None

        from drsdtp.northbound.sparkplug_forecast import Outlook

        return Outlook(
            float(fc.horizons_s[0]),
            number(fc.mean[row, 0]),
            number(fc.lower[row, 0]),
            number(fc.upper[row, 0]),
            number(fc.eta_high_s[row]),
            number(fc.eta_low_s[row]),
        )

    async def _flush_anomalies(self) -> None:
        try:
            await asyncio.to_thread(self.anomalies.flush)
        except StorageError as exc:  # counted; the events stay in memory and the next pass tries again
            log.error("%s", exc)

    def _health_counts(self) -> dict[tuple[str, ...], float]:
        """Twins per (model, status) at the last pass: the worst status of their fields."""
        last = self.engine.last
        if last is None:
            return {}
        status = last.health.status
        worst: dict[str, int] = {}
        for row, (twin, _) in enumerate(self.engine.table.keys):
            if row < status.shape[0]:
                worst[twin] = max(worst.get(twin, 0), int(status[row]))
        out: dict[tuple[str, ...], float] = {(m.name, s.name): 0 for m in self.catalog for s in STATUS_CODES}
        for twin, code in worst.items():
            key = (self.engine.model_of(twin) or "", STATUS_CODES[code].name)
            out[key] = out.get(key, 0) + 1
        return out

    def health_view(self, twins: Sequence[str], model: str) -> list[TwinHealth]:
        """Health of ``twins`` (every modelled twin when empty; of ``model`` only when set) from the last
        pass: no forecast is computed (the fast path for rules and dashboards)."""
        if self.passes == 0:
            raise NotReadyError("no intelligence pass has run yet; try again in a few seconds")
        if model and model not in self.catalog:
            raise InvalidValueError(f"health: {self.catalog.unknown(model)}")
        names = list(twins) if twins else sorted(self.engine.twins)
        out: list[TwinHealth] = []
        for twin in names:
            self._ensure(twin)
            if self.engine.model_of(twin) is None:
                continue  # modelled, but no reading yet: nothing to judge
            if model and self.engine.model_of(twin) != model:
                continue
            out.append(self.engine.health(twin))
        return out

    async def _write_back(self) -> None:
        """Quality scores, and model versions that changed, of the twins this node ingests."""
        store = self.node.store
        writes: list[tuple[bytes, list[str]]] = []
        for twin_id in sorted(self._local):
            model = self._twins.get(twin_id)
            if model is None:
                continue
            twin = store.twin_name(twin_id) or ""
            changed: dict[str, str | bytes | float | int | bool] = {
                name: q
                for name, q in self.engine.quality_fields(twin).items()
                if abs(self._written.get((twin, name), -1.0) - q) >= QUALITY_STEP
            }
            self._written.update({(twin, k): float(v) for k, v in changed.items()})
            tag = self.catalog.get(model).tag
            if self._tags.get(twin) != tag:
                if store.get(twin, MODEL_VERSION_FIELD) != tag and self._assigns(twin, model):
                    changed[MODEL_VERSION_FIELD] = tag
                self._tags[twin] = tag
            if changed:
                writes.append((store.set_many(twin, changed), [twin]))
        if writes:
            await self.node.commit_all(writes, "local")

    def _assigns(self, twin: str, model: str) -> bool:
        """Whether this node's twin rules give ``twin`` this model (it is the one to say which version)."""
        return self.node.twin_meta(twin).get(MODEL_FIELD) == model

    # -- the API --------------------------------------------------------------------------------------------

    def insight(self, twin: str, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """health | forecast | whatif | recommendations | model, as JSON-ready documents."""
        model = self._ensure(twin)
        if kind == "model":
            return self._model_doc(twin, model)
        if self.passes == 0:
            raise NotReadyError("no intelligence pass has run yet; try again in a few seconds")
        eng = self.engine
        if kind == "health":
            doc = eng.health(twin).to_dict()
            twin_id = self.node.store.intern_twin(twin)
            if twin_id not in self._local:
                doc = overlay_origin_quality(doc, lambda f: self._origin_quality(twin, f), eng.config.health)
            return doc
        if kind == "forecast":
            fields = params.get("fields") or [f.name for f in model.spec.fields]
            method = params.get("method", "calibrated")  # kernel-bound fields: their kernel (see below)
            if not isinstance(method, str):
                raise InvalidValueError(
                    'forecast: "method" must be a string (auto, linear, kernel, calibrated)'
                )
            return {
                "twin": twin,
                "forecasts": [
                    eng.forecast(twin, f, method=self._forecast_method(twin, f, method)).to_dict()
                    for f in fields
                ],
            }
        if kind == "whatif":
            text = params.get("scenario")
            if not isinstance(text, str):
                raise InvalidValueError(
                    'what-if needs {"scenario": "fan off" | "setpoint 18" | "<input> <value>" | '
                    '"<parameter> x<factor>"}'
                )
            scenario = self._scenario(text, model)
            horizon = float(params.get("horizon_min", 60)) * 60
            return eng.what_if(twin, scenario, horizon_s=horizon).to_dict()
        if kind == "recommendations":
            return {"twin": twin, "recommendations": [r.to_dict() for r in eng.recommendations(twin)]}
        raise InvalidValueError(
            f"unknown insight kind {kind!r} (health, forecast, whatif, recommendations, model)"
        )

    def _forecast_method(self, twin: str, field: str, method: str) -> str:
        """The default "calibrated" gives way to the model's kernel for a field bound to one."""
        if method == "calibrated":
            try:
                if (
                    self.engine.forecast(twin, field, method="auto", horizons_min=(1.0,)).method
                    != "linear.trend"
                ):
                    return "auto"
            except DrsdtpError:
                return method
        return method

    def _ensure(self, twin: str) -> AssetModel:
        """The twin's model; registers the twin with the engine if no reading has yet."""
        if twin not in self.node.store:
            raise UnknownTwinError(f"no twin {twin!r} on this node")
        name = self.node.store.get(twin, MODEL_FIELD)
        if not isinstance(name, str) or name not in self.catalog:
            known = "" if not isinstance(name, str) else f" ({name!r} is not declared on this node)"
            raise DrsdtpError(f"twin {twin!r} has no model with twin intelligence{known}")
        self._model_of(self.node.store.intern_twin(twin))
        return self.catalog.get(name)

    def _origin_quality(self, twin: str, field: str) -> float | None:
        q = self.node.store.get(twin, f"{field}.q")
        return float(q) if isinstance(q, float | int) and not isinstance(q, bool) else None

    def _scenario(self, text: str, model: AssetModel) -> Scenario:
        scenario = Scenario.parse(text)
        kernel = self.registry.get(model.spec.kernel) if model.spec.kernel else None
        if kernel is None:
            return scenario
        inputs = set(kernel.variables) | {"setpoint"}
        if isinstance(kernel, TrackingKernel):
            inputs |= set(kernel.inputs)
        params = set(getattr(kernel, "default_params", {}) or {})
        for name in scenario.inputs:
            if name not in inputs:
                raise InvalidValueError(
                    f"what-if: {model.name} has no input {name!r} ({', '.join(sorted(inputs))})"
                )
        for name in scenario.param_scale:
            if params and name not in params:
                raise InvalidValueError(
                    f"what-if: {model.name} has no parameter {name!r} ({', '.join(sorted(params))})"
                )
        return scenario

    def _model_doc(self, twin: str, model: AssetModel) -> dict[str, Any]:
        replicated = self.node.store.get(twin, MODEL_VERSION_FIELD)
        doc: dict[str, Any] = {
            "twin": twin,
            "model": model.to_dict(),
            "tag": model.tag,
            "replicated_tag": replicated,
            "same_as_origin": None if replicated is None else replicated == model.tag,
            "time_scale": self.time_scale,
            "local": self.node.store.intern_twin(twin) in self._local,
        }
        if self.passes and self._twins.get(self.node.store.intern_twin(twin)) is not None:
            state = self.engine.twin_state(twin)
            doc["state"] = {"values": dict(state.values), "params": dict(state.params)}
            doc["divergence"] = [a.to_dict() for a in self.engine.divergence(twin)]
            doc["corrections"] = [c.to_dict() for c in self.engine.corrections(twin)]
        out = to_jsonable(doc)
        assert isinstance(out, dict)
        return out

    # -- reload ---------------------------------------------------------------------------------------------

    def reload(self, config: NodeConfig) -> ReloadResult:
        """Swap in the models of ``config`` (already read and validated as a config). A model that does not
        validate, or a twin rule of the running or the new config naming a model that would no longer
        exist, refuses the whole reload (ConfigError) and the running models stay."""
        try:
            registry = default_registry()  # plug-ins installed since the start are picked up
            catalog = ModelCatalog.from_config(config, registry)
            for i, rule in enumerate(self.node.config.twins):
                if rule.model not in catalog:
                    raise ConfigError(
                        f"twins[{i}].model", f"the running rule needs it: {catalog.unknown(rule.model)}"
                    )
        except ConfigError:
            self.refused_reloads += 1
            raise
        old = {m.name: m.fingerprint for m in self.catalog}
        new = {m.name: m.fingerprint for m in catalog}
        changed = tuple(sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n)))
        restart = tuple(
            k
            for k in (
                "listen",
                "peers",
                "scopes",
                "tls",
                "limits",
                "wal",
                "history",
                "adapters",
                "twins",
                "clock",
            )
            if getattr(config, k) != getattr(self.node.config, k)
        )
        self.reloads += 1
        if config.intelligence.time_scale != self.time_scale:
            restart += ("intelligence.time_scale",)
        if changed:
            if self._engine is not None:
                self._log_pending()
            self.registry, self.catalog = registry, catalog
            self._engine = None
            self._twins.clear()
            self._plain.clear()
            self._rows.clear()
            self._observed = False
            self._written.clear()
            self._tags.clear()
            self.passes = 0
        log.info(
            "models reloaded: %s%s",
            ", ".join(f"{n} ({new.get(n, 'removed')})" for n in changed) or "no model changed",
            f"; not reloaded (restart to apply): {', '.join(restart)}" if restart else "",
        )
        return ReloadResult(changed, restart)


def register_intel_metrics(metrics: NodeMetrics, intel: InsightService) -> None:
    """Twin health and anomaly counters, labelled by model (and status or kind): bounded by the declared
    models and the fixed statuses and kinds, never a label per twin."""
    metrics.add_labelled_gauge(
        "drsdtp_twin_health",
        "Twins judged at the last intelligence pass, by model and status (their worst field).",
        ("model", "status"),
        lambda: intel.health_counts,
    )
    metrics.add_labelled_counter(
        "drsdtp_anomalies",
        "Anomaly events logged, by model and kind.",
        ("model", "kind"),
        lambda: {k: float(n) for k, n in intel.anomaly_counts.items()},
    )
    log_ = intel.anomalies
    metrics.add_gauge(
        "drsdtp_anomaly_log_events", "Anomaly events held in the log (bounded).", lambda: len(log_)
    )
    metrics.add_counter(
        "drsdtp_anomaly_log_evicted", "Anomaly events dropped by the log's bounds.", lambda: log_.evicted
    )
    metrics.add_counter(
        "drsdtp_anomaly_log_failed_flushes",
        "Writes of the anomaly log that failed (the events stay in memory; the next pass retries).",
        lambda: log_.failed_flushes,
    )
    metrics.add_counter(
        "drsdtp_anomaly_log_bad_lines",
        "Unreadable lines of the anomaly log skipped on start (a torn tail after a crash, damage).",
        lambda: log_.bad_lines,
    )
    metrics.add_counter("drsdtp_intelligence_passes", "Intelligence passes run.", lambda: intel.passes)
