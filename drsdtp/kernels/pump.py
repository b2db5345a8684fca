"""Centrifugal pump kernel (``pump.affinity``): the affinity laws with a fitted pump curve.

With ``r = speed / rated_speed_rpm``, the valve opening ``v`` (0..1; 1 when no valve field is bound) and the
flow ``Q`` (m3/h), per twin::

    flow  = system_flow * v * r                      (the system curve: flow follows speed)
    head  = shutoff_head * r^2 + c * Q^2             (the pump curve at rated speed, scaled: head ~ speed^2)
    power = shutoff_power * r^3 + p1 * r^2 * Q        (power ~ speed^3 at a homologous point)

with ``c = (rated_head - shutoff_head) / rated_flow^2`` and ``p1 = (rated_power - shutoff_power) /
rated_flow``, so the declared parameters are the datasheet's points: head and power at shut-off and at the
rated flow, both at rated speed. Each relation is linear in its coefficients, so the tracker fits them per
twin online (:class:`~drsdtp.kernels.regression.LinearEstimate`): the fitted curve. Predictions use the
committed curve; their residuals feed the divergence monitor (impeller wear shows as head below the curve,
a clogged suction as flow below the system curve, a failing motor as power above it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias

from drsdtp.errors import InvalidValueError
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

__all__ = ["PUMP_DEFAULT_PARAMS", "AffinityPumpKernel", "PumpTracker"]

PUMP_DEFAULT_PARAMS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "rated_speed_rpm": 2900.0,
        "rated_flow_m3h": 100.0,
        "shutoff_head_m": 40.0,
        "rated_head_m": 32.0,
        "shutoff_power_kw": 5.0,
        "rated_power_kw": 11.0,
        "system_flow_m3h": 100.0,  # flow at rated speed through the plant's pipes (the system curve)
        "prior_rel_std": 0.1,  # how well the declared curve is known before the twin's own data
        "model_rel_std": 0.01,  # what the model leaves out (turbulence, valve hunting), relative
    }
)
_POSITIVE: Final = ("rated_speed_rpm", "rated_flow_m3h", "prior_rel_std", "model_rel_std")
_FORGET_S: Final[float] = 6 * 3600.0
IndexArray: TypeAlias = "npt.NDArray[np.intp]"


def _coefficients(p: Mapping[str, float]) -> dict[str, FloatArray]:
    qr = p["rated_flow_m3h"]
    return {
        "flow": np.array([p["system_flow_m3h"]]),
        "head": np.array([p["shutoff_head_m"], (p["rated_head_m"] - p["shutoff_head_m"]) / qr**2]),
        "power": np.array([p["shutoff_power_kw"], (p["rated_power_kw"] - p["shutoff_power_kw"]) / qr]),
    }


def _named(p: Mapping[str, float], coef: Mapping[str, FloatArray]) -> dict[str, float]:
    """Coefficient vectors back to the declared (datasheet) names."""
    qr = p["rated_flow_m3h"]
    h, w = coef["head"], coef["power"]
    return {
        "system_flow_m3h": float(coef["flow"][0]),
        "shutoff_head_m": float(h[0]),
        "rated_head_m": float(h[0] + h[1] * qr**2),
        "shutoff_power_kw": float(w[0]),
        "rated_power_kw": float(w[0] + w[1] * qr),
    }


def _regressors(var: str, r: FloatArray, q: FloatArray) -> FloatArray:
    if var == "flow":
        return r[:, None]
    if var == "head":
        return np.column_stack([r**2, q**2])
    return np.column_stack([r**3, r**2 * q])


def _input_var(
    var: str, coef: FloatArray, r: FloatArray, q: FloatArray, var_r: FloatArray, var_q: FloatArray
) -> FloatArray:
    """Variance the noise of the measured inputs (speed, flow) adds to a prediction (first order)."""
    if var == "flow":
        out: FloatArray = coef[:, 0] ** 2 * var_r
        return out
    if var == "head":
        d_r, d_q = 2 * coef[:, 0] * r, 2 * coef[:, 1] * q
    else:
        d_r, d_q = 3 * coef[:, 0] * r**2 + 2 * coef[:, 1] * r * q, coef[:, 1] * r**2
    result: FloatArray = d_r**2 * var_r + d_q**2 * var_q
    return result


class AffinityPumpKernel:
    """Flow, head and power of a centrifugal pump from its speed (and flow), by the affinity laws."""

    name = "pump.affinity"

    @property
    def variables(self) -> tuple[str, ...]:
        return ("flow", "head", "power")

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("speed", "valve")

    @property
    def safe_params(self) -> tuple[str, ...]:
        return ("system_flow_m3h", "shutoff_head_m", "rated_head_m", "shutoff_power_kw", "rated_power_kw")

    @property
    def default_params(self) -> Mapping[str, float]:
        return PUMP_DEFAULT_PARAMS

    @property
    def actuators(self) -> Mapping[str, tuple[float, float]]:
        rated = PUMP_DEFAULT_PARAMS["rated_speed_rpm"]
        return MappingProxyType({"speed": (0.5 * rated, rated)})

    def tracker(self, prior: Mapping[str, float]) -> PumpTracker:
        return PumpTracker(merge_params(PUMP_DEFAULT_PARAMS, prior, positive=_POSITIVE))

    def simulate(self, state: TwinState, scenario: Scenario, horizon_s: float) -> Prediction:
        """The operating point at the scenario's speed (the pump answers within seconds: a flat line)."""
        if not (horizon_s > 0 and math.isfinite(horizon_s)):
            raise InvalidValueError(f"horizon_s must be positive, got {horizon_s}")
        known = {k: v for k, v in state.params.items() if k in PUMP_DEFAULT_PARAMS}
        p = merge_params(PUMP_DEFAULT_PARAMS, known)
        for key, scale in scenario.param_scale.items():
            if key not in p:
                raise InvalidValueError(f"scenario {scenario.name!r}: unknown parameter {key!r}")
            p[key] *= scale
        speed = scenario.inputs.get("speed", state.values.get("speed", math.nan))
        valve = scenario.inputs.get("valve", state.values.get("valve", 1.0))
        if not math.isfinite(speed):
            raise InvalidValueError(f"twin {state.twin!r}: no speed to start from")
        coef = _coefficients(p)
        r = np.array([speed / p["rated_speed_rpm"]])
        q = r * (1.0 if not math.isfinite(valve) else valve) * coef["flow"][0]
        point = {
            "speed": float(speed),
            "valve": float(valve),
            "flow": float(q[0]),
            "head": float((_regressors("head", r, q) @ coef["head"])[0]),
            "power": float((_regressors("power", r, q) @ coef["power"])[0]),
        }
        steps = max(1, math.ceil(horizon_s / scenario.step_s))
        offsets = np.minimum(np.arange(steps + 1) * scenario.step_s, horizon_s)
        rel = p["model_rel_std"] + p["prior_rel_std"] * (0.0 if state.params else 1.0)
        mean = {k: np.full(offsets.shape, v) for k, v in point.items()}
        spread = {k: 1.96 * abs(v) * rel * (k in self.variables) for k, v in point.items()}
        return Prediction(
            kernel=self.name,
            t0_s=state.t_s,
            offsets_s=offsets,
            mean=MappingProxyType(mean),
            lower=MappingProxyType({k: m - spread[k] for k, m in mean.items()}),
            upper=MappingProxyType({k: m + spread[k] for k, m in mean.items()}),
        )


