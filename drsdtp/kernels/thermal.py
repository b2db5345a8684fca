"""First-order thermal kernel: Newton cooling with heater and fan inputs, plus a first-order humidity model.

Model (per twin; exact discretisation, so any step is stable)::

    dT/dt = -(loss + fan_loss * fan) * (T - T_out) + heater_gain * heater
    dH/dt = c0 + c1 H + fan * (c2 + c3 H)      (c0 = hum_rate * hum_ambient, c1 = -hum_rate,
                                                 c2 = fan_hum_rate * hum_dry, c3 = -fan_hum_rate)

A finite ``setpoint`` runs a bang-bang thermostat with ``hysteresis`` in simulation; a scenario that sets
``heater`` overrides it.

The tracker follows live twins, all twins of the type in one vectorised step:

* a scalar Kalman filter per twin and variable predicts with the committed parameters and fuses the redundant
  sensors one by one (only readings the health layer let through). The prediction made before fusing is the
  model's opinion that drift and divergence compare every sensor with;
* recursive least squares with forgetting estimates the parameters from consecutive readings (trapezoidal
  regressor, so sensor noise does not bias the estimate). Estimates are *candidates*; prediction only uses
  *committed* parameters, which change through :meth:`ThermalTracker.commit` (logged by the caller), clipped
  to safe bounds around the nominal values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from drsdtp.errors import ConfigError, InvalidValueError
from drsdtp.kernels.kalman import scalar_update
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
from drsdtp.kernels.rls import BatchRLS

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["DEFAULT_PARAMS", "FirstOrderThermalKernel", "ThermalTracker"]

_HOUR: Final[float] = 3600.0
DEFAULT_PARAMS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "loss": 1.0 / (3 * _HOUR),
        "fan_loss": 2.0 / (3 * _HOUR),
        "heater_gain": 25.0 / (3 * _HOUR),
        "hum_rate": 1.0 / (2 * _HOUR),
        "hum_ambient": 60.0,
        "fan_hum_rate": 1.0 / _HOUR,
        "hum_dry": 35.0,
        "hysteresis": 0.5,
        "temp_process_var": 1e-6,
        "hum_process_var": 1e-5,
    }
)
_TEMP_PARAMS: Final = ("loss", "fan_loss", "heater_gain")
_HUM_PARAMS: Final = ("hum_rate", "hum_ambient", "fan_hum_rate", "hum_dry")
_SAFE_FACTOR: Final[float] = 4.0  # committed rates stay within [nominal / 4, nominal * 4]
_MAX_REL_STD: Final[float] = 0.25  # only rates known to +-25 % (1 sigma) are committed
_MAX_LEVEL_STD: Final[float] = 3.0  # humidity levels: +-3 %RH
_FORGET_S: Final[float] = 3 * _HOUR
_MAX_DT_S: Final[float] = 120.0  # a longer gap between readings restarts the learning block
_BLOCK_S: Final[float] = 60.0  # one regression equation per minute of consecutive readings
_RATE_FLOOR: Final[float] = 1e-9


def _temp_step(
    t: FloatArray,
    t_out: FloatArray,
    heater: FloatArray,
    fan: FloatArray,
    p: FloatArray,
    dt: FloatArray | float,
) -> tuple[FloatArray, FloatArray]:
    """Exact temperature step; ``p[..., :3]`` = loss, fan_loss, heater_gain. Returns (T, decay)."""
    rate = np.maximum(p[..., 0] + p[..., 1] * fan, _RATE_FLOOR)
    equilibrium = t_out + p[..., 2] * heater / rate
    decay = np.exp(-rate * dt)
    return equilibrium + (t - equilibrium) * decay, decay


def _hum_step(
    h: FloatArray, fan: FloatArray, c: FloatArray, dt: FloatArray | float
) -> tuple[FloatArray, FloatArray]:
    """Exact step of the humidity model with linear-in-parameter coefficients ``c[..., :4]``."""
    rate = np.maximum(-(c[..., 1] + c[..., 3] * fan), _RATE_FLOOR)
    equilibrium = (c[..., 0] + c[..., 2] * fan) / rate
    decay = np.exp(-rate * dt)
    return np.clip(equilibrium + (h - equilibrium) * decay, 0.0, 100.0), decay


def _hum_coefficients(p: Mapping[str, float]) -> FloatArray:
    hr, ha, hf, hd = (p[k] for k in _HUM_PARAMS)
    return np.array([hr * ha, -hr, hf * hd, -hf])


def _hum_params(c: FloatArray) -> dict[str, float]:
    hr, hf = max(-float(c[1]), _RATE_FLOOR), max(-float(c[3]), _RATE_FLOOR)
    return {"hum_rate": hr, "hum_ambient": float(c[0]) / hr, "fan_hum_rate": hf, "hum_dry": float(c[2]) / hf}


def _merged(params: Mapping[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_PARAMS)
    for key, value in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise ConfigError(
                f"kernel.thermal.params.{key}", f"unknown parameter; expected {tuple(DEFAULT_PARAMS)}"
            )
        if not (math.isfinite(value) and value >= 0.0):
            raise ConfigError(f"kernel.thermal.params.{key}", f"must be finite and >= 0, got {value}")
        merged[key] = float(value)
    return merged


class FirstOrderThermalKernel:
    """Room temperature and humidity driven by outdoor temperature, heater, fan and an optional thermostat."""

    name = "thermal.first_order"

    def __init__(self, z: float = 1.96) -> None:
        self.z = z

    @property
    def variables(self) -> tuple[str, ...]:
        return ("temp", "humidity")

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("outdoor_temp", "heater", "fan", "setpoint")

    @property
    def safe_params(self) -> tuple[str, ...]:
        return _TEMP_PARAMS + _HUM_PARAMS

    @property
    def default_params(self) -> Mapping[str, float]:
        """Every parameter a model may declare, with its default."""
        return DEFAULT_PARAMS

    @property
    def actuators(self) -> Mapping[str, tuple[float, float]]:
        """Inputs an operator can move, with their range (used to check actuator suggestions)."""
        return MappingProxyType({"heater": (0.0, 1.0), "fan": (0.0, 1.0)})

    def tracker(self, prior: Mapping[str, float]) -> ThermalTracker:
        return ThermalTracker(_merged(prior))

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        """Deterministic trajectory; the interval carries the state's uncertainty, not the parameters'."""
        return self.simulate_ensemble(state, scenario, horizon_s, runs=1, rng=None)

    def simulate_ensemble(
        self,
        state: TwinState,
        scenario: Scenario,
        horizon_s: float,
        runs: int,
        rng: np.random.Generator | None,
    ) -> Prediction:
        """Monte Carlo over parameter and state uncertainty (``runs`` trajectories at once)."""
        if not (horizon_s > 0 and math.isfinite(horizon_s)):
            raise InvalidValueError(f"horizon_s must be positive, got {horizon_s}")
        if runs < 1:
            raise InvalidValueError(f"runs must be >= 1, got {runs}")
        params = _merged({k: v for k, v in state.params.items() if k in DEFAULT_PARAMS})
        for key, scale in scenario.param_scale.items():
            if key not in params:
                raise InvalidValueError(f"scenario {scenario.name!r}: unknown parameter {key!r}")
            params[key] *= scale

        def draw(name: str, value: float, std: float) -> FloatArray:
            if rng is None or runs == 1 or std <= 0.0:
                return np.full(runs, value)
            return rng.normal(value, std, runs)

        def value_of(var: str, default: float) -> float:
            v = state.values.get(var, default)
            return default if not math.isfinite(v) else v

        temp0 = value_of("temp", math.nan)
        if math.isnan(temp0):
            raise InvalidValueError(f"twin {state.twin!r}: no temperature to start from")
        temp = draw("temp", temp0, state.value_std.get("temp", 0.0))
        hum = draw("humidity", value_of("humidity", 50.0), state.value_std.get("humidity", 0.0))
        p_temp = np.column_stack(
            [
                np.maximum(
                    draw(k, params[k], state.param_std.get(k, 0.0) * (scenario.param_scale.get(k, 1.0))), 0.0
                )
                for k in _TEMP_PARAMS
            ]
        )
        hum_draws = {k: np.maximum(draw(k, params[k], state.param_std.get(k, 0.0)), 0.0) for k in _HUM_PARAMS}
        c = np.column_stack(
            [
                hum_draws["hum_rate"] * hum_draws["hum_ambient"],
                -hum_draws["hum_rate"],
                hum_draws["fan_hum_rate"] * hum_draws["hum_dry"],
                -hum_draws["fan_hum_rate"],
            ]
        )

        inputs = {**{k: v for k, v in state.values.items() if k in self.inputs}, **scenario.inputs}
        fan = np.full(runs, float(np.clip(inputs.get("fan", 0.0), 0.0, 1.0)))
        heater = np.full(runs, float(np.clip(state.values.get("heater", 0.0), 0.0, 1.0)))
        setpoint = inputs.get("setpoint", math.nan)
        thermostat = math.isfinite(setpoint) and "heater" not in scenario.inputs
        if "heater" in scenario.inputs:
            heater[:] = float(np.clip(scenario.inputs["heater"], 0.0, 1.0))
        t_out0 = value_of("outdoor_temp", temp0)
        out_rate = 0.0 if "outdoor_temp" in scenario.inputs else state.rates.get("outdoor_temp", 0.0)
        half_band = 0.5 * params["hysteresis"]

        step = scenario.step_s
        steps = max(1, math.ceil(horizon_s / step))
        offsets = np.minimum(np.arange(steps + 1) * step, horizon_s)
        temps, hums, heaters = (
            np.empty((runs, steps + 1)),
            np.empty((runs, steps + 1)),
            np.empty((runs, steps + 1)),
        )
        temps[:, 0], hums[:, 0], heaters[:, 0] = temp, hum, heater
        q_temp, q_hum = params["temp_process_var"], params["hum_process_var"]
        for i in range(1, steps + 1):
            dt = offsets[i] - offsets[i - 1]
            if thermostat:
                heater = np.where(
                    temp < setpoint - half_band, 1.0, np.where(temp > setpoint + half_band, 0.0, heater)
                )
            mid = 0.5 * (offsets[i] + offsets[i - 1])
            t_out = np.full(runs, t_out0 + float(np.clip(out_rate * mid, -5.0, 5.0)))
            temp, _ = _temp_step(temp, t_out, heater, fan, p_temp, dt)
            hum, _ = _hum_step(hum, fan, c, dt)
            if rng is not None and runs > 1:
                temp = temp + rng.normal(0.0, math.sqrt(q_temp * dt), runs)
                hum = hum + rng.normal(0.0, math.sqrt(q_hum * dt), runs)
            temps[:, i], hums[:, i], heaters[:, i] = temp, hum, heater

        mean = {"temp": temps.mean(axis=0), "humidity": hums.mean(axis=0), "heater": heaters.mean(axis=0)}
        if runs > 1:
            lo, hi = 0.5 * (1 - 0.95), 1 - 0.5 * (1 - 0.95)
            lower = {
                k: np.quantile(v, lo, axis=0)
                for k, v in (("temp", temps), ("humidity", hums), ("heater", heaters))
            }
            upper = {
                k: np.quantile(v, hi, axis=0)
                for k, v in (("temp", temps), ("humidity", hums), ("heater", heaters))
            }
        else:
            spread = {
                "temp": self.z * np.sqrt(state.value_std.get("temp", 0.0) ** 2 + q_temp * offsets),
                "humidity": self.z * np.sqrt(state.value_std.get("humidity", 0.0) ** 2 + q_hum * offsets),
                "heater": np.zeros_like(offsets),
            }
            lower = {k: mean[k] - spread[k] for k in mean}
            upper = {k: mean[k] + spread[k] for k in mean}
        return Prediction(
            kernel=self.name,
            t0_s=state.t_s,
            offsets_s=offsets,
            mean=MappingProxyType(mean),
            lower=MappingProxyType(lower),
            upper=MappingProxyType(upper),
        )


class ThermalTracker:
    """Kalman filters and RLS estimators for every twin of a thermal model type (one slot per twin)."""

    def __init__(self, prior: Mapping[str, float]) -> None:
        self.prior = dict(prior)
        self._temp_prior = np.array([prior[k] for k in _TEMP_PARAMS])
        self._hum_prior = _hum_coefficients(prior)
        self.temp_rls = BatchRLS(
            self._temp_prior,
            0.5 * self._temp_prior + 1e-7,
            lower=np.zeros(3),
            upper=self._temp_prior * 50.0,
        )
        hum_scale = np.abs(self._hum_prior)
        self.hum_rls = BatchRLS(
            self._hum_prior,
            0.5 * hum_scale + 1e-7,
            lower=np.array([0.0, -hum_scale[1] * 50.0, 0.0, -hum_scale[3] * 50.0]),
            upper=np.array([hum_scale[0] * 50.0, 0.0, hum_scale[2] * 50.0, 0.0]),
        )
        self.slots = 0
        self.temp_committed = np.zeros((0, 3))
        self.hum_committed = np.zeros((0, 4))
        self.x: dict[str, FloatArray] = {"temp": np.zeros(0), "humidity": np.zeros(0)}
        self.var: dict[str, FloatArray] = {"temp": np.zeros(0), "humidity": np.zeros(0)}
        self.prev_inputs: dict[str, FloatArray] = {
            "outdoor_temp": np.zeros(0),
            "heater": np.zeros(0),
            "fan": np.zeros(0),
        }
        self.blocks: dict[str, _Block] = {}

    def resize(self, slots: int) -> None:
        extra = slots - self.slots
        if extra <= 0:
            return
        self.temp_rls.resize(slots)
        self.hum_rls.resize(slots)
        self.temp_committed = np.concatenate([self.temp_committed, np.tile(self._temp_prior, (extra, 1))])
        self.hum_committed = np.concatenate([self.hum_committed, np.tile(self._hum_prior, (extra, 1))])
        for d in (self.x, self.var, self.prev_inputs):
            for key in d:
                d[key] = np.r_[d[key], np.full(extra, np.nan)]
        self.slots = slots

    def step(self, slots: IntArray, dt_s: FloatArray, observations: Mapping[str, Observation]) -> TrackerStep:
        idx = np.asarray(slots, dtype=np.intp)
        self.resize(int(idx.max()) + 1 if idx.size else 0)
        dt = np.asarray(dt_s, dtype=np.float64)
        inputs_now: dict[str, FloatArray] = {}
        for name in ("outdoor_temp", "heater", "fan"):
            prev = self.prev_inputs[name][idx]
            obs = observations.get(name)
            if obs is None:
                now = np.where(np.isnan(prev), 0.0, prev)
            else:
                ok = obs.ok[:, 0]
                now = np.where(ok, obs.values[:, 0], prev)
            inputs_now[name] = now
        # Inputs in force during the interval that just ended (zero-order hold), outdoor at mid-interval.
        heater = _fill(self.prev_inputs["heater"][idx], inputs_now["heater"])
        fan = _fill(self.prev_inputs["fan"][idx], inputs_now["fan"])
        t_out_prev = _fill(self.prev_inputs["outdoor_temp"][idx], inputs_now["outdoor_temp"])
        t_out = 0.5 * (t_out_prev + inputs_now["outdoor_temp"])

        prior: dict[str, FloatArray] = {}
        prior_std: dict[str, FloatArray] = {}
        p_temp = self.temp_committed[idx]
        p_hum = self.hum_committed[idx]

        def predict_temp(x: FloatArray) -> tuple[FloatArray, FloatArray]:
            return _temp_step(x, t_out, heater, fan, p_temp, dt)

        def predict_hum(x: FloatArray) -> tuple[FloatArray, FloatArray]:
            return _hum_step(x, fan, p_hum, dt)

        for var, predict, q in (
            ("temp", predict_temp, self.prior["temp_process_var"]),
            ("humidity", predict_hum, self.prior["hum_process_var"]),
        ):
            obs = observations.get(var)
            if obs is None:
                prior[var] = np.full(idx.size, np.nan)
                prior_std[var] = np.full(idx.size, np.nan)
                continue
            prior[var], prior_std[var] = self._filter(var, idx, obs, dt, predict, q)
            self._learn(var, idx, obs, dt, heater, fan, t_out, q)

        for name, now in inputs_now.items():
            self.prev_inputs[name][idx] = now
        return TrackerStep(prior=MappingProxyType(prior), prior_std=MappingProxyType(prior_std))

    def _filter(
        self,
        var: str,
        idx: npt.NDArray[np.intp],
        obs: Observation,
        dt: FloatArray,
        predict: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
        q: float,
    ) -> tuple[FloatArray, FloatArray]:
        x, var_x = self.x[var][idx], self.var[var][idx]
        r = np.maximum(obs.sigma, 1e-6) ** 2
        any_ok = obs.ok.any(axis=1)
        start = np.isnan(x)
        # First sight: start from the mean of the usable sensors.
        with np.errstate(invalid="ignore", divide="ignore"):
            n_ok = obs.ok.sum(axis=1)
            mean0 = np.where(obs.ok, obs.values, 0.0).sum(axis=1) / n_ok
            var0 = np.where(obs.ok, r, 0.0).sum(axis=1) / np.maximum(n_ok, 1) ** 2
        predicted, decay = predict(np.where(start, 0.0, x))
        p_prior = decay**2 * var_x + q * dt
        x_prior = np.where(start, np.nan, predicted)
        x_post, v_post = x_prior.copy(), p_prior.copy()
        for j in range(obs.values.shape[1]):
            ok = obs.ok[:, j] & ~start
            x_post, v_post = scalar_update(x_post, v_post, obs.values[:, j], r[:, j], ok)
        begin = start & any_ok
        self.x[var][idx] = np.where(begin, mean0, np.where(start, np.nan, x_post))
        self.var[var][idx] = np.where(begin, var0, np.where(start, np.nan, v_post))
        return x_prior, np.sqrt(p_prior)

    def _learn(
        self,
        var: str,
        idx: npt.NDArray[np.intp],
        obs: Observation,
        dt: FloatArray,
        heater: FloatArray,
        fan: FloatArray,
        t_out: FloatArray,
        q: float,
    ) -> None:
        """Accumulate one step into each slot's block; a block of ``_BLOCK_S`` seconds gives one equation.

        Over a block, ``(mean_end - mean_start) / duration`` equals the time average of the model's rate: the
        sensor noise enters only at the two ends, so blocks carry far more information per equation than
        single steps would. A block restarts whenever its set of usable sensors changes.
        """
        learn = obs.ok if obs.learn is None else obs.learn
        members = obs.values.shape[1]
        block = self.blocks.get(var)
        if block is None or block.members.shape[1] != members:
            block = _Block.empty(self.slots, members, 3 if var == "temp" else 4)
            self.blocks[var] = block
        block.resize(self.slots)
        n = learn.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_now = np.where(learn, obs.values, 0.0).sum(axis=1) / n
            noise_now = np.where(learn, np.maximum(obs.sigma, 1e-6) ** 2, 0.0).sum(axis=1) / n**2
        inputs_ok = np.isfinite(heater + fan + t_out)
        same = (
            (block.members[idx] == learn).all(axis=1)
            & (n > 0)
            & (dt > 0)
            & (dt <= _MAX_DT_S)
            & inputs_ok
            & np.isfinite(block.start[idx])
        )
        mid = 0.5 * (block.last[idx] + mean_now)
        if var == "temp":
            gap = t_out - mid
            x_step = np.column_stack([gap, fan * gap, heater])
        else:
            x_step = np.column_stack([np.ones_like(mid), mid, fan, fan * mid])
        acc_x = block.acc_x[idx] + np.where(same[:, None], x_step * dt[:, None], 0.0)
        acc_dt = block.acc_dt[idx] + np.where(same, dt, 0.0)
        emit = same & (acc_dt >= _BLOCK_S)
        if emit.any():
            sel = np.flatnonzero(emit)
            d = acc_dt[sel]
            target = (mean_now[sel] - block.start[idx][sel]) / d
            x = acc_x[sel] / d[:, None]
            sigma = np.sqrt(block.noise[idx][sel] + noise_now[sel] + q * d) / d
            rls = self.temp_rls if var == "temp" else self.hum_rls
            rls.update(idx[sel], x, target, sigma, np.exp(-d / _FORGET_S))
        restart = ~same | emit
        block.members[idx] = np.where(restart[:, None], learn, block.members[idx])
        block.start[idx] = np.where(restart, np.where(n > 0, mean_now, np.nan), block.start[idx])
        block.noise[idx] = np.where(restart, noise_now, block.noise[idx])
        block.acc_x[idx] = np.where(restart[:, None], 0.0, acc_x)
        block.acc_dt[idx] = np.where(restart, 0.0, acc_dt)
        block.last[idx] = mean_now

    # -- per-twin views -------------------------------------------------------------------------------------

    def state(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = {k: float(v[slot]) for k, v in self.x.items()}
        values.update({k: float(v[slot]) for k, v in self.prev_inputs.items()})
        std = {k: math.sqrt(max(float(v[slot]), 0.0)) for k, v in self.var.items()}
        return values, std

    def params(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = {k: float(v) for k, v in zip(_TEMP_PARAMS, self.temp_committed[slot], strict=True)}
        values.update(_hum_params(self.hum_committed[slot]))
        for key in ("hysteresis", "temp_process_var", "hum_process_var"):
            values[key] = self.prior[key]
        return values, self._candidate_std(slot)

    def candidate_params(self, slot: int) -> dict[str, float]:
        values = {k: float(v) for k, v in zip(_TEMP_PARAMS, self.temp_rls.theta[slot], strict=True)}
        values.update(_hum_params(self.hum_rls.theta[slot]))
        return values

    def _candidate_std(self, slot: int) -> dict[str, float]:
        """Standard deviations of the estimates, per named parameter (delta method for the humidity ones)."""
        std = {k: float(s) for k, s in zip(_TEMP_PARAMS, self.temp_rls.std(slot), strict=True)}
        c, cov = self.hum_rls.theta[slot], self.hum_rls.cov[slot]
        std["hum_rate"], std["fan_hum_rate"] = math.sqrt(max(cov[1, 1], 0.0)), math.sqrt(max(cov[3, 3], 0.0))
        for name, (a, b) in (("hum_ambient", (0, 1)), ("hum_dry", (2, 3))):
            # value = -c[a] / c[b]: gradient (-1 / c[b], c[a] / c[b]^2)
            denom = c[b] if abs(c[b]) > 1e-12 else -1e-12
            grad = np.array([-1.0 / denom, c[a] / denom**2])
            block = cov[np.ix_([a, b], [a, b])]
            std[name] = math.sqrt(max(float(grad @ block @ grad), 0.0))
        return std

    def commit(self, slot: int, *, relaxed: bool = False) -> tuple[ParamChange, ...]:
        """Adopt the settled candidates, clipped to their safe bounds.

        Settled: relative standard deviation below ``_MAX_REL_STD`` (humidity levels: below
        ``_MAX_LEVEL_STD`` %RH). Parameters the data has not pinned down (the fan never ran, so ``fan_loss``
        is unknown) keep their committed value. ``relaxed`` (after model drift: the committed values are
        known to be wrong) doubles both limits.
        """
        old = self.params(slot)[0]
        estimate = self.candidate_params(slot)
        std = self._candidate_std(slot)
        new = dict(old)
        changes: list[ParamChange] = []
        for key, value in estimate.items():
            limit = _MAX_LEVEL_STD if key in ("hum_ambient", "hum_dry") else _MAX_REL_STD * abs(value)
            limit *= 2.0 if relaxed else 1.0
            if not (std[key] < limit and math.isfinite(value)):
                continue
            lo, hi = self._safe_range(key)
            safe = min(max(value, lo), hi)
            new[key] = safe
            clipped = safe != value
            if clipped or not math.isclose(safe, old[key], rel_tol=1e-9):
                changes.append(ParamChange(key, old[key], safe, value, clipped=clipped))
        self.temp_committed[slot] = [new[k] for k in _TEMP_PARAMS]
        self.hum_committed[slot] = _hum_coefficients(new)
        return tuple(changes)

    def _safe_range(self, key: str) -> tuple[float, float]:
        if key in ("hum_ambient", "hum_dry"):
            return 0.0, 100.0
        return self.prior[key] / _SAFE_FACTOR, self.prior[key] * _SAFE_FACTOR

    def reopen(self, slots: IntArray) -> None:
        idx = np.asarray(slots, dtype=np.intp)
        self.temp_rls.reopen(idx, fraction=1.0)
        self.hum_rls.reopen(idx, fraction=1.0)


@dataclass(slots=True)
class _Block:
    """Per-slot accumulation of one learning block (see :meth:`ThermalTracker._learn`)."""

    members: npt.NDArray[np.bool_]
    start: FloatArray
    last: FloatArray
    noise: FloatArray
    acc_x: FloatArray
    acc_dt: FloatArray

    @classmethod
    def empty(cls, slots: int, members: int, dim: int) -> _Block:
        return cls(
            np.zeros((slots, members), bool),
            np.full(slots, np.nan),
            np.full(slots, np.nan),
            np.zeros(slots),
            np.zeros((slots, dim)),
            np.zeros(slots),
        )

    def resize(self, slots: int) -> None:
        extra = slots - self.start.shape[0]
        if extra > 0:
            self.members = np.concatenate([self.members, np.zeros((extra, self.members.shape[1]), bool)])
            self.start = np.r_[self.start, np.full(extra, np.nan)]
            self.last = np.r_[self.last, np.full(extra, np.nan)]
            self.noise = np.r_[self.noise, np.zeros(extra)]
            self.acc_x = np.concatenate([self.acc_x, np.zeros((extra, self.acc_x.shape[1]))])
            self.acc_dt = np.r_[self.acc_dt, np.zeros(extra)]


def _fill(prev: FloatArray, now: FloatArray) -> FloatArray:
    out: FloatArray = np.where(np.isnan(prev), now, prev)
    return out
