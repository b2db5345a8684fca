"""Validation campaigns: the intelligence engine against the simulated plant, faults of known type and onset.

:func:`run_campaign` drives a plant of many rooms through the engine one step at a time (arrays in, one pass
per step) and measures, per fault kind: the detection rate within ``within`` samples and within the whole
observation window, the median delay, and the false alarms on clean fields; for plant changes (model drift),
whether the divergence monitor calls them model drift rather than sensor faults; and the 15-minute forecast
error of the linear and model forecasts against a naive last-value forecast. Deterministic for a seed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from drsdtp.intelligence import DivergenceKind, IntelligenceConfig, Reason, TwinIntelligence
from drsdtp.sim.faults import Fault, FaultKind
from drsdtp.sim.plant import FIELDS, Plant, PlantParams
from drsdtp.sim.room_spec import room_model_spec

__all__ = ["CampaignConfig", "CampaignResult", "KindResult", "cusum_bound", "drift_bound", "run_campaign"]

EXPECTED_REASON: dict[str, str] = {
    "stuck": "STUCK",
    "drift": "DRIFT",
    "spike": "SPIKE",
    "dropout": "DROPOUT",
    "stale": "STALE",
}


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A fault family in the campaign: ``label`` names it in the results."""

    label: str
    kind: FaultKind
    fields: tuple[str, ...]
    magnitude: float = 0.0


DEFAULT_PLANS: tuple[FaultPlan, ...] = (
    FaultPlan("stuck", "stuck", ("temp_1", "temp_2", "humidity")),
    FaultPlan("drift", "drift", ("temp_1", "temp_2"), magnitude=12.0),
    FaultPlan("drift_slow", "drift", ("temp_1", "temp_2"), magnitude=2.0),
    FaultPlan("drift_humidity", "drift", ("humidity",), magnitude=30.0),
    FaultPlan("spike", "spike", ("temp_1", "temp_2", "humidity", "outdoor_temp"), magnitude=-1.0),
    FaultPlan("dropout", "dropout", ("temp_1", "temp_2", "humidity", "outdoor_temp", "heater")),
    FaultPlan("stale", "stale", ("temp_1", "temp_2", "humidity", "outdoor_temp", "fan")),
)


@dataclass(frozen=True, slots=True)
class CampaignConfig:
    rooms_per_plan: int = 6
    clean_rooms: int = 8
    model_drift_rooms: int = 6
    warmup_steps: int = 1800
    observe_steps: int = 360
    within: int = 10
    model_within: int = 60
    dt_s: float = 10.0
    seed: int = 0
    forecast_every: int = 30
    forecast_horizon_min: float = 15.0
    plans: tuple[FaultPlan, ...] = DEFAULT_PLANS
    intelligence: IntelligenceConfig = field(default_factory=IntelligenceConfig)


@dataclass(frozen=True, slots=True)
class KindResult:
    label: str
    injected: int
    detected_within: int
    detected: int
    delays: tuple[int, ...]

    @property
    def rate_within(self) -> float:
        return self.detected_within / self.injected if self.injected else math.nan

    @property
    def rate(self) -> float:
        return self.detected / self.injected if self.injected else math.nan

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else math.nan


@dataclass(frozen=True, slots=True)
class CampaignResult:
    kinds: tuple[KindResult, ...]
    false_alarm_rate: float  # share of clean (field, step) evaluations not HEALTHY
    clean_fields_alarmed: float  # share of clean fields with at least one alarm over the observation
    clean_evaluations: int
    model_drift: KindResult
    model_drift_as_sensor_fault: float  # share of plant changes ever called SENSOR_FAULT
    sensor_drift_as_model_drift: float  # share of sensor drifts ever called MODEL_DRIFT
    clean_divergence_alarmed: float  # share of clean twins with any divergence alert during observation
    mae: dict[str, float] = field(default_factory=dict)  # method -> MAE at the forecast horizon
    forecasts: int = 0

    @property
    def mae_ratio(self) -> dict[str, float]:
        naive = self.mae.get("naive", math.nan)
        return {k: v / naive for k, v in self.mae.items() if k != "naive"}


