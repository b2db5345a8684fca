"""Electric motor kernel (``motor.thermal``): first-order winding temperature; vibration against a baseline.

Per twin, with the load ``L = current / rated_current_a``::

    d(winding_temp)/dt = -(winding_temp - ambient_temp) / tau_s + (rise_rated_c / tau_s) * L^2
    vibration          = vib_base_mm_s + vib_load_mm_s * L

The copper losses go with the square of the current, so the steady temperature rise at rated current is
``rise_rated_c`` and it is reached with the time constant ``tau_s`` (exact discretisation: any step is
stable). A scalar Kalman filter per twin predicts the winding temperature with the committed parameters
before it fuses the new readings; that prediction is what drift and divergence compare with. ``1 / tau`` and
``rise / tau`` are linear in a block regression over consecutive readings, estimated online by recursive
least squares, and committed once settled (a cooling fan failing, the motor overloaded: model drift).

The vibration baseline is learnt once, at the first settled commit (commissioning), and then held: a rise
above it is what the twin must show (bearing wear, misalignment), not something to recalibrate away. To take
a new baseline after maintenance, reload the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias

from drsdtp.errors import InvalidValueError
from drsdtp.kernels.kalman import scalar_update
from drsdtp.kernels.params import merge_params
from drsdtp.kernels.protocol import (
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

__all__ = ["MOTOR_DEFAULT_PARAMS", "MotorThermalKernel", "MotorTracker"]

MOTOR_DEFAULT_PARAMS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "rated_current_a": 30.0,
        "rise_rated_c": 60.0,  # winding temperature rise over ambient at rated current, steady
        "tau_s": 1800.0,  # thermal time constant
        "vib_base_mm_s": 1.2,  # vibration RMS at no load
        "vib_load_mm_s": 0.6,  # extra vibration at rated load
        "temp_process_var": 1e-4,  # C^2 per second the model leaves out
        "prior_rel_std": 0.15,
        "vib_rel_std": 0.02,  # what the vibration model leaves out, relative
    }
)
_POSITIVE: Final = ("rated_current_a", "rise_rated_c", "tau_s", "prior_rel_std", "vib_rel_std")
_BLOCK_S: Final[float] = 300.0  # one regression equation per 5 min of consecutive readings
_MAX_DT_S: Final[float] = 600.0  # a longer gap restarts the block
_FORGET_S: Final[float] = 12 * 3600.0
IndexArray: TypeAlias = "npt.NDArray[np.intp]"


def _thermal_step(
    temp: FloatArray, ambient: FloatArray, load: FloatArray, tau: FloatArray, rise: FloatArray, dt: FloatArray
) -> tuple[FloatArray, FloatArray]:
    equilibrium = ambient + rise * load**2
    decay = np.exp(-dt / np.maximum(tau, 1.0))
    return equilibrium + (temp - equilibrium) * decay, decay


class MotorThermalKernel:
    """Winding temperature from current and ambient; vibration against its load-dependent baseline."""

    name = "motor.thermal"

    @property
    def variables(self) -> tuple[str, ...]:
        return ("winding_temp", "vibration")

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("current", "ambient_temp")

    @property
    def safe_params(self) -> tuple[str, ...]:
        return ("rise_rated_c", "tau_s")

    @property
    def default_params(self) -> Mapping[str, float]:
        return MOTOR_DEFAULT_PARAMS

    @property
    def actuators(self) -> Mapping[str, tuple[float, float]]:
        rated = MOTOR_DEFAULT_PARAMS["rated_current_a"]
        return MappingProxyType({"current": (0.5 * rated, rated)})

    def tracker(self, prior: Mapping[str, float]) -> MotorTracker:
        return MotorTracker(merge_params(MOTOR_DEFAULT_PARAMS, prior, positive=_POSITIVE))

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        """The winding temperature's approach to its new equilibrium under the scenario's current."""
        if not (horizon_s > 0 and math.isfinite(horizon_s)):
            raise InvalidValueError(f"horizon_s must be positive, got {horizon_s}")
        known = {k: v for k, v in state.params.items() if k in MOTOR_DEFAULT_PARAMS}
        p = merge_params(MOTOR_DEFAULT_PARAMS, known)
        for key, scale in scenario.param_scale.items():
            if key not in p:
                raise InvalidValueError(f"scenario {scenario.name!r}: unknown parameter {key!r}")
            p[key] *= scale
        values = {**state.values, **scenario.inputs}
        temp0 = state.values.get("winding_temp", math.nan)
        ambient = values.get("ambient_temp", math.nan)
        current = values.get("current", math.nan)
        if not all(math.isfinite(v) for v in (temp0, ambient, current)):
            raise InvalidValueError(f"twin {state.twin!r}: needs winding_temp, ambient_temp and current")
        steps = max(1, math.ceil(horizon_s / scenario.step_s))
        offsets = np.minimum(np.arange(steps + 1) * scenario.step_s, horizon_s)
        load = current / p["rated_current_a"]
        equilibrium = ambient + p["rise_rated_c"] * load**2
        temps = equilibrium + (temp0 - equilibrium) * np.exp(-offsets / p["tau_s"])
        vib = np.full(offsets.shape, p["vib_base_mm_s"] + p["vib_load_mm_s"] * load)
        spread = 1.96 * np.sqrt(
            state.value_std.get("winding_temp", 0.0) ** 2 + p["temp_process_var"] * offsets
        )
        mean = {"winding_temp": temps, "vibration": vib, "current": np.full(offsets.shape, current)}
        lower = {**mean, "winding_temp": temps - spread}
        upper = {**mean, "winding_temp": temps + spread}
        return Prediction(
            kernel=self.name,
            t0_s=state.t_s,
            offsets_s=offsets,
            mean=MappingProxyType(mean),
            lower=MappingProxyType(lower),
            upper=MappingProxyType(upper),
        )


class MotorTracker:
    """Kalman filter and thermal-rate estimation per twin, plus each twin's vibration baseline."""

    def __init__(self, params: Mapping[str, float]) -> None:
        self.p = dict(params)
        rel = self.p["prior_rel_std"]
        rates = np.array([1.0 / self.p["tau_s"], self.p["rise_rated_c"] / self.p["tau_s"]])
        self.thermal = LinearEstimate(rates, rel * rates, max_rel_std=0.1, per_param=True)
        vib = np.array([self.p["vib_base_mm_s"], self.p["vib_load_mm_s"]])
        self.vib = LinearEstimate(vib, 0.3 * np.abs(vib) + 0.05, max_rel_std=0.02)
        self.slots = 0
        self.x = np.zeros(0)
        self.var = np.zeros(0)
        self.current = np.zeros(0)
        self.ambient = np.zeros(0)
        self.vib_last = np.zeros(0)
        self.vib_learned_t = np.zeros(0)
        self.baseline_locked = np.zeros(0, bool)
        # Learning block: start temperature, accumulated regressors and time.
        self.block_start = np.zeros(0)
        self.block_x = np.zeros((0, 2))
        self.block_dt = np.zeros(0)

    def resize(self, slots: int) -> None:
        extra = slots - self.slots
        if extra <= 0:
            return
        self.thermal.resize(slots)
        self.vib.resize(slots)
        nan = np.full(extra, np.nan)
        for name in ("x", "var", "current", "ambient", "vib_last", "vib_learned_t", "block_start"):
            setattr(self, name, np.r_[getattr(self, name), nan])
        self.block_dt = np.r_[self.block_dt, np.zeros(extra)]
        self.block_x = np.concatenate([self.block_x, np.zeros((extra, 2))])
        self.baseline_locked = np.r_[self.baseline_locked, np.zeros(extra, bool)]
        self.slots = slots

    def _tau_rise(self, idx: IndexArray) -> tuple[FloatArray, FloatArray]:
        a, b = self.thermal.committed[idx, 0], self.thermal.committed[idx, 1]
        a = np.maximum(a, 1e-9)
        return 1.0 / a, b / a

    def step(self, slots: IntArray, dt_s: FloatArray, observations: Mapping[str, Observation]) -> TrackerStep:
        idx = np.asarray(slots, dtype=np.intp)
        self.resize(int(idx.max()) + 1 if idx.size else 0)
        dt = np.asarray(dt_s, np.float64)
        # Inputs in force during the interval that just ended (zero-order hold), then today's readings.
        current_prev, ambient_prev = self.current[idx].copy(), self.ambient[idx].copy()
        for name, store in (("current", self.current), ("ambient_temp", self.ambient)):
            obs = observations.get(name)
            if obs is not None:
                value, ok, _, _ = obs.fused()
                store[idx] = np.where(ok, value, store[idx])
        current = np.where(np.isnan(current_prev), self.current[idx], current_prev)
        ambient = np.where(
            np.isnan(ambient_prev), self.ambient[idx], 0.5 * (ambient_prev + self.ambient[idx])
        )
        load = current / self.p["rated_current_a"]
        prior: dict[str, FloatArray] = {}
        prior_std: dict[str, FloatArray] = {}
        temp_obs = observations.get("winding_temp")
        if temp_obs is not None:
            prior["winding_temp"], prior_std["winding_temp"] = self._filter(idx, temp_obs, dt, ambient, load)
            self._learn_thermal(idx, temp_obs, dt, ambient, load)
        vib_obs = observations.get("vibration")
        if vib_obs is not None:
            load_now = self.current[idx] / self.p["rated_current_a"]
            x = np.column_stack([np.ones(idx.size), load_now])
            mean, var_theta = self.vib.predict(idx, x)
            prior["vibration"] = mean
            prior_std["vibration"] = np.sqrt(var_theta + (self.p["vib_rel_std"] * mean) ** 2)
            self._learn_vibration(idx, vib_obs, x)
        return TrackerStep(prior=MappingProxyType(prior), prior_std=MappingProxyType(prior_std))

    def _filter(
        self, idx: IndexArray, obs: Observation, dt: FloatArray, ambient: FloatArray, load: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        x, var = self.x[idx], self.var[idx]
        value, ok, sigma, _ = obs.fused()
        start = np.isnan(x)
        tau, rise = self._tau_rise(idx)
        predicted, decay = _thermal_step(np.where(start, 0.0, x), ambient, load, tau, rise, dt)
        known = ~start & np.isfinite(predicted)
        p_prior = decay**2 * var + self.p["temp_process_var"] * dt
        x_prior = np.where(known, predicted, np.nan)
        r = np.maximum(np.nan_to_num(sigma, nan=0.1), 1e-3) ** 2
        x_post, v_post = scalar_update(np.where(known, x_prior, 0.0), p_prior, value, r, ok & known)
        begin = ~known & ok
        self.x[idx] = np.where(begin, value, np.where(known, x_post, self.x[idx]))
        self.var[idx] = np.where(begin, r, np.where(known, v_post, self.var[idx]))
        return x_prior, np.sqrt(np.where(known, p_prior, np.nan))

    def _learn_thermal(
        self, idx: IndexArray, obs: Observation, dt: FloatArray, ambient: FloatArray, load: FloatArray
    ) -> None:
        """Blocks of ``_BLOCK_S``: ``(T_end - T_start) / D = a * mean(ambient - T) + b * mean(L^2)``."""
        learn = obs.ok if obs.learn is None else obs.ok & obs.learn
        value, _, sigma, _ = Observation(obs.values, learn, obs.sigma).fused()
        usable = np.isfinite(value) & np.isfinite(ambient) & np.isfinite(load)
        same = usable & np.isfinite(self.block_start[idx]) & (dt > 0) & (dt <= _MAX_DT_S)
        mid = np.where(np.isnan(self.x[idx]), value, self.x[idx])
        x_step = np.column_stack([ambient - mid, load**2])
        acc_x = self.block_x[idx] + np.where(same[:, None], x_step * dt[:, None], 0.0)
        acc_dt = self.block_dt[idx] + np.where(same, dt, 0.0)
        emit = same & (acc_dt >= _BLOCK_S)
        if emit.any():
            sel = np.flatnonzero(emit)
            d = acc_dt[sel]
            y = (value[sel] - self.block_start[idx][sel]) / d
            noise = np.sqrt(2.0) * np.maximum(np.nan_to_num(sigma[sel], nan=0.1), 1e-3) / d
            noise = np.sqrt(noise**2 + self.p["temp_process_var"] / d)
            self.thermal.learn(idx[sel], acc_x[sel] / d[:, None], y, noise, np.exp(-d / _FORGET_S))
        restart = ~same | emit
        self.block_start[idx] = np.where(restart, np.where(usable, value, np.nan), self.block_start[idx])
        self.block_x[idx] = np.where(restart[:, None], 0.0, acc_x)
        self.block_dt[idx] = np.where(restart, 0.0, acc_dt)

    def _learn_vibration(self, idx: IndexArray, obs: Observation, x: FloatArray) -> None:
        value, ok, sigma, t = obs.fused()
        learn = ok if obs.learn is None else ok & obs.learn.any(axis=1)
        self.vib_last[idx] = np.where(ok, value, self.vib_last[idx])
        new = learn & ~(t <= self.vib_learned_t[idx]) & np.isfinite(x).all(axis=1)
        if new.any():
            sel = np.flatnonzero(new)
            noise = np.maximum(np.nan_to_num(sigma[sel], nan=0.05), 1e-3)
            noise = np.sqrt(noise**2 + (self.p["vib_rel_std"] * value[sel]) ** 2)
            self.vib.learn(idx[sel], x[sel], value[sel], noise, np.ones(sel.size))
            self.vib_learned_t[idx[sel]] = np.where(np.isnan(t[sel]), 0.0, t[sel])

    # -- per-twin views -------------------------------------------------------------------------------------

    def state(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = {
            "winding_temp": float(self.x[slot]),
            "vibration": float(self.vib_last[slot]),
            "current": float(self.current[slot]),
            "ambient_temp": float(self.ambient[slot]),
        }
        return values, {"winding_temp": math.sqrt(max(float(self.var[slot]), 0.0))}

    def _named(self, thermal: FloatArray, vib: FloatArray) -> dict[str, float]:
        a = max(float(thermal[0]), 1e-9)
        return {
            "tau_s": 1.0 / a,
            "rise_rated_c": float(thermal[1]) / a,
            "vib_base_mm_s": float(vib[0]),
            "vib_load_mm_s": float(vib[1]),
        }

    def params(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = dict(self.p)
        values.update(self._named(self.thermal.committed[slot], self.vib.committed[slot]))
        a, b = self.thermal.committed[slot]
        sa, sb = self.thermal.committed_std(slot)
        std = {
            "tau_s": float(sa / max(a, 1e-9) ** 2),
            "rise_rated_c": float(math.hypot(sb / max(a, 1e-9), b * sa / max(a, 1e-9) ** 2)),
        }
        std.update(
            dict(
                zip(("vib_base_mm_s", "vib_load_mm_s"), map(float, self.vib.committed_std(slot)), strict=True)
            )
        )
        return values, std

    def candidate_params(self, slot: int) -> dict[str, float]:
        return self._named(self.thermal.candidate(slot), self.vib.candidate(slot))

    def commit(self, slot: int, *, relaxed: bool = False) -> tuple[ParamChange, ...]:
        """Thermal rates once each is known within 10 %; the vibration baseline once, then held."""
        before = self._named(self.thermal.committed[slot], self.vib.committed[slot])
        estimate = self.candidate_params(slot)
        clipped: set[str] = set()
        if self.thermal.settled(slot, relaxed=relaxed) and self.thermal.commit(slot)[2].any():
            clipped |= {"tau_s", "rise_rated_c"}
        if not self.baseline_locked[slot] and self.vib.settled(slot):
            if self.vib.commit(slot)[2].any():
                clipped |= {"vib_base_mm_s", "vib_load_mm_s"}
            self.baseline_locked[slot] = True
        after = self._named(self.thermal.committed[slot], self.vib.committed[slot])
        return tuple(
            ParamChange(k, before[k], after[k], estimate[k], clipped=k in clipped)
            for k in after
            if not math.isclose(before[k], after[k], rel_tol=1e-9)
        )

    def reopen(self, slots: IntArray) -> None:
        self.thermal.reopen(np.asarray(slots, np.intp))
