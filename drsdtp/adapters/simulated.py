"""Simulated source: the :mod:`drsdtp.sim` plant as an adapter (the demo default; intelligence validation).

Settings::

    [[adapters]]
    type = "simulated"
    name = "demo"
    asset = "room"         # room | pump | motor | meter (drsdtp.sim.machines): what the plant is made of
    rooms = 3              # how many units (the key is "rooms" for every asset)
    seed = 0
    dt_s = 10.0            # plant seconds per step
    setpoint_c = 21.0      # optional thermostat setpoint for every room
    speedup = 1.0          # plant seconds per wall second; 0 = as fast as possible (needs steps)
    twin_prefix = "site-a/"  # prepended to the room ids (several plants in one fleet)
    steps = 8640           # optional: stop after this many steps (a finite replay)
    [[adapters.faults]]    # optional, see drsdtp.sim.faults
    kind = "drift"
    twin = "room-2"
    field = "temp_1"
    onset_step = 360
    magnitude = 0.5

Timestamps: plant time maps linearly onto wall-clock milliseconds. Paced (``speedup > 0``): the session
start is "now" and one plant second lasts ``1 / speedup`` wall seconds, so readings are fresh as they arrive.
As fast as possible: the whole run of ``steps`` is laid out at real plant spacing so that it *ends* at the
session start (a replay of recent history; raise ``ingest.stale_after_s`` and ``ingest.max_age_s`` to cover
it).

Like a real sensor network, a dropped reading is simply not sent (the per-sensor ``seq`` shows the gap,
counted in ``stats.lost``) and a re-sent stale sample with an old ``seq`` is dropped as a duplicate. The node
may drive the plant through :attr:`SimulatedAdapter.plant` (``set_input``, ``inject``).

Writes (:class:`drsdtp.adapters.write.Writer`): ``[actuators.write] input = "valve"`` sets that plant input of
the command's twin (its value must be a number); the plant acknowledges at once and reports the new value in
its next step (the echo). ``fail_writes`` (tests) makes the next writes fail as if the device were away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from drsdtp.adapters.base import AdapterStats, Quality, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common
from drsdtp.adapters.settings import Table
from drsdtp.adapters.write import WriteOutcome, WriteRequest, WriteStatus, WriteTarget
from drsdtp.errors import AdapterError, ConfigError, InvalidValueError, UnknownTwinError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.sim import FAULT_KINDS, FIELDS, INPUTS, Fault, Plant
from drsdtp.sim.assets import AssetPlant
from drsdtp.sim.machines import ASSET_PLANTS
from drsdtp.sim.plant import StepFrame

__all__ = ["ASSETS", "SimulatedAdapter", "SimulatedSettings", "SimulatedStats", "build"]

ASSETS = ("room", *ASSET_PLANTS)

_log = logging.getLogger(__name__)
_READINGS_PER_BATCH = 4096  # as-fast-as-possible mode packs several plant steps into one batch
_MAX_MS = float(1 << 62)  # timestamps stay well inside int64


@dataclass(frozen=True, slots=True)
class SimulatedSettings:
    common: CommonSettings
    rooms: int
    seed: int
    dt_s: float
    setpoint_c: float | None
    speedup: float
    steps: int | None
    faults: tuple[Fault, ...]
    twin_prefix: str = ""  # prepended to the plant's room ids (several plants in one fleet)
    asset: str = "room"


@dataclass(frozen=True, slots=True)
class SimulatedWriteTarget:
    input: str

    @property
    def label(self) -> str:
        return f"plant input {self.input}"


@dataclass(slots=True)
class SimulatedStats(AdapterStats):
    duplicates: int = 0
    steps: int = 0


def _fields_of(asset: str) -> tuple[str, ...]:
    return FIELDS if asset == "room" else ASSET_PLANTS[asset].FIELDS


def _parse_fault(t: Table, asset: str) -> Fault:
    kind = t.choice("kind", FAULT_KINDS)
    try:
        fault = Fault(
            kind=kind,
            twin=t.get_str("twin"),
            field=t.choice("field", _fields_of(asset)),
            onset_step=t.get_int("onset_step", lo=0),
            magnitude=t.get_float("magnitude", 0.0),
            duration_steps=t.get_int("duration_steps") if t.has("duration_steps") else None,
            rate=t.get_float("rate", 1.0, lo=0.0, hi=1.0),
            stuck_at_magnitude=t.get_bool("stuck_at_magnitude", False),
        )
    except InvalidValueError as exc:
        raise ConfigError(t.key, str(exc)) from None
    t.done()
    return fault


def parse_settings(raw: Mapping[str, Any], key: str) -> SimulatedSettings:
    t = Table(raw, key)
    common = parse_common(t)
    asset = t.choice("asset", ASSETS, "room")
    settings = SimulatedSettings(
        common=common,
        rooms=t.get_int("rooms", 3, lo=1, hi=100_000),
        seed=t.get_int("seed", 0),
        dt_s=t.get_float("dt_s", 10.0, lo=0.0, lo_exclusive=True),
        setpoint_c=t.opt_float("setpoint_c", lo=-50.0, hi=100.0),
        speedup=t.get_float("speedup", 1.0, lo=0.0),
        steps=t.get_int("steps", lo=1) if t.has("steps") else None,
        faults=tuple(_parse_fault(f, asset) for f in t.tables("faults")),
        twin_prefix=t.get_str("twin_prefix", "", allow_empty=True),
        asset=asset,
    )
    if asset != "room" and settings.setpoint_c is not None:
        raise t.error("setpoint_c", f"a thermostat set-point is for rooms, not {asset}s")
    if settings.speedup == 0 and settings.steps is None:
        raise t.error("steps", "is required with speedup = 0 (an endless run cannot end at 'now')")
    t.done()
    return settings


def build(raw: Mapping[str, Any], key: str) -> SimulatedAdapter:
    adapter = SimulatedAdapter(parse_settings(raw, key))
    for i, fault in enumerate(adapter.settings.faults):
        try:
            adapter.plant.inject(fault)
        except UnknownTwinError as exc:
            kind = adapter.settings.asset
            raise ConfigError(
                f"{key}.faults[{i}].twin", f"no such twin {exc} (twins are {kind}-1..{kind}-N)"
            ) from None
    return adapter


class SimulatedAdapter(SharedSettings):
    kind = "simulated"

    def __init__(self, settings: SimulatedSettings, plant: Plant | AssetPlant | None = None) -> None:
        self.settings = settings
        self.common = settings.common
        self.plant: Plant | AssetPlant
        if plant is not None:
            self.plant = plant
        elif settings.asset == "room":
            self.plant = Plant(
                rooms=settings.rooms, seed=settings.seed, dt_s=settings.dt_s, setpoint_c=settings.setpoint_c
            )
        else:
            self.plant = ASSET_PLANTS[settings.asset](
                units=settings.rooms, seed=settings.seed, dt_s=settings.dt_s
            )
        self._stats = SimulatedStats()
        fields = self.plant.fields
        self._units = len(self.plant.twins)
        shape = (self._units, len(fields))
        self._last_seq: npt.NDArray[np.int64] = np.full(shape, -1, np.int64)
        names = [settings.twin_prefix + t for t in self.plant.twins]
        self._twins = np.repeat(np.array(names, dtype=object), len(fields))
        self._fields = np.tile(np.array(fields, dtype=object), self._units)
        self.fail_writes = 0  # tests: this many next writes fail as if the device were unreachable
        self.writes = 0

    def write_target(self, raw: Mapping[str, Any], key: str) -> SimulatedWriteTarget:
        t = Table(raw, key)
        target = SimulatedWriteTarget(
            t.choice("input", INPUTS if isinstance(self.plant, Plant) else self.plant.INPUTS)
        )
        t.done()
        return target

    async def write(self, target: WriteTarget, request: WriteRequest) -> WriteOutcome:
        assert isinstance(target, SimulatedWriteTarget)
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise AdapterError(f"{self.name}: simulated device unreachable")
        value = request.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return WriteOutcome(WriteStatus.REJECTED, f"{target.label} takes a number, got {value!r}")
        twin = request.twin.removeprefix(self.settings.twin_prefix)
        try:
            self.plant.set_input(twin, target.input, float(value))
        except (UnknownTwinError, InvalidValueError, ValueError) as exc:
            return WriteOutcome(WriteStatus.REJECTED, str(exc))
        self.writes += 1
        return WriteOutcome(WriteStatus.ACKNOWLEDGED, f"{target.input} = {float(value):g}")

    @property
    def stats(self) -> SimulatedStats:
        return self._stats

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncIterator[SourceBatch]]:
        yield self._run()

    def _step_into(self, out: SourceBatch, anchor_ms: float, anchor_t: float, ms_per_s: float) -> None:
        self.frame_into(self.plant.step_frame(), out, anchor_ms, anchor_t, ms_per_s)

    def frame_into(
        self, frame: StepFrame, out: SourceBatch, anchor_ms: float, anchor_t: float, ms_per_s: float
    ) -> None:
        """One plant step's readings into ``out``. A sensor time that maps to no int64 millisecond (a
        broken kernel's inf or NaN) makes that reading malformed rather than a garbage timestamp."""
        st = self._stats
        st.steps += 1
        values = frame.values.ravel()
        seq = frame.seq
        sent = ~np.isnan(frame.values)
        last = self._last_seq
        fresh = sent & (seq > last)
        st.messages += int(np.count_nonzero(sent))
        st.duplicates += int(np.count_nonzero(sent & ~fresh))
        # Readings lost since the last one each sensor delivered (dropouts), counted when it speaks again.
        st.lost += int(np.sum(np.where(fresh & (last >= 0), seq - last - 1, 0)))
        self._last_seq = np.where(fresh, seq, last)
        keep = fresh.ravel()
        with np.errstate(all="ignore"):
            ts_all = anchor_ms + (frame.sensor_t_s.ravel() - anchor_t) * ms_per_s
        unusable = keep & ~(np.abs(ts_all) < _MAX_MS)  # also NaN
        if unusable.any():
            st.malformed += int(np.count_nonzero(unusable))
            keep = keep & ~unusable
        ts = ts_all[keep]
        n = int(np.count_nonzero(keep))
        out.twins.extend(self._twins[keep].tolist())
        out.fields.extend(self._fields[keep].tolist())
        out.values.extend(values[keep].tolist())
        out.source_ms.extend(ts.astype(np.int64).tolist())
        out.quality.extend([Quality.GOOD] * n)

    async def _run(self) -> AsyncIterator[SourceBatch]:
        s = self.settings
        loop = asyncio.get_running_loop()
        remaining = s.steps - self._stats.steps if s.steps is not None else None
        start_wall = wall_ms()
        if s.speedup > 0:
            anchor_t, ms_per_s = self.plant.t_s, 1000.0 / s.speedup
            start_loop = loop.time()
            k = 0
            while remaining is None or remaining > 0:
                k += 1
                delay = start_loop + k * s.dt_s / s.speedup - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                batch = SourceBatch(wall_ms())
                self._step_into(batch, start_wall, anchor_t, ms_per_s)
                if remaining is not None:
                    remaining -= 1
                yield batch
            return
        assert remaining is not None
        # Replay: the last step lands on the session start, earlier ones at real plant spacing before it.
        anchor_t = self.plant.t_s + remaining * s.dt_s
        per_step = self._units * len(self.plant.fields)
        steps_per_batch = max(1, _READINGS_PER_BATCH // per_step)
        while remaining > 0:
            batch = SourceBatch(wall_ms())
            for _ in range(min(steps_per_batch, remaining)):
                self._step_into(batch, start_wall, anchor_t, 1000.0)
                remaining -= 1
            yield batch
        _log.info("%s: replay of %d steps finished", self.name, self._stats.steps)