def cusum_bound(rate_per_h: float, sigma: float, dt_s: float, k: float, h: float) -> float:
    """Samples a CUSUM (reference ``k``, threshold ``h``, in noise units) needs on a noise-free ramp growing
    ``rate_per_h`` per hour, sampled every ``dt_s``, with residual noise ``sigma``: the smallest ``n`` with
    ``sum_{i<=n} (delta i - k) >= h`` (``delta`` the growth per sample in noise units). Noise only spreads
    the delay around it: it is what the noise allows this CUSUM."""
    delta = rate_per_h / 3600.0 * dt_s / sigma
    a, b = delta / 2.0, delta / 2.0 - k
    return (-b + math.sqrt(b * b + 4.0 * a * h)) / (2.0 * a)


def drift_bound(cfg: CampaignConfig, label: str) -> float | None:
    """:func:`cusum_bound` for a drift plan of the campaign (None for other plans). Temperature drifts are
    seen against the redundant peer (two sensors' noise); humidity against the model, whose CUSUM threshold
    is 1.5 h, with the sensor noise alone (a lower bound on that residual's noise, so a tighter bound)."""
    plan = next((p for p in cfg.plans if p.label == label), None)
    if plan is None or plan.kind != "drift":
        return None
    p, hc = PlantParams(), cfg.intelligence.health
    if plan.fields[0] == "humidity":
        return cusum_bound(plan.magnitude, p.humidity_noise_pct, cfg.dt_s, hc.cusum_k, 1.5 * hc.cusum_h)
    return cusum_bound(plan.magnitude, math.sqrt(2.0) * p.temp_noise_c, cfg.dt_s, hc.cusum_k, hc.cusum_h)