class PumpTracker:
    """The fitted curves of every twin of a pump model (one slot per twin)."""

    def __init__(self, params: Mapping[str, float]) -> None:
        self.p = dict(params)
        rel = self.p["prior_rel_std"]
        self.estimates: dict[str, LinearEstimate] = {}
        for var, coef in _coefficients(self.p).items():
            # A coefficient declared as zero still gets a scale from its neighbours.
            floor = 1e-3 * max(float(np.abs(coef).max()), 1e-9)
            # Every coefficient known to 3 % before a curve is committed: a fixed valve leaves the pump curve
            # and the system curve entangled (flow ~ speed), and a curve fitted on that ridge would be wrong
            # at the next operating point.
            self.estimates[var] = LinearEstimate(
                coef, rel * np.abs(coef) + floor, max_rel_std=0.03, per_param=True
            )
        self.slots = 0
        self.speed = np.zeros(0)
        self.valve = np.zeros(0)
        self.last: dict[str, FloatArray] = {v: np.zeros(0) for v in ("flow", "head", "power")}
        self.learned_t: dict[str, FloatArray] = {v: np.zeros(0) for v in ("flow", "head", "power")}

    def resize(self, slots: int) -> None:
        extra = slots - self.slots
        if extra <= 0:
            return
        for est in self.estimates.values():
            est.resize(slots)
        self.speed = np.r_[self.speed, np.full(extra, np.nan)]
        self.valve = np.r_[self.valve, np.ones(extra)]
        for d in (self.last, self.learned_t):
            for k in d:
                d[k] = np.r_[d[k], np.full(extra, np.nan)]
        self.slots = slots

    def step(self, slots: IntArray, dt_s: FloatArray, observations: Mapping[str, Observation]) -> TrackerStep:
        idx = np.asarray(slots, dtype=np.intp)
        self.resize(int(idx.max()) + 1 if idx.size else 0)
        rated = self.p["rated_speed_rpm"]
        speed_obs = observations.get("speed")
        var_r = np.zeros(idx.size)
        if speed_obs is not None:
            speed, ok, sigma, _ = speed_obs.fused()
            self.speed[idx] = np.where(ok, speed, self.speed[idx])
            var_r = np.where(ok, sigma / rated, 0.0) ** 2
        valve_obs = observations.get("valve")
        if valve_obs is not None:
            valve, ok, _, _ = valve_obs.fused()
            self.valve[idx] = np.where(ok, valve, self.valve[idx])
        r = self.speed[idx] / rated
        rv = r * self.valve[idx]  # the system curve: flow at this speed through this valve opening
        fused = {v: observations[v].fused() for v in self.last if v in observations}
        prior: dict[str, FloatArray] = {}
        prior_std: dict[str, FloatArray] = {}
        flow_mean, flow_var = self.estimates["flow"].predict(idx, _regressors("flow", rv, rv))
        q = flow_mean
        var_q = np.zeros(idx.size)
        if "flow" in fused:
            value, ok, sigma, _ = fused["flow"]
            q = np.where(ok, value, flow_mean)
            var_q = np.where(ok, np.nan_to_num(sigma) ** 2, flow_var)
        rel = self.p["model_rel_std"]
        for var, est in self.estimates.items():
            x = _regressors(var, rv if var == "flow" else r, q)
            mean, var_theta = est.predict(idx, x)
            input_var = _input_var(var, est.committed[idx], r, q, var_r * self.valve[idx] ** 2, var_q)
            total = var_theta + input_var + (rel * mean) ** 2
            prior[var], prior_std[var] = mean, np.sqrt(total)
            if var in fused:
                self._learn(var, idx, x, fused[var], observations[var], np.sqrt(total - var_theta))
        return TrackerStep(prior=MappingProxyType(prior), prior_std=MappingProxyType(prior_std))

    def _learn(
        self,
        var: str,
        idx: IndexArray,
        x: FloatArray,
        fused: tuple[FloatArray, npt.NDArray[np.bool_], FloatArray, FloatArray],
        obs: Observation,
        input_sigma: FloatArray,
    ) -> None:
        value, ok, sigma, t = fused
        learn = ok if obs.learn is None else ok & obs.learn.any(axis=1)
        seen = self.learned_t[var][idx]
        new = learn & ~(t <= seen)  # NaN times (unknown) count as new
        self.last[var][idx] = np.where(ok, value, self.last[var][idx])
        if not new.any():
            return
        gap = np.where(np.isnan(seen) | np.isnan(t), 0.0, t - seen)
        forget = np.exp(-np.maximum(gap, 0.0) / _FORGET_S)
        noise = np.sqrt(np.nan_to_num(sigma) ** 2 + input_sigma**2) + 1e-9
        sel = np.flatnonzero(new)
        self.estimates[var].learn(idx[sel], x[sel], value[sel], noise[sel], forget[sel])
        self.learned_t[var][idx[sel]] = np.where(np.isnan(t[sel]), 0.0, t[sel])

    # -- per-twin views -------------------------------------------------------------------------------------

    def state(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = {"speed": float(self.speed[slot]), "valve": float(self.valve[slot])}
        values.update({k: float(v[slot]) for k, v in self.last.items()})
        return values, {}

    def _coef(self, slot: int, *, candidate: bool) -> dict[str, FloatArray]:
        return {
            v: (e.candidate(slot) if candidate else e.committed[slot].copy())
            for v, e in self.estimates.items()
        }

    def params(self, slot: int) -> tuple[dict[str, float], dict[str, float]]:
        values = dict(self.p)
        values.update(_named(self.p, self._coef(slot, candidate=False)))
        qr = self.p["rated_flow_m3h"]
        std = {k: self.p["prior_rel_std"] * abs(v) for k, v in values.items()}
        for var, names in (("flow", ("system_flow_m3h",)), ("head", ("shutoff_head_m",))):
            std[names[0]] = float(self.estimates[var].committed_std(slot)[0])
        std["shutoff_power_kw"] = float(self.estimates["power"].committed_std(slot)[0])
        head_std, power_std = (
            self.estimates["head"].committed_std(slot),
            self.estimates["power"].committed_std(slot),
        )
        std["rated_head_m"] = float(math.hypot(head_std[0], head_std[1] * qr**2))
        std["rated_power_kw"] = float(math.hypot(power_std[0], power_std[1] * qr))
        return values, std

    def candidate_params(self, slot: int) -> dict[str, float]:
        return _named(self.p, self._coef(slot, candidate=True))

    def commit(self, slot: int, *, relaxed: bool = False) -> tuple[ParamChange, ...]:
        """Adopt each relation's fitted curve once every coefficient of it is known within 3 %."""
        before = _named(self.p, self._coef(slot, candidate=False))
        estimate = self.candidate_params(slot)
        clipped: set[str] = set()
        for var, est in self.estimates.items():
            if est.settled(slot, relaxed=relaxed):
                _, _, clip = est.commit(slot)
                if clip.any():
                    clipped |= set(_VAR_PARAMS[var])
        after = _named(self.p, self._coef(slot, candidate=False))
        return tuple(
            ParamChange(k, before[k], after[k], estimate[k], clipped=k in clipped)
            for k in after
            if not math.isclose(before[k], after[k], rel_tol=1e-9)
        )

    def reopen(self, slots: IntArray) -> None:
        for est in self.estimates.values():
            est.reopen(np.asarray(slots, np.intp))


_VAR_PARAMS: Final = {
    "flow": ("system_flow_m3h",),
    "head": ("shutoff_head_m", "rated_head_m"),
    "power": ("shutoff_power_kw", "rated_power_kw"),
}
