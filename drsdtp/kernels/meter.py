"""Energy meter kernel (``meter.energy``): the energy counter and the power reading must tell the same story.

A meter reports a monotonic energy counter (kWh) and the instantaneous power (kW). Over a window of at least
``window_s`` between two counter readings, the counter gives the mean power ``3600 * dE / dt``; the power
readings, integrated over the same window (trapezoid), give it too. The model is::

    mean measured power = power_scale * mean counter power

(``power_scale`` absorbs a current-transformer ratio error; it is estimated online and committed when
settled). The model's opinion of the power now is the counter's mean power, moved by what the power readings
did within the window; its residual against the power reading is exactly the disagreement between the two,
and it feeds the divergence monitor (a drifting power sensor, a meter losing pulses).

The counter itself is checked as it arrives: it only grows; a drop that lands where a wrap at
``rollover_kwh`` would put it is a rollover (unwrapped, counted); a drop to below half its value is a reset
(the window restarts, counted); any other drop is the counter running backwards (counted, and it shows in
the next residual). The counts are part of the twin's model state (``insight model``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.params import merge_params
from drsdtp.kernels.protocol import (
    BoolArray,
    FloatArray,
    IntArray,
    Observation,
    ParamChange,
    Prediction,
    Scenario,
    TrackerStep,
    TwinState,
)
from drsdtp.kernels.regression import LinearEstimate

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["METER_DEFAULT_PARAMS", "EnergyMeterKernel", "MeterTracker"]

METER_DEFAULT_PARAMS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "rollover_kwh": 1_000_000.0,  # the counter wraps to 0 here (0: it never wraps)
        "energy_resolution_kwh": 0.01,  # the counter's quantum
        "power_scale": 1.0,  # measured power / counter power
        "window_s": 120.0,  # shortest span the two are compared over
        "prior_rel_std": 0.02,
        "model_rel_std": 0.005,
    }
)
_POSITIVE: Final = ("energy_resolution_kwh", "power_scale", "window_s", "prior_rel_std", "model_rel_std")
_FORGET_S: Final[float] = 24 * 3600.0
_COUNTS: Final = ("rollovers", "resets", "backwards")
IndexArray: TypeAlias = "npt.NDArray[np.intp]"


class EnergyMeterKernel:
    """Counter monotonicity, resets and rollovers, and power = d(energy)/dt consistency."""

    name = "meter.energy"

    @property
    def variables(self) -> tuple[str, ...]:
        return ("power",)

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("energy",)

    @property
    def safe_params(self) -> tuple[str, ...]:
        return ("power_scale",)

    @property
    def default_params(self) -> Mapping[str, float]:
        return METER_DEFAULT_PARAMS

    def tracker(self, prior: Mapping[str, float]) -> MeterTracker:
        p = merge_params(METER_DEFAULT_PARAMS, prior, positive=_POSITIVE)
        if p["rollover_kwh"] < 0:
            raise InvalidValueError("params.rollover_kwh: must be >= 0 (0: the counter never wraps)")
        return MeterTracker(p)

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        """The counter at the scenario's power (held), wrapping at ``rollover_kwh``."""
        if not (horizon_s > 0 and math.isfinite(horizon_s)):
            raise InvalidValueError(f"horizon_s must be positive, got {horizon_s}")
        known = {k: v for k, v in state.params.items() if k in METER_DEFAULT_PARAMS}
        p = merge_params(METER_DEFAULT_PARAMS, known)
        values = {**state.values, **scenario.inputs}
        power, energy = values.get("power", math.nan), state.values.get("energy", math.nan)
        if not (math.isfinite(power) and math.isfinite(energy)):
            raise InvalidValueError(f"twin {state.twin!r}: needs power and energy")
        steps = max(1, math.ceil(horizon_s / scenario.step_s))
        offsets = np.minimum(np.arange(steps + 1) * scenario.step_s, horizon_s)
        counter = energy + power / p["power_scale"] * offsets / 3600.0
        if p["rollover_kwh"] > 0:
            counter = np.mod(counter, p["rollover_kwh"])
        mean = {"power": np.full(offsets.shape, power), "energy": counter}
        return Prediction(
            kernel=self.name,
            t0_s=state.t_s,
            offsets_s=offsets,
            mean=MappingProxyType(mean),
            lower=MappingProxyType(mean),
            upper=MappingProxyType(mean),
        )