def _schedule(rng: np.random.Generator, rooms: int, steps: int, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-constant heater and fan commands, changed every 30..120 minutes per room."""
    heater = np.empty((steps, rooms))
    fan = np.empty((steps, rooms))
    for r in range(rooms):
        s = 0
        while s < steps:
            length = int(rng.integers(int(1800 / dt_s), int(7200 / dt_s)))
            heater[s : s + length, r] = rng.choice([0.0, 0.3, 0.6, 1.0])
            fan[s : s + length, r] = rng.choice([0.0, 0.0, 1.0])
            s += length
    return heater, fan


def run_campaign(config: CampaignConfig | None = None) -> CampaignResult:
    cfg = config if config is not None else CampaignConfig()
    rng = np.random.default_rng(cfg.seed)
    n_fault_rooms = cfg.rooms_per_plan * len(cfg.plans)
    rooms = n_fault_rooms + cfg.clean_rooms + cfg.model_drift_rooms
    plant = Plant(rooms=rooms, seed=cfg.seed, dt_s=cfg.dt_s)
    engine = TwinIntelligence(cfg.intelligence)
    engine.add_model(room_model_spec(cfg.dt_s))
    for twin in plant.twins:
        engine.add_twin(twin, "room")
    rows = engine.rows([(t, f) for t in plant.twins for f in FIELDS]).reshape(rooms, len(FIELDS))

    # Room layout: faulted rooms first (one fault each), then clean rooms, then plant changes.
    onset = cfg.warmup_steps + rng.integers(0, max(1, cfg.observe_steps // 4), rooms)
    faults: list[tuple[int, FaultPlan, str]] = []
    for p, plan in enumerate(cfg.plans):
        for i in range(cfg.rooms_per_plan):
            room = p * cfg.rooms_per_plan + i
            fld = plan.fields[i % len(plan.fields)]
            magnitude = plan.magnitude
            if plan.kind == "spike":  # about 20 noise widths on every field
                magnitude = {"humidity": 6.0, "outdoor_temp": 2.0}.get(fld, 1.0)
            plant.inject(Fault(plan.kind, plant.twins[room], fld, int(onset[room]), magnitude=magnitude))
            faults.append((room, plan, fld))
    clean = list(range(n_fault_rooms, n_fault_rooms + cfg.clean_rooms))
    changed = list(range(n_fault_rooms + cfg.clean_rooms, rooms))

    steps = cfg.warmup_steps + cfg.observe_steps + cfg.observe_steps // 4
    heater, fan = _schedule(rng, rooms, steps, cfg.dt_s)
    horizon = round(cfg.forecast_horizon_min * 60 / cfg.dt_s)
    first_hit: dict[int, int] = {}
    model_hit: dict[int, int] = {}
    called_sensor: set[int] = set()
    called_model: set[int] = set()
    diverged: set[int] = set()
    clean_rows = rows[clean].ravel()
    clean_alarms = 0
    clean_evals = 0
    clean_alarmed = np.zeros(clean_rows.shape[0], bool)
    pending: list[tuple[int, dict[str, np.ndarray]]] = []
    errors: dict[str, list[float]] = defaultdict(list)
    temp_rows = rows[clean, FIELDS.index("temp_1")]

    for step in range(steps):
        plant.heater[:], plant.fan[:] = heater[step], fan[step]
        for room in changed:
            if onset[room] == step:
                plant.set_param(plant.twins[room], "loss", 2.5 * float(plant.loss[room]))
        frame = plant.step_frame()
        ok = np.isfinite(frame.values)
        engine.ingest(rows[ok], frame.sensor_t_s[ok], frame.values[ok], frame.seq[ok])
        result = engine.evaluate(frame.t_s)
        if step < cfg.warmup_steps:
            continue
        reasons = result.health.reasons
        for room, plan, fld in faults:
            if room in first_hit or step < onset[room]:
                continue
            if Reason[EXPECTED_REASON[plan.kind]] & int(reasons[rows[room, FIELDS.index(fld)]]):
                first_hit[room] = step - int(onset[room])
        alarm = result.health.status[clean_rows] != 0
        clean_alarms += int(alarm.sum())
        clean_evals += alarm.size
        clean_alarmed |= alarm
        for room in clean:
            if engine.divergence(plant.twins[room]):
                diverged.add(room)
        for room in changed + [
            r for r, plan, _ in faults if plan.kind == "drift" and plan.fields[0] != "humidity"
        ]:
            if step < onset[room]:
                continue
            for alert in engine.divergence(plant.twins[room]):
                if alert.variable != "temp":
                    continue
                if alert.kind is DivergenceKind.MODEL_DRIFT:
                    called_model.add(room)
                    model_hit.setdefault(room, step - int(onset[room]))
                elif alert.kind is DivergenceKind.SENSOR_FAULT:
                    called_sensor.add(room)

        # Forecasts on clean rooms, scored against the true temperature `horizon` steps later.
        if (step - cfg.warmup_steps) % cfg.forecast_every == 0 and step + horizon < steps:
            fc = result.forecast
            h_index = int(np.argmin(np.abs(fc.horizons_s - cfg.forecast_horizon_min * 60.0)))
            kernel = np.array(
                [
                    engine.forecast(
                        plant.twins[r], "temp_1", method="kernel", horizons_min=(cfg.forecast_horizon_min,)
                    )
                    .horizons[0]
                    .value
                    or math.nan
                    for r in clean
                ]
            )
            pending.append(
                (
                    step + horizon,
                    {
                        "naive": engine.windows.last_v[temp_rows].astype(np.float64),
                        "linear": fc.mean[temp_rows, h_index],
                        "kernel": kernel,
                    },
                )
            )
        while pending and pending[0][0] == step:
            _, preds = pending.pop(0)
            for method, pred in preds.items():
                errors[method].extend(np.abs(pred - plant.temp[clean]).tolist())

    kinds: list[KindResult] = []
    for plan in cfg.plans:
        rooms_of = [room for room, p, _ in faults if p is plan]
        delays = tuple(first_hit[r] for r in rooms_of if r in first_hit)
        kinds.append(
            KindResult(plan.label, len(rooms_of), sum(d < cfg.within for d in delays), len(delays), delays)
        )
    drift_delays = tuple(model_hit[r] for r in changed if r in model_hit)
    sensor_drift_rooms = [r for r, plan, _ in faults if plan.kind == "drift" and plan.fields[0] != "humidity"]
    return CampaignResult(
        kinds=tuple(kinds),
        false_alarm_rate=clean_alarms / max(clean_evals, 1),
        clean_fields_alarmed=float(clean_alarmed.mean()) if clean_alarmed.size else math.nan,
        clean_evaluations=clean_evals,
        model_drift=KindResult(
            "model_drift",
            len(changed),
            sum(d < cfg.model_within for d in drift_delays),
            len(drift_delays),
            drift_delays,
        ),
        model_drift_as_sensor_fault=len(called_sensor & set(changed)) / max(len(changed), 1),
        sensor_drift_as_model_drift=len(called_model & set(sensor_drift_rooms))
        / max(len(sensor_drift_rooms), 1),
        clean_divergence_alarmed=len(diverged) / max(len(clean), 1),
        mae={k: float(np.nanmean(v)) for k, v in errors.items()},
        forecasts=len(errors.get("naive", [])),
    )
