"""A labelled check of the sensor / process / model verdict (:mod:`drsdtp.intelligence.cause`).

Each unit of a simulated plant gets one labelled event at a known onset; its verdict is the first non-empty
one the engine gives on the affected fields from the onset on (``""``: none within the observation: nothing
found, or undecided throughout); a verdict a field already had before the onset is about something else and
is skipped until it ends or changes. Around each room's onset its heater and fan hold still (heater at 0.6,
fan off, from 90 samples before), so the event is what is judged, not a heater switching at the same time.

Room plant (two redundant temperature sensors, the thermal kernel):

* ``sensor``: a fault on ``temp_1`` only (a drift of 12 C/h, a stuck sensor or a spike of 1 C);
* ``process``: the room's true temperature jumps by 2.5 C (a door to a cold store opened, a heat load put
  in): both sensors see it;
* ``model``: the room's heat loss rises 2.5x: the kernel's parameters no longer fit, the sensors agree;
* a drift of the humidity sensor (30 %RH/h), its only evidence the kernel residual and the fan it depends
  on (plant ``room/hum``, label ``sensor``): one sensor cannot always show it, undecided is honest there.

Pump, motor and energy meter (one sensor per quantity; ``depends_on`` relationships, their kernels):

* ``sensor``: a fault on one field (drift, stuck or spike, sized in that sensor's noise);
* ``process``: the operating point steps (pump speed, motor load, metered power), which the fields that
  depend on it follow.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from drsdtp.intelligence import TwinIntelligence
from drsdtp.intelligence.cause import CAUSES
from drsdtp.kernels import default_registry
from drsdtp.models.catalog import library_models
from drsdtp.sim.assets import AssetPlant
from drsdtp.sim.campaign import _schedule
from drsdtp.sim.faults import Fault, FaultKind
from drsdtp.sim.machines import ASSET_PLANTS
from drsdtp.sim.plant import FIELDS, Plant, StepFrame
from drsdtp.sim.room_spec import room_model_spec

__all__ = ["VerdictConfig", "VerdictResult", "run_verdicts"]

_SENSOR_FAULTS: tuple[FaultKind, ...] = ("drift", "stuck", "spike")
# Per asset: the model in the library, the fields a sensor fault goes to, the input stepped for a process
# change (by this factor) and the fields that follow it.
_ASSETS: dict[str, tuple[str, tuple[str, ...], str, float, tuple[str, ...]]] = {
    "pump": ("centrifugal_pump", ("flow", "head", "power"), "speed", 0.8, ("speed", "flow", "head", "power")),
    "motor": ("motor", ("current", "winding_temp", "vibration"), "current", 1.5, ("current", "vibration")),
    "meter": ("energy_meter", ("power",), "power", 1.6, ("power", "energy")),
}


@dataclass(frozen=True, slots=True)
class VerdictConfig:
    units_per_case: int = 9
    warmup_steps: int = 1800
    observe_steps: int = 360
    dt_s: float = 10.0
    seed: int = 0
    assets: tuple[str, ...] = ("pump", "motor", "meter")


@dataclass(frozen=True, slots=True)
class VerdictResult:
    """One line of the check: ``plant`` and ``label``; ``verdicts`` counts the first verdict of each unit
    (``""``: none within the observation); ``delays``: from the onset to its first verdict, in samples."""

    plant: str
    label: str
    verdicts: Counter[str] = field(default_factory=Counter)
    delays: tuple[int, ...] = ()

    @property
    def units(self) -> int:
        return sum(self.verdicts.values())

    @property
    def accuracy(self) -> float:
        return self.verdicts[self.label] / self.units if self.units else math.nan

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else math.nan


@dataclass(slots=True)
class _Unit:
    label: str
    rows: list[int]
    onset: int
    verdict: str | None = None
    delay: int = -1
    earlier: dict[int, int] = field(default_factory=dict)  # row -> the verdict it had before the onset


def _score(units: list[_Unit], cause: np.ndarray, step: int) -> None:
    for u in units:
        if u.verdict is not None or step < u.onset - 1:
            continue
        if step == u.onset - 1:  # a verdict already given is about something else: skip it until it changes
            u.earlier = {r: int(cause[r]) for r in u.rows if cause[r]}
            continue
        u.earlier = {r: c for r, c in u.earlier.items() if int(cause[r]) == c}
        codes = [int(cause[r]) for r in u.rows if cause[r] and r not in u.earlier]
        if codes:
            u.verdict, u.delay = CAUSES[Counter(codes).most_common(1)[0][0]], step - u.onset


def _results(plant: str, labels: tuple[str, ...], units: list[_Unit]) -> list[VerdictResult]:
    out = []
    for label in labels:
        mine = [u for u in units if u.label == label]
        verdicts = Counter(u.verdict or "" for u in mine)
        delays = tuple(u.delay for u in mine if u.delay >= 0)
        out.append(VerdictResult(plant, label, verdicts, delays))
    return out


def _room(cfg: VerdictConfig) -> list[VerdictResult]:
    labels = ("sensor", "process", "model", "lone")
    n = cfg.units_per_case
    rooms = n * len(labels)
    rng = np.random.default_rng(cfg.seed)
    plant = Plant(rooms=rooms, seed=cfg.seed, dt_s=cfg.dt_s)
    engine = TwinIntelligence()
    engine.add_model(room_model_spec(cfg.dt_s))
    for twin in plant.twins:
        engine.add_twin(twin, "room")
    rows = engine.rows([(t, f) for t in plant.twins for f in FIELDS]).reshape(rooms, len(FIELDS))
    col = {f: i for i, f in enumerate(FIELDS)}
    onset = cfg.warmup_steps + rng.integers(0, max(1, cfg.observe_steps // 4), rooms)
    units: list[_Unit] = []
    jumps: dict[int, float] = {}
    changes: list[int] = []
    for i in range(rooms):
        label, k = labels[i // n], i % n
        twin, at = plant.twins[i], int(onset[i])
        temps = [int(rows[i, col["temp_1"]]), int(rows[i, col["temp_2"]])]
        if label == "sensor":
            kind = _SENSOR_FAULTS[k % len(_SENSOR_FAULTS)]
            plant.inject(
                Fault(kind, twin, "temp_1", at, magnitude={"drift": 12.0, "spike": 1.0}.get(kind, 0.0))
            )
            units.append(_Unit(label, temps[:1], at))
        elif label == "process":
            jumps[i] = 2.5 if k % 2 else -2.5
            units.append(_Unit(label, temps, at))
        elif label == "model":
            changes.append(i)
            units.append(_Unit(label, temps, at))
        else:
            plant.inject(Fault("drift", twin, "humidity", at, magnitude=30.0))
            units.append(_Unit(label, [int(rows[i, col["humidity"]])], at))
    steps = cfg.warmup_steps + cfg.observe_steps
    heater, fan = _schedule(rng, rooms, steps, cfg.dt_s)
    for i in range(rooms):
        hold = max(int(onset[i]) - 90, 0)
        heater[hold:, i], fan[hold:, i] = 0.6, 0.0
    for step in range(steps):
        plant.heater[:], plant.fan[:] = heater[step], fan[step]
        for i, jump in jumps.items():
            if onset[i] == step:
                plant.temp[i] += jump
        for i in changes:
            if onset[i] == step:
                plant.set_param(plant.twins[i], "loss", 2.5 * float(plant.loss[i]))
        _step(engine, plant.step_frame(), rows, units, step)
    lone = [replace(r, plant="room/hum", label="sensor") for r in _results("room", ("lone",), units)]
    return _results("room", ("sensor", "process", "model"), units) + lone


def _step(
    engine: TwinIntelligence, frame: StepFrame, rows: np.ndarray, units: list[_Unit], step: int
) -> None:
    ok = np.isfinite(frame.values)
    engine.ingest(rows[ok], frame.sensor_t_s[ok], frame.values[ok], frame.seq[ok])
    _score(units, engine.evaluate(frame.t_s).cause.cause, step)


def _asset(cfg: VerdictConfig, kind: str) -> list[VerdictResult]:
    model_name, fault_fields, driver, factor, followers = _ASSETS[kind]
    labels = ("sensor", "process")
    n = cfg.units_per_case
    count = n * len(labels)
    rng = np.random.default_rng(cfg.seed)
    plant: AssetPlant = ASSET_PLANTS[kind](units=count, seed=cfg.seed, dt_s=cfg.dt_s)
    registry = default_registry()
    model = next(m for m in library_models(registry) if m.name == model_name)
    engine = TwinIntelligence(registry=registry)
    engine.add_model(model.spec)
    for twin in plant.twins:
        engine.add_twin(twin, model.name)
    fields = plant.FIELDS
    rows = engine.rows([(t, f) for t in plant.twins for f in fields]).reshape(count, len(fields))
    onset = cfg.warmup_steps + rng.integers(0, max(1, cfg.observe_steps // 4), count)
    noise = dict(zip(fields, plant.noise_std, strict=True))
    units: list[_Unit] = []
    steps_at: dict[int, int] = {}
    for i in range(count):
        label, k = labels[i // n], i % n
        twin, at = plant.twins[i], int(onset[i])
        if label == "sensor":
            f = fault_fields[k % len(fault_fields)]
            fault = _SENSOR_FAULTS[(k // len(fault_fields)) % len(_SENSOR_FAULTS)]
            # a drift of 200 noise widths an hour, a spike of 20 (about the room's faults in its noise)
            size = {"drift": 200.0, "spike": 20.0}.get(fault, 0.0) * float(noise[f])
            plant.inject(Fault(fault, twin, f, at, magnitude=size))
            units.append(_Unit(label, [int(rows[i, fields.index(f)])], at))
        else:
            steps_at[i] = at
            units.append(_Unit(label, [int(rows[i, fields.index(f)]) for f in followers], at))
    for step in range(cfg.warmup_steps + cfg.observe_steps):
        for i, at in steps_at.items():
            if at == step:
                plant.set_input(plant.twins[i], driver, factor * plant.truth(plant.twins[i], driver))
        _step(engine, plant.step_frame(), rows, units, step)
    return _results(kind, labels, units)


def run_verdicts(config: VerdictConfig | None = None) -> list[VerdictResult]:
    """Every line of the check: the room's four labels, then each asset's two. Deterministic for a seed."""
    cfg = config if config is not None else VerdictConfig()
    out = _room(cfg)
    for kind in cfg.assets:
        out.extend(_asset(cfg, kind))
    return out
