"""The twin-intelligence engine: arrays in (readings), one vectorised pass, plain frozen results out.

Hot path (no per-field Python): :meth:`TwinIntelligence.ingest` appends a batch of readings to the rolling
windows; :meth:`TwinIntelligence.evaluate` runs health, drift, trackers, divergence, traits and forecasts for
every field at once and keeps the arrays. The read API (``health``, ``traits``, ``forecast``, ``what_if``,
``divergence``, ``recommendations``...) builds frozen dataclasses for one twin from the last pass.

Quality replication convention: the quality score of field ``f`` is written as an LWW field ``f.q`` (float
0..1) of the same twin, next to the value (:meth:`TwinIntelligence.quality_fields`); consumers on any node
refuse values whose ``.q`` is below the quality threshold (``HealthConfig.quality_threshold``, 0.5).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Generic, Protocol, TypeAlias, TypeVar

from drsdtp.errors import ConfigError, InvalidValueError, UnknownTwinError
from drsdtp.intelligence.cause import CauseArrays, ChangeTracker, Relations, judge
from drsdtp.intelligence.detect import DetectorConfig, ScoreBatch, StreamDetector
from drsdtp.intelligence.detect.events import detector_events
from drsdtp.intelligence.divergence import (
    KIND_MODEL_DRIFT,
    KIND_NONE,
    Classification,
    DivergenceConfig,
    DivergenceMonitor,
)
from drsdtp.intelligence.drift import DriftDetector
from drsdtp.intelligence.forecast import ForecastArrays, linear_forecast
from drsdtp.intelligence.health import HealthArrays, HealthMonitor
from drsdtp.intelligence.linefit import FloatArray, LineFit
from drsdtp.intelligence.maintenance import DegradationTracker
from drsdtp.intelligence.recommend import ActionOutcome, recommend
from drsdtp.intelligence.refit import MATTERS, prediction_shift
from drsdtp.intelligence.results import (
    AnomalyEvent,
    Correction,
    DivergenceAlert,
    FieldForecast,
    FieldHealth,
    FieldTraits,
    MaintenanceEstimate,
    ParamCorrection,
    Recommendation,
    ThresholdCrossing,
    TwinHealth,
    WhatIfResult,
)
from drsdtp.intelligence.spec import IntelligenceConfig, ModelSpec
from drsdtp.intelligence.table import FieldTable
from drsdtp.intelligence.traits import AnomalyLog, TraitArrays, compute_traits
from drsdtp.intelligence.views import (
    build_alert,
    build_calibrated_forecast,
    build_field_forecast,
    build_field_health,
    build_kernel_forecast,
    build_maintenance,
    build_traits,
    build_twin_health,
)
from drsdtp.intelligence.whatif import Limits, refused_what_if, run_what_if
from drsdtp.intelligence.windows import FieldWindows
from drsdtp.kernels import (
    KernelRegistry,
    LinearTrendKernel,
    Observation,
    Scenario,
    SimulationKernel,
    StateTracker,
    TrackingKernel,
    TwinState,
    default_registry,
)
from drsdtp.kernels.protocol import frozen_map

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["PassResult", "Reading", "TwinIntelligence"]

BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
T = TypeVar("T")
IntArray: TypeAlias = "npt.NDArray[np.int64]"
#: A kernel residual beyond this many of its sigmas is "off" for the verdict now, before the CUSUM says so.
KERNEL_OFF_Z = 4.0


class Reading(Protocol):
    """Anything with these attributes (``drsdtp.sim.SimReading`` fits)."""

    @property
    def twin(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def t_s(self) -> float: ...
    @property
    def seq(self) -> int: ...


class _Lazy(Generic[T]):
    """A value computed on first use (a pass's forecasts: a health-only caller never pays for them)."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make: Callable[[], T] | None = make
        self._value: T | None = None

    def get(self) -> T:
        if self._make is not None:
            self._value, self._make = self._make(), None
        assert self._value is not None
        return self._value


@dataclass(frozen=True, slots=True)
class PassResult:
    """Arrays of the last evaluation, one entry per field row (see :attr:`TwinIntelligence.table`).

    ``forecast`` is computed when first read: a pass whose forecasts nobody asks for (the health-only path)
    costs no forecasting."""

    t_s: float
    health: HealthArrays
    traits: TraitArrays
    lazy_forecast: _Lazy[ForecastArrays]
    fit_short: LineFit
    fit_long: LineFit
    model_prior: FloatArray
    model_prior_std: FloatArray
    cause: CauseArrays

    @property
    def forecast(self) -> ForecastArrays:
        return self.lazy_forecast.get()


@dataclass(slots=True)
class _Twin:
    name: str
    model: str
    slot: int


class _ModelGroup:
    """All twins of one model type: the shared kernel, its tracker and the field rows bound to it."""

    def __init__(
        self, spec: ModelSpec, kernel: SimulationKernel | None, tracker: StateTracker | None
    ) -> None:
        self.spec, self.kernel, self.tracker = spec, kernel, tracker
        self.twins: list[str] = []
        self.rows: dict[str, list[list[int]]] = {var: [] for var in spec.bindings}
        self.width = {var: len(fields) for var, fields in spec.bindings.items()}
        self.last_t = np.zeros(0)
        self.last_reopen = np.zeros(0)
        self.last_commit = np.zeros(0)
        self.prev_kind: dict[str, npt.NDArray[np.int8]] = {}

    def add(self, twin: str, field_rows: Mapping[str, int]) -> int:
        self.twins.append(twin)
        for var, fields in self.spec.bindings.items():
            self.rows[var].append([field_rows[f] for f in fields])
        self.last_t = np.r_[self.last_t, np.nan]
        self.last_reopen = np.r_[self.last_reopen, np.nan]
        self.last_commit = np.r_[self.last_commit, np.nan]
        return len(self.twins) - 1

    def matrix(self, var: str) -> IntArray:
        return np.asarray(self.rows[var], dtype=np.int64).reshape(len(self.twins), self.width[var])


class TwinIntelligence:
    """Health, traits, forecasts, divergence and what-if for every twin of a node."""

    def __init__(
        self,
        config: IntelligenceConfig | None = None,
        *,
        registry: KernelRegistry | None = None,
        divergence: DivergenceConfig | None = None,
        max_log: int = 10_000,
        detector: DetectorConfig | None = None,
        legacy_health: bool = False,
    ) -> None:
        self.config = config if config is not None else IntelligenceConfig()
        self.registry = registry if registry is not None else default_registry()
        hc = self.config.health
        self.table = FieldTable()
        self.windows = FieldWindows(self.config.capacity, self.config.short_window, hc.recent)
        self.monitor = HealthMonitor(hc)
        # Model-free detection for every field; health uses it for the fields without a declared model.
        self.detector = StreamDetector(detector)
        self.model_free = np.zeros(0, bool)
        # legacy_health: the fixed tests on every field, no hold, no detector (the baseline the model-free
        # detector is measured against in benches/validate_anomaly.py)
        self.legacy_health = legacy_health
        self.drift = DriftDetector(hc)
        self.divergence_monitor = DivergenceMonitor(
            divergence if divergence is not None else DivergenceConfig()
        )
        self.degradation = DegradationTracker()
        self.anomaly_log = AnomalyLog(max_log)
        self.correction_log: deque[Correction] = deque(maxlen=max_log)
        self.models: dict[str, ModelSpec] = {}
        self._groups: dict[str, _ModelGroup] = {}
        self._twins: dict[str, _Twin] = {}
        self._prev_drift = np.zeros(0, bool)
        # sensor, process or model (drsdtp.intelligence.cause): the fields' declared relationships, each
        # row's twin, and per row the divergence class of its kernel variable at the last pass
        self.relations = Relations()
        self.changes = ChangeTracker()
        self._counter = np.zeros(0, bool)
        self._twin_of_row = np.zeros(0, np.int64)
        self._row_kind = np.zeros(0, np.int8)
        self._row_suspect = np.zeros(0, bool)
        self._alerts: dict[str, tuple[DivergenceAlert, ...]] = {}
        self.last: PassResult | None = None

    # -- registration ---------------------------------------------------------------------------------------

    def add_model(self, spec: ModelSpec) -> None:
        if spec.name in self.models:
            raise ConfigError(f"model.{spec.name}", "already defined")
        kernel: SimulationKernel | None = None
        tracker: StateTracker | None = None
        if spec.kernel is not None:
            kernel = self.registry.get(spec.kernel)
            if spec.bindings and isinstance(kernel, TrackingKernel):
                unknown = set(spec.bindings) - set(kernel.variables) - set(kernel.inputs)
                if unknown:
                    raise ConfigError(
                        f"model.{spec.name}.bindings", f"kernel {kernel.name} has no {sorted(unknown)}"
                    )
                tracker = kernel.tracker(spec.params)
        self.models[spec.name] = spec
        self._groups[spec.name] = _ModelGroup(spec, kernel, tracker)

    def add_twin(self, twin: str, model: str) -> None:
        if twin in self._twins:
            raise ConfigError(f"twin.{twin}", "already added")
        if model not in self.models:
            raise ConfigError(f"twin.{twin}.model", f"unknown model {model!r}")
        spec = self.models[model]
        rows = self.table.add_twin(twin, spec.fields)
        self.windows.resize(len(self.table))
        self.detector.resize(len(self.table))
        bound = {name for fields in spec.bindings.values() for name in fields}
        self.model_free = np.r_[
            self.model_free, [f.name not in bound and f.redundancy_group is None for f in spec.fields]
        ]
        by_name = {f.name: r for f, r in zip(spec.fields, rows, strict=True)}
        self.relations.add([(by_name[f.name], by_name[d]) for f in spec.fields for d in f.depends_on])
        self._twin_of_row = np.r_[self._twin_of_row, np.full(len(rows), len(self._twins), np.int64)]
        self._counter = np.r_[self._counter, [f.kind == "counter" for f in spec.fields]]
        group = self._groups[model]
        slot = group.add(twin, by_name)
        if group.tracker is not None:
            group.tracker.resize(slot + 1)
        self._twins[twin] = _Twin(twin, model, slot)

    def reserve(self, fields: int) -> None:
        """Pre-allocate window storage for ``fields`` fields in total."""
        self.windows.reserve(fields)

    @property
    def twins(self) -> tuple[str, ...]:
        return tuple(self._twins)

    def model_of(self, twin: str) -> str | None:
        t = self._twins.get(twin)
        return None if t is None else t.model

    def row(self, twin: str, field: str) -> int:
        return self.table.row(twin, field)

    def rows(self, keys: Iterable[tuple[str, str]]) -> npt.NDArray[np.intp]:
        return np.fromiter((self.table.row(t, f) for t, f in keys), dtype=np.intp)

    # -- hot path -------------------------------------------------------------------------------------------

    def ingest(
        self, rows: npt.ArrayLike, t_s: npt.ArrayLike, values: npt.ArrayLike, seq: npt.ArrayLike | None = None
    ) -> int:
        """Append readings as arrays of row, time, value (and sequence number); returns how many were kept.

        Each reading is also scored by the model-free detector; the onsets of its alarms on fields without a
        declared model go to the anomaly log with the reading's time, test, magnitude and score."""
        kept = self.windows.append(rows, t_s, values, seq)
        r = np.asarray(rows, dtype=np.intp).ravel()
        t = np.asarray(t_s, dtype=np.float64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        ok = np.isfinite(t) & np.isfinite(v)
        if ok.any() and not self.legacy_health:
            self._log(self.detector.update(r[ok], t[ok], v[ok]), v[ok])
        return kept

    def _log(self, batch: ScoreBatch, values: FloatArray) -> None:
        onset = batch.onset & self.model_free[batch.rows]
        if onset.any():
            self.anomaly_log.add(detector_events(batch, onset, values, self.table))

    def ingest_readings(self, readings: Iterable[Reading]) -> int:
        """Convenience for object streams; dropouts (``value is None``) and unknown fields are skipped."""
        rows: list[int] = []
        ts: list[float] = []
        vs: list[float] = []
        seqs: list[int] = []
        index = self.table.index
        for r in readings:
            row = index.get((r.twin, r.field))
            if row is None or r.value is None:
                continue
            rows.append(row)
            ts.append(r.t_s)
            vs.append(r.value)
            seqs.append(r.seq)
        return self.ingest(rows, ts, vs, seqs)

    def evaluate(self, now_s: float) -> PassResult:
        """One pass over every field: health, drift, model tracking, divergence, traits and forecasts."""
        if not math.isfinite(now_s):
            raise InvalidValueError(f"now_s must be finite, got {now_s}")
        cfg, hc = self.config, self.config.health
        n = len(self.table)
        table = self.table
        fit_short, fit_long = self.windows.fit_short(), self.windows.fit_long()
        if self.legacy_health:
            screen = self.monitor.screen(self.windows, table, now_s)
        else:
            found = self.detector.findings(now_s, n)
            screen = self.monitor.screen(
                self.windows, table, now_s, found, self.model_free[:n], self.detector.config.hold_s
            )
        last_v = self.windows.last_v[:n]
        prev_drift = np.zeros(n, bool)
        prev_drift[: min(n, self._prev_drift.shape[0])] = self._prev_drift[:n]
        # monitored: residuals are computed (drift CUSUMs keep running on a flagged field, so it can recover);
        # usable: may also feed state estimation and parameter learning.
        good = screen.fresh & (screen.prequality >= hc.quality_threshold) & ~screen.latest_spike
        monitored = good & table.analog & np.isfinite(self.monitor.noise[:n])
        # A drifting sensor with peers is dropped from estimation; a lone one still anchors the state (the
        # model alone would wander) but no longer teaches the parameters.
        learnable = good & ~prev_drift
        usable = good & ~(prev_drift & (table.group_size >= 2))
        peer_valid, peer_resid, peer_sigma = self._peer_residuals(last_v, monitored, screen.noise)

        model_valid = np.zeros(n, bool)
        model_resid = np.full(n, np.nan)
        model_sigma = np.full(n, np.nan)
        model_prior = np.full(n, np.nan)
        model_prior_std = np.full(n, np.nan)
        for group in self._groups.values():
            if group.tracker is None or not group.twins:
                continue
            self._track(
                group,
                now_s,
                last_v,
                usable,
                learnable,
                monitored,
                screen.noise,
                model_valid,
                model_resid,
                model_sigma,
                model_prior,
                model_prior_std,
            )

        verdict = self.drift.assess(
            peer_valid=peer_valid,
            peer_resid=peer_resid,
            peer_sigma=peer_sigma,
            model_valid=model_valid,
            model_resid=model_resid,
            model_sigma=model_sigma,
            group=table.group,
            group_size=table.group_size,
            noise=screen.noise,
        )
        health = self.monitor.finish(screen, verdict, table)
        self._prev_drift = verdict.flagged.copy()

        self.divergence_monitor.update(model_valid, model_resid, model_sigma)
        self._row_kind, self._row_suspect = np.zeros(n, np.int8), np.zeros(n, bool)
        self._divergence_and_corrections(now_s, health)
        block = self.windows.recent_block() if self._counter[:n].any() else None
        changes = self.changes.update(health, table, self._counter, block, now_s)
        _, _, row_score = self.divergence_monitor.row_alarm(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            # A screened-out reading is compared too (a spike is kept out of tracking, not out of this), but
            # only when what it is predicted from was usable: a step of a pump's speed is screened as a
            # spike first, and its flow, predicted from the speed held before it, would look off.
            inputs_ok = ~self.relations.depends_on_any(~usable, n)
            off_now = inputs_ok & (np.abs(model_resid) > KERNEL_OFF_Z * model_sigma)
            kernel_off = off_now | (row_score >= 0.5)
        cause = judge(
            health,
            table,
            self.relations,
            self._row_kind,
            self._row_suspect,
            self._twin_of_row,
            changes,
            kernel_off,
        )

        indicator = np.where(table.group_size >= 2, verdict.peer_offset, verdict.model_offset)
        has_indicator = (peer_valid & (table.group_size >= 2)) | (model_valid & (table.group_size < 2))
        self.degradation.update(has_indicator, now_s, indicator)

        traits = compute_traits(health, fit_short, fit_long, table, hc.stale_factor)
        self.anomaly_log.record(traits, table, now_s, last_v, screen.spike_z, skip=screen.model_free)
        horizons = np.asarray(cfg.horizons_min, dtype=np.float64) * 60.0
        tol, low, high = (
            table.forecast_tolerance,
            table.low_limit,
            table.high_limit,
        )  # replaced, never mutated
        forecast = _Lazy(
            lambda: linear_forecast(
                fit_short,
                now_s,
                horizons,
                z=cfg.interval_z,
                quality=health.quality,
                tolerance=tol,
                low_limit=low,
                high_limit=high,
                max_eta_s=cfg.max_time_to_threshold_s,
            )
        )
        self.last = PassResult(
            now_s, health, traits, forecast, fit_short, fit_long, model_prior, model_prior_std, cause
        )
        return self.last

    def _peer_residuals(
        self, values: FloatArray, usable: BoolArray, noise: FloatArray
    ) -> tuple[BoolArray, FloatArray, FloatArray]:
        """Residual of each field against the mean of its usable redundant peers (same twin, same group)."""
        n = values.shape[0]
        group = self.table.group
        n_groups = int(group.max()) + 1 if n and group.max() >= 0 else 0
        member = usable & (group >= 0)
        if n_groups == 0:
            return np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.nan)
        g = group[member]
        total = np.bincount(g, weights=values[member], minlength=n_groups)
        count = np.bincount(g, minlength=n_groups).astype(np.float64)
        var_total = np.bincount(g, weights=noise[member] ** 2, minlength=n_groups)
        gi = np.maximum(group, 0)
        own = np.where(member, 1.0, 0.0)
        others = count[gi] - own
        with np.errstate(invalid="ignore", divide="ignore"):
            peer_mean = (total[gi] - np.where(member, values, 0.0)) / others
            peer_var = (var_total[gi] - np.where(member, noise**2, 0.0)) / others**2
        valid = member & (others >= 1)
        resid = np.where(valid, values - peer_mean, np.nan)
        sigma = np.where(valid, np.sqrt(noise**2 + peer_var), np.nan)
        return valid, resid, sigma

    def _track(
        self,
        group: _ModelGroup,
        now_s: float,
        last_v: FloatArray,
        usable: BoolArray,
        learnable: BoolArray,
        comparable: BoolArray,
        noise: FloatArray,
        model_valid: BoolArray,
        model_resid: FloatArray,
        model_sigma: FloatArray,
        model_prior: FloatArray,
        model_prior_std: FloatArray,
    ) -> None:
        assert group.tracker is not None
        assert group.kernel is not None
        slots = np.arange(len(group.twins), dtype=np.int64)
        dt = np.where(np.isnan(group.last_t), 0.0, now_s - group.last_t)
        observations: dict[str, Observation] = {}
        matrices: dict[str, IntArray] = {}
        for var in group.spec.bindings:
            rows = group.matrix(var)
            matrices[var] = rows
            observations[var] = Observation(
                values=last_v[rows],
                ok=usable[rows],
                sigma=noise[rows],
                learn=learnable[rows],
                t_s=self.windows.last_t[rows],
            )
        step = group.tracker.step(slots, dt, observations)
        group.last_t[:] = now_s
        for var, prior in step.prior.items():
            if var not in matrices:
                continue
            rows = matrices[var]
            std = step.prior_std[var]
            resid = last_v[rows] - prior[:, None]
            sigma = np.sqrt(noise[rows] ** 2 + std[:, None] ** 2)
            valid = comparable[rows] & np.isfinite(resid)
            model_valid[rows] = valid
            model_resid[rows] = resid
            model_sigma[rows] = sigma
            model_prior[rows] = prior[:, None]
            model_prior_std[rows] = std[:, None]

    def _divergence_and_corrections(self, now_s: float, health: HealthArrays) -> None:
        dc = self.divergence_monitor.config
        alerts: dict[str, list[DivergenceAlert]] = {}
        for group in self._groups.values():
            tracker, kernel = group.tracker, group.kernel
            if tracker is None or kernel is None or not group.twins:
                continue
            blamed = health.drift.flagged
            model_drift_now = np.zeros(len(group.twins), bool)
            drifting = np.zeros(len(group.twins), bool)
            busy = np.zeros(len(group.twins), bool)  # a sensor problem: do not re-estimate now
            for var in kernel.variables:
                if var not in group.spec.bindings:
                    continue
                members = group.matrix(var)
                verdict: Classification = self.divergence_monitor.classify(members, blamed)
                prev = group.prev_kind.get(var, np.zeros(len(group.twins), np.int8))
                if prev.shape[0] != verdict.kind.shape[0]:
                    prev = np.r_[prev, np.zeros(verdict.kind.shape[0] - prev.shape[0], np.int8)]
                onset = (verdict.kind == KIND_MODEL_DRIFT) & (prev != KIND_MODEL_DRIFT)
                model_drift_now |= onset
                drifting |= verdict.kind == KIND_MODEL_DRIFT
                busy |= (verdict.kind != KIND_NONE) & (verdict.kind != KIND_MODEL_DRIFT)
                busy |= blamed[members].any(axis=1)
                group.prev_kind[var] = verdict.kind.copy()
                bound = members >= 0
                self._row_kind[members[bound]] = np.broadcast_to(verdict.kind[:, None], members.shape)[bound]
                self._row_suspect[members[bound]] = verdict.suspects[bound]
                for slot in np.flatnonzero(verdict.kind != KIND_NONE):
                    twin = group.twins[slot]
                    fields = group.spec.bindings[var]
                    alerts.setdefault(twin, []).append(
                        build_alert(twin, kernel.name, var, fields, verdict, int(slot), now_s)
                    )
            # Model drift: re-open the estimation (at most once per commit interval), then commit relaxed
            # re-estimates every settle_s while the drift lasts. Otherwise: periodic commits of settled
            # estimates, never while a sensor of the twin is suspect.
            reopen = model_drift_now & ~(now_s - group.last_reopen < dc.commit_interval_s)
            if reopen.any():
                tracker.reopen(np.flatnonzero(reopen).astype(np.int64))
                group.last_reopen[reopen] = now_s
                group.last_commit[reopen] = now_s
            first_due = now_s - dc.commit_interval_s + dc.settle_s  # a new twin: first commit after settle_s
            group.last_commit = np.where(np.isnan(group.last_commit), first_due, group.last_commit)
            since = now_s - group.last_commit
            drift_due = drifting & (since >= dc.settle_s)
            periodic = ~drifting & ~busy & (since >= dc.commit_interval_s)
            for slot in np.flatnonzero(drift_due | periodic):
                if drift_due[slot]:
                    self._commit(
                        group, int(slot), now_s, "model drift: parameters re-estimated", relaxed=True
                    )
                else:
                    self._commit(group, int(slot), now_s, "periodic re-estimation", relaxed=False)
        self._alerts = {twin: tuple(a) for twin, a in alerts.items()}

    def _commit(self, group: _ModelGroup, slot: int, now_s: float, reason: str, *, relaxed: bool) -> None:
        assert group.tracker is not None
        assert group.kernel is not None
        dc = self.divergence_monitor.config
        before = group.tracker.params(slot)[0]
        candidate = group.tracker.candidate_params(slot)
        group.last_commit[slot] = now_s
        moved = any(
            abs(candidate[k] - before[k]) > dc.min_relative_change * max(abs(before[k]), 1e-12)
            for k in candidate
        )
        if not moved and not relaxed:
            return
        changes = group.tracker.commit(slot, relaxed=relaxed)
        if not changes:
            return
        twin = group.twins[slot]
        self.correction_log.append(
            Correction(
                twin=twin,
                kernel=group.kernel.name,
                t_s=now_s,
                reason=reason,
                changes=tuple(ParamCorrection(c.name, c.old, c.new, c.estimate, c.clipped) for c in changes),
            )
        )
        rows = [r for var in group.spec.bindings for r in group.rows[var][slot]]
        self.divergence_monitor.reset(rows)
        # A sensor's offset against the model is forgotten only where the new model predicts it differently
        # (see refit): elsewhere the CUSUM keeps running, so a drift starting now is not learnt as an offset.
        shift = prediction_shift(
            group.kernel, twin, now_s, group.tracker.state(slot)[0], before, group.tracker.params(slot)[0]
        )
        noise = self.monitor.noise
        self.drift.model.reset(
            [
                r
                for var in group.spec.bindings
                for r in group.rows[var][slot]
                if 0 <= r < noise.shape[0] and not shift.get(var, math.inf) <= MATTERS * noise[r]
            ]
        )

    # -- read API -------------------------------------------------------------------------------------------

    def _require_pass(self) -> PassResult:
        if self.last is None:
            raise InvalidValueError("no evaluation yet: call evaluate(now_s) first")
        return self.last

    def _twin(self, twin: str) -> _Twin:
        try:
            return self._twins[twin]
        except KeyError:
            raise UnknownTwinError(twin) from None

    def twin_rows(self, twin: str) -> list[int]:
        """The field rows of ``twin``, in its model's field order."""
        spec = self.models[self._twin(twin).model]
        return [self.table.row(twin, f.name) for f in spec.fields]

    def kernel_of(self, twin: str, field: str) -> tuple[str, tuple[str, ...]]:
        """The twin's tracking kernel (``""``: none) and the fields bound with ``field`` to its variable."""
        group = self._groups[self._twin(twin).model]
        if group.tracker is None or group.kernel is None:
            return "", ()
        fields = next((fs for fs in group.spec.bindings.values() if field in fs), ())
        return group.kernel.name, fields

    def field_health(self, twin: str, field: str) -> FieldHealth:
        last = self._require_pass()
        return build_field_health(self, last, self.table.row(twin, field))

    def health(self, twin: str) -> TwinHealth:
        last = self._require_pass()
        t = self._twin(twin)
        fields = tuple(build_field_health(self, last, row) for row in self.twin_rows(twin))
        return build_twin_health(twin, t.model, last.t_s, fields)

    def quality_fields(self, twin: str) -> dict[str, float]:
        """``{"<field>.q": quality}`` for every field of ``twin``: what to write back to the store."""
        last = self._require_pass()
        return {
            f"{self.table.keys[row][1]}.q": round(float(last.health.quality[row]), 4)
            for row in self.twin_rows(twin)
        }

    def usable(self, twin: str, field: str) -> bool:
        """Whether the field's latest value is good enough to decide on."""
        last = self._require_pass()
        return bool(last.health.quality[self.table.row(twin, field)] >= self.config.health.quality_threshold)

    def traits(self, twin: str, field: str) -> FieldTraits:
        last = self._require_pass()
        row = self.table.row(twin, field)
        return build_traits(self, last, row)

    def maintenance(self, twin: str, field: str) -> MaintenanceEstimate | None:
        last = self._require_pass()
        return build_maintenance(self, last, self.table.row(twin, field))

    def forecast(
        self, twin: str, field: str, *, method: str = "auto", horizons_min: Iterable[float] | None = None
    ) -> FieldForecast:
        """Forecast one field. ``method``: ``linear``, ``kernel`` (the model's simulation), ``calibrated``
        (any field: the best of last value, level, trend and daily seasonal baseline, with backtest-calibrated
        intervals, :mod:`drsdtp.intelligence.calibrated`) or ``auto`` (the kernel when the field is bound to
        a tracked state variable, else linear)."""
        last = self._require_pass()
        row = self.table.row(twin, field)
        horizons = tuple(horizons_min) if horizons_min is not None else self.config.horizons_min
        if method not in ("auto", "linear", "kernel", "calibrated"):
            raise InvalidValueError(f"unknown forecast method {method!r} (auto, linear, kernel, calibrated)")
        if method == "calibrated":
            return build_calibrated_forecast(self, last, row, horizons)
        variable = self._bound_state_variable(twin, field)
        if method == "kernel" and variable is None:
            raise InvalidValueError(f"{twin}/{field} is not bound to a tracked model variable")
        if method != "linear" and variable is not None:
            state = self.twin_state(twin)
            group = self._groups[self._twin(twin).model]
            assert group.kernel is not None
            return build_kernel_forecast(self, last, row, group.kernel, state, variable, horizons)
        return build_field_forecast(self, last, row, horizons)

    def bound_variable(self, twin: str, field: str) -> str | None:
        """The tracked kernel variable ``field`` of ``twin`` is bound to (None: none)."""
        return self._bound_state_variable(twin, field)

    def _bound_state_variable(self, twin: str, field: str) -> str | None:
        group = self._groups[self._twin(twin).model]
        if group.tracker is None or group.kernel is None:
            return None
        for var, fields in group.spec.bindings.items():
            if field in fields and var in group.kernel.variables:
                return var
        return None

    def twin_state(self, twin: str) -> TwinState:
        """A detached snapshot of the twin for a kernel (tracked estimates, parameters, rates)."""
        last = self._require_pass()
        t = self._twin(twin)
        group = self._groups[t.model]
        rows = {f.name: self.table.row(twin, f.name) for f in group.spec.fields}
        rates: dict[str, float] = {}
        if group.tracker is not None:
            values, std = group.tracker.state(t.slot)
            params, param_std = group.tracker.params(t.slot)
            for var, fields in group.spec.bindings.items():
                slope = float(last.fit_long.slope[rows[fields[0]]])
                if math.isfinite(slope):
                    rates[var] = slope
            return TwinState(
                twin=twin,
                t_s=last.t_s,
                values=frozen_map(values),
                value_std=frozen_map(std),
                rates=frozen_map(rates),
                params=frozen_map(params),
                param_std=frozen_map(param_std),
            )
        fs = last.fit_short
        level = fs.at(last.t_s)
        return TwinState(
            twin=twin,
            t_s=last.t_s,
            values=frozen_map({f: float(level[r]) for f, r in rows.items()}),
            value_std=frozen_map({f: float(np.nan_to_num(fs.sigma[r])) for f, r in rows.items()}),
            rates=frozen_map({f: float(np.nan_to_num(fs.slope[r])) for f, r in rows.items()}),
            rate_std=frozen_map({f: float(np.nan_to_num(fs.slope_sigma()[r])) for f, r in rows.items()}),
        )

    def limits(self, twin: str) -> Limits:
        """Operating limits per kernel variable (from the first bound field that has any) and per field."""
        spec = self.models[self._twin(twin).model]
        out: dict[str, tuple[float | None, float | None]] = {}
        for f in spec.fields:
            if f.low_limit is not None or f.high_limit is not None:
                out[f.name] = (f.low_limit, f.high_limit)
        for var, fields in spec.bindings.items():
            for name in fields:
                if name in out:
                    out.setdefault(var, out[name])
                    break
        return MappingProxyType(out)

    def what_if(
        self,
        twin: str,
        scenario: Scenario | str,
        *,
        horizon_s: float = 3600.0,
        runs: int = 200,
        seed: int = 0,
        inputs: Mapping[str, float] | None = None,
    ) -> WhatIfResult:
        """Fork the twin, apply ``scenario`` (a :class:`Scenario` or its CLI spelling), simulate.

        ``inputs`` sets inputs the node knows but does not measure (a thermostat ``setpoint``) in the fork.
        Refused (``refused`` set, no trajectory) when the data the start state rests on is below the quality
        threshold.
        """
        last = self._require_pass()
        sc = Scenario.parse(scenario) if isinstance(scenario, str) else scenario
        t = self._twin(twin)
        group = self._groups[t.model]
        kernel: SimulationKernel = group.kernel if group.kernel is not None else LinearTrendKernel()
        refusal = self._refusal(twin, group)
        if refusal is not None:
            return refused_what_if(twin, sc, kernel.name, last.t_s, refusal)
        if group.tracker is None:
            kernel = LinearTrendKernel()
        state = self.twin_state(twin).fork(values=inputs)
        units = {f.name: f.unit for f in group.spec.fields}
        for var, fields in group.spec.bindings.items():
            units.setdefault(var, units.get(fields[0], ""))
        return run_what_if(kernel, state, sc, horizon_s, self.limits(twin), runs=runs, seed=seed, units=units)

    def _refusal(self, twin: str, group: _ModelGroup) -> str | None:
        last = self._require_pass()
        thr = self.config.health.quality_threshold
        kernel = group.kernel
        if group.tracker is None or kernel is None:
            return None
        for var in kernel.variables:
            fields = group.spec.bindings.get(var, ())
            if fields and max(float(last.health.quality[self.table.row(twin, f)]) for f in fields) < thr:
                return f"every sensor of {var} ({', '.join(fields)}) is below quality {thr}"
        return None

    def divergence(self, twin: str | None = None) -> tuple[DivergenceAlert, ...]:
        if twin is not None:
            self._twin(twin)
            return self._alerts.get(twin, ())
        return tuple(a for alerts in self._alerts.values() for a in alerts)

    def corrections(self, twin: str | None = None) -> tuple[Correction, ...]:
        return tuple(c for c in self.correction_log if twin is None or c.twin == twin)

    def anomalies(self, since_s: float = -math.inf, twin: str | None = None) -> tuple[AnomalyEvent, ...]:
        return self.anomaly_log.since(since_s, None if twin is None else (twin,))

    def recommendations(self, twin: str, *, horizon_s: float = 3600.0) -> tuple[Recommendation, ...]:
        """RECALIBRATE / INSPECT / ACTUATE / CONTINUE_MONITORING for one twin, most urgent first.

        Actuator moves are checked on forked twins: each actuator the kernel declares is tried at both ends
        of its range, and a move is suggested only if the model says it avoids a forecast limit crossing.
        """
        health = self.health(twin)
        maintenance = {
            f.field: m for f in health.fields if (m := self.maintenance(twin, f.field)) is not None
        }
        group = self._groups[self._twin(twin).model]
        baseline: tuple[ThresholdCrossing, ...] = ()
        actions: list[ActionOutcome] = []
        if group.tracker is not None and group.kernel is not None and self._refusal(twin, group) is None:
            base = self.what_if(twin, Scenario.baseline(), horizon_s=horizon_s, runs=0)
            baseline = base.crossings
            if any(c.eta_min is not None for c in baseline):
                state = self.twin_state(twin)
                confidence = min(
                    max(float(self._require_pass().health.quality[self.table.row(twin, f)]) for f in fields)
                    for var, fields in group.spec.bindings.items()
                    if var in group.kernel.variables
                )
                for actuator, (lo, hi) in getattr(group.kernel, "actuators", {}).items():
                    for target in (lo, hi):
                        if state.values.get(actuator) == target:
                            continue
                        sc = Scenario(f"{actuator} {target:g}", inputs=frozen_map({actuator: target}))
                        outcome = self.what_if(twin, sc, horizon_s=horizon_s, runs=0)
                        actions.append(
                            ActionOutcome({actuator: target}, sc.name, outcome.crossings, confidence)
                        )
        return recommend(
            health, self.divergence(twin), self.corrections(twin), maintenance, baseline, actions
        )