class MeterTracker:
    """Per twin: the unwrapped counter, the comparison window, the scale estimate and the event counts."""

    def __init__(self, params: Mapping[str, float]) -> None:
        self.p = dict(params)
        scale = np.array([self.p["power_scale"]])
        self.scale = LinearEstimate(scale, self.p["prior_rel_std"] * scale, max_rel_std=0.005)
        self.slots = 0
        names = ("offset", "last_e", "last_t", "last_p", "anchor_e", "anchor_t", "acc_p", "power")
        self.a: dict[str, FloatArray] = {k: np.zeros(0) for k in names}
        self.counts: dict[str, IntArray] = {k: np.zeros(0, np.int64) for k in _COUNTS}

    def resize(self, slots: int) -> None:
        extra = slots - self.slots
        if extra <= 0:
            return
        self.scale.resize(slots)
        for k in self.a:
            self.a[k] = np.r_[
                self.a[k], np.zeros(extra) if k in ("offset", "acc_p") else np.full(extra, np.nan)
            ]
        for k in self.counts:
            self.counts[k] = np.r_[self.counts[k], np.zeros(extra, np.int64)]
        self.slots = slots

    def step(self, slots: IntArray, dt_s: FloatArray, observations: Mapping[str, Observation]) -> TrackerStep:
        idx = np.asarray(slots, dtype=np.intp)
        self.resize(int(idx.max()) + 1 if idx.size else 0)
        n = idx.size
        power_obs, energy_obs = observations.get("power"), observations.get("energy")
        nan = np.full(n, np.nan)
        if power_obs is None or energy_obs is None:
            return TrackerStep(
                prior=MappingProxyType({"power": nan}), prior_std=MappingProxyType({"power": nan})
            )
        p_now, p_ok, p_sigma, _ = power_obs.fused()
        e_now, e_ok, _, e_t = energy_obs.fused()
        a = self.a
        a["power"][idx] = np.where(p_ok, p_now, a["power"][idx])
        last_t = a["last_t"][idx]
        new = e_ok & p_ok & (np.isnan(last_t) | (e_t > last_t) | np.isnan(e_t))
        t = np.where(np.isnan(e_t), np.nan_to_num(last_t) + np.asarray(dt_s, np.float64), e_t)
        unwrapped = self._unwrap(idx, new, e_now, t)
        prior, prior_std = nan.copy(), nan.copy()
        first = new & np.isnan(a["last_e"][idx])
        cont = new & ~first & np.isfinite(a["anchor_e"][idx])
        # Accumulate the power integral since the anchor (trapezoid between counter readings).
        step_dt = np.where(cont, t - a["last_t"][idx], 0.0)
        acc = a["acc_p"][idx] + np.where(cont, 0.5 * (a["last_p"][idx] + p_now) * step_dt, 0.0)
        span = t - a["anchor_t"][idx]
        due = cont & (span >= self.p["window_s"])
        if due.any():
            prior, prior_std = self._compare(
                idx, due, unwrapped, span, acc, p_now, np.nan_to_num(p_sigma), prior
            )
        restart = new & (first | due | ~np.isfinite(a["anchor_e"][idx]))
        a["anchor_e"][idx] = np.where(restart, unwrapped, a["anchor_e"][idx])
        a["anchor_t"][idx] = np.where(restart, t, a["anchor_t"][idx])
        a["acc_p"][idx] = np.where(restart, 0.0, np.where(cont, acc, a["acc_p"][idx]))
        a["last_e"][idx] = np.where(new, unwrapped, a["last_e"][idx])
        a["last_t"][idx] = np.where(new, t, a["last_t"][idx])
        a["last_p"][idx] = np.where(new, p_now, a["last_p"][idx])
        return TrackerStep(
            prior=MappingProxyType({"power": prior}), prior_std=MappingProxyType({"power": prior_std})
        )

    def _unwrap(self, idx: IndexArray, new: BoolArray, reading: FloatArray, t: FloatArray) -> FloatArray:
        """The reading on the unwrapped scale; rollovers, resets and backwards steps are counted."""
        a, p = self.a, self.p
        offset = a["offset"][idx]
        last = a["last_e"][idx]
        value = reading + offset
        tol = 2.0 * p["energy_resolution_kwh"]
        drop = new & np.isfinite(last) & (value < last - tol)
        if not drop.any():
            return value
        rollover = p["rollover_kwh"]
        # Plausible increment: the last power for the time since the last reading, with a wide margin.
        gap = np.maximum(np.nan_to_num(t - a["last_t"][idx]), 0.0)
        reach = 3.0 * np.abs(np.nan_to_num(a["power"][idx])) * gap / 3600.0 + 10 * tol
        wrapped = (
            drop & (rollover > 0) & (value + rollover >= last - tol) & (value + rollover <= last + reach)
        )
        reset = drop & ~wrapped & (value < 0.5 * last)
        backwards = drop & ~wrapped & ~reset
        a["offset"][idx] = offset + np.where(wrapped, rollover, 0.0)
        value = value + np.where(wrapped, rollover, 0.0)
        for name, mask in (("rollovers", wrapped), ("resets", reset), ("backwards", backwards)):
            self.counts[name][idx] += mask
        # A reset starts the comparison over from the new reading.
        a["anchor_e"][idx] = np.where(reset, np.nan, a["anchor_e"][idx])
        a["last_e"][idx] = np.where(reset, np.nan, a["last_e"][idx])
        return value

    def _compare(
        self,
        idx: IndexArray,
        due: BoolArray,
        unwrapped: FloatArray,
        span: FloatArray,
        acc: FloatArray,
        p_now: FloatArray,
        p_sigma: FloatArray,
        prior: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        a, p = self.a, self.p
        sel = np.flatnonzero(due)
        d = span[sel]
        counter_power = (unwrapped[sel] - a["anchor_e"][idx][sel]) * 3600.0 / d
        measured_mean = acc[sel] / d
        x = counter_power[:, None]
        mean, var_theta = self.scale.predict(idx[sel], x)
        # Quantisation at both ends of the window, power noise averaged over it, what the model leaves out.
        quant = p["energy_resolution_kwh"] * 3600.0 / d * math.sqrt(2.0 / 12.0)
        noise = np.sqrt(quant**2 + (p["model_rel_std"] * measured_mean) ** 2)
        std = prior.copy()
        out = prior.copy()
        out[sel] = mean + (p_now[sel] - measured_mean)
        std[sel] = np.sqrt(var_theta + noise**2)
        learn_sigma = np.sqrt(noise**2 + p_sigma[sel] ** 2 * 0.1) + 1e-9
        self.scale.learn(idx[sel], x, measured_mean, learn_sigma, np.exp(-d / _FORGET_S))
        return out, std

    # -- per-twin views -------------------------------------------------------------------------------------

    def state(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        a = self.a
        values = {
            "power": float(a["power"][slot]),
            "energy": float(a["last_e"][slot] - a["offset"][slot]),
            "energy_unwrapped": float(a["last_e"][slot]),
        }
        values.update({k: float(v[slot]) for k, v in self.counts.items()})
        return values, {}

    def params(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = dict(self.p)
        values["power_scale"] = float(self.scale.committed[slot, 0])
        return values, {"power_scale": float(self.scale.committed_std(slot)[0])}

    def candidate_params(self, slot: int) -> dict[str, float]:
        return {"power_scale": float(self.scale.candidate(slot)[0])}

    def commit(self, slot: int, *, relaxed: bool = False) -> tuple[ParamChange, ...]:
        if not self.scale.settled(slot, relaxed=relaxed):
            return ()
        old, new, clipped = self.scale.commit(slot)
        if math.isclose(float(old[0]), float(new[0]), rel_tol=1e-9):
            return ()
        return (
            ParamChange(
                "power_scale",
                float(old[0]),
                float(new[0]),
                float(self.scale.candidate(slot)[0]),
                bool(clipped[0]),
            ),
        )

    def reopen(self, slots: IntArray) -> None:
        self.scale.reopen(np.asarray(slots, np.intp))
