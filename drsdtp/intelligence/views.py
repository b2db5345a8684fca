"""Build the frozen result objects of one field or twin from the arrays of the last pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from drsdtp.intelligence.calibrated import FloatArray, forecast_series
from drsdtp.intelligence.cause import CAUSES, E_KERNEL_DEPENDENTS, E_KERNEL_SEVERAL, explain
from drsdtp.intelligence.detect import TESTS, Findings
from drsdtp.intelligence.detect.events import KIND_OF_TEST, describe
from drsdtp.intelligence.divergence import (
    KIND_MODEL_DRIFT,
    KIND_SENSOR_FAULT,
    KIND_UNRESOLVED,
    Classification,
)
from drsdtp.intelligence.drift import AGAINST_PEERS
from drsdtp.intelligence.forecast import time_to_threshold
from drsdtp.intelligence.health import STATUS_CODES, HealthStatus, Reason
from drsdtp.intelligence.mathutil import normal_coverage
from drsdtp.intelligence.results import (
    AnomalyEvent,
    DivergenceAlert,
    DivergenceKind,
    FieldForecast,
    FieldHealth,
    FieldTraits,
    HorizonForecast,
    MaintenanceEstimate,
    RiskFactor,
    Severity,
    ThresholdCrossing,
    TwinHealth,
)
from drsdtp.intelligence.traits import ANOMALY_KINDS, FRESHNESS_CODES, TREND_CODES, _detail
from drsdtp.intelligence.whatif import first_crossing
from drsdtp.kernels import SimulationKernel, TwinState

if TYPE_CHECKING:
    from drsdtp.intelligence.engine import PassResult, TwinIntelligence

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "build_alert",
    "build_calibrated_forecast",
    "build_field_forecast",
    "build_field_health",
    "build_kernel_forecast",
    "build_maintenance",
    "build_traits",
    "build_twin_health",
]


def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def build_field_health(engine: TwinIntelligence, last: PassResult, row: int) -> FieldHealth:
    h, sc, spec = last.health, last.health.screen, engine.table.specs[row]
    twin, field = engine.table.keys[row]
    reasons = Reason(int(h.reasons[row]))
    value = float(engine.windows.last_v[row])
    unit = spec.unit
    details: list[str] = []
    if Reason.NO_DATA in reasons:
        details.append("no reading yet")
    found = sc.found if sc.model_free[row] else None
    if Reason.STALE in reasons:
        how = " (the sensor keeps re-sending its last reading)" if sc.replaying[row] else ""
        expected = spec.expected_period_s
        if found is not None and found.warm[row]:
            expected = float(found.period_s[row])
        details.append(f"no new reading for {sc.age_s[row]:.0f} s, expected every {expected:.3g} s{how}")
    if Reason.STUCK in reasons:
        if found is not None:
            details.append(f"flat line at {value:g}{unit}: {_found(found, row)}")
        else:
            details.append(
                f"flat line at {value:g}{unit} over the last {engine.config.health.stuck_run} readings"
            )
    if Reason.DRIFT in reasons:
        d = h.drift
        peers = d.against[row] == AGAINST_PEERS
        offset = d.peer_offset[row] if peers else d.model_offset[row]
        details.append(
            f"drift: {offset:+.3g}{unit} against {'its redundant sensors' if peers else 'the model'}"
        )
    if Reason.SPIKE in reasons:
        if found is not None:
            details.append(f"spike: {_found(found, row)}, {last.t_s - float(found.at_s[row]):.0f} s ago")
        else:
            details.append(f"spike: a recent reading is {sc.spike_z[row]:.0f} noise widths off")
    if Reason.ANOMALY in reasons and found is not None:
        kind = KIND_OF_TEST[TESTS[int(found.test[row])]].replace("_", " ")
        since = last.t_s - float(found.start_s[row])
        details.append(f"{kind}: {_found(found, row)}, since {since:.0f} s")
    if Reason.DROPOUT in reasons:
        details.append(f"{sc.missing[row]:.0f} readings missing recently")
    if Reason.LOSS in reasons:
        details.append(f"{sc.loss[row]:.1%} of readings lost over the window")
    if Reason.OUT_OF_RANGE in reasons:
        details.append(f"value {value:g}{unit} outside [{spec.valid_min:g}, {spec.valid_max:g}]")
    names = tuple(r.name for r in Reason if r in reasons and r.name is not None)
    code = int(last.cause.cause[row])
    evidence, cause_detail = _cause_evidence(engine, last, row, names)
    return FieldHealth(
        twin=twin,
        field=field,
        status=STATUS_CODES[int(h.status[row])],
        quality=round(float(h.quality[row]), 4),
        reasons=names,
        details=tuple(details),
        value=_opt(value),
        age_s=_opt(float(sc.age_s[row])),
        noise=_opt(float(sc.noise[row])),
        cause=CAUSES[code],
        evidence=evidence,
        cause_detail=cause_detail,
    )


def _cause_evidence(
    engine: TwinIntelligence, last: PassResult, row: int, reasons: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    """The names and the sentence behind the row's sensor/process/model verdict."""
    code = int(last.cause.evidence[row])
    if code == 0:
        return (), ""
    table, change = engine.table, last.cause.change
    twin, field = table.keys[row]
    group = int(table.group[row])
    rel = engine.relations
    related = sorted({int(d) for d in rel.dst[rel.src == row]})
    own = engine.twin_rows(twin)
    peers = [r for r in own if group >= 0 and int(table.group[r]) == group and r != row]
    kernel, kernel_fields = engine.kernel_of(twin, field)
    several = [r for r in own if int(last.cause.evidence[r]) == E_KERNEL_SEVERAL]
    if code == E_KERNEL_DEPENDENTS:  # the fields predicted from this reading, all off with it
        several = sorted({int(d) for d in rel.dependent[rel.dependency == row]})

    def named(rows: Sequence[int]) -> tuple[str, ...]:
        return tuple(table.keys[r][1] for r in rows)

    return explain(
        code,
        reasons=reasons,
        peers=named(peers),
        peers_moved=named([r for r in peers if change[r]]),
        related=named(related),
        related_moved=named([r for r in related if last.cause.recent[r]]),
        kernel=kernel,
        kernel_fields=kernel_fields,
        kernel_off=named(several),
    )


def _found(found: Findings, row: int) -> str:
    """The detector's explanation: which test, how far in the field's own units, and the score."""
    test = TESTS[int(found.test[row])]
    return f"{describe(test, float(found.magnitude[row]))} (score {float(found.score[row]):.6f})"


def build_twin_health(twin: str, model: str, t_s: float, fields: tuple[FieldHealth, ...]) -> TwinHealth:
    order = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.FAILED: 2}
    worst = max((f.status for f in fields), key=order.__getitem__, default=HealthStatus.HEALTHY)
    quality = min((f.quality for f in fields), default=0.0)
    return TwinHealth(twin=twin, model=model, t_s=t_s, status=worst, quality=quality, fields=fields)


def build_traits(engine: TwinIntelligence, last: PassResult, row: int) -> FieldTraits:
    tr, sc = last.traits, last.health.screen
    twin, field = engine.table.keys[row]
    value = float(engine.windows.last_v[row])
    anomalies = tuple(
        AnomalyEvent(
            twin=twin,
            field=field,
            kind=kind,
            severity=Severity(int(tr.severity[kind][row])),
            t_s=last.t_s,
            value=_opt(value),
            detail=_detail(kind, float(sc.spike_z[row]), float(tr.trend_rate_per_s[row])),
        )
        for kind in ANOMALY_KINDS
        if tr.anomaly[kind][row]
    )
    return FieldTraits(
        twin=twin,
        field=field,
        unit=engine.table.specs[row].unit,
        value=_opt(value),
        stability=_opt(float(tr.stability[row])),
        drift_rate_per_min=_opt(float(tr.drift_rate_per_s[row]) * 60.0),
        trend=TREND_CODES[int(tr.trend[row])],
        trend_rate_per_min=_opt(float(tr.trend_rate_per_s[row]) * 60.0),
        freshness=FRESHNESS_CODES[int(tr.freshness[row])],
        age_s=_opt(float(sc.age_s[row])),
        anomalies=anomalies,
    )


def build_maintenance(engine: TwinIntelligence, last: PassResult, row: int) -> MaintenanceEstimate | None:
    d = last.health.drift
    table = engine.table
    peers = table.group_size[row] >= 2
    current = float(d.peer_offset[row] if peers else d.model_offset[row])
    limit = float(table.calibration_tolerance[row])
    n = len(table)
    offsets = np.where(table.group_size >= 2, d.peer_offset, d.model_offset)[:n]
    remaining, growth = engine.degradation.remaining_s(offsets, table.calibration_tolerance[:n])
    rem, rate = float(remaining[row]), float(growth[row])
    if not math.isfinite(rate):
        return None
    twin, field = table.keys[row]
    unit = table.specs[row].unit
    against = "its redundant sensors" if peers else "the model"
    if math.isfinite(rem):
        detail = (
            f"{field} offset {current:+.3g}{unit} against {against}, growing {rate * 3600:.3g}{unit}/h: "
            f"calibration tolerance {limit:g}{unit} reached in {rem / 3600:.1f} h"
        )
    else:
        detail = f"{field} offset {current:+.3g}{unit} against {against}: no significant degradation"
    return MaintenanceEstimate(
        twin=twin,
        target=field,
        indicator=f"offset vs {'peers' if peers else 'model'}",
        current=current,
        limit=limit,
        rate_per_h=rate * 3600.0,
        remaining_h=rem / 3600.0 if math.isfinite(rem) else None,
        detail=detail,
    )


def _risks(
    engine: TwinIntelligence, last: PassResult, row: int, crossings: Sequence[ThresholdCrossing]
) -> tuple[RiskFactor, ...]:
    hc = engine.config.health
    quality = float(last.health.quality[row])
    out: list[RiskFactor] = []
    for c in crossings:
        if c.eta_min is not None:
            out.append(RiskFactor("limit_approach", round(max(0.0, 1.0 - c.eta_min / 240.0), 3), c.message))
    if quality < hc.degraded_below:
        out.append(RiskFactor("data_quality", round(1.0 - quality, 3), f"quality {quality:.2f}"))
    stability = float(last.traits.stability[row])
    if math.isfinite(stability) and stability < 0.5:
        out.append(RiskFactor("instability", round(1.0 - stability, 3), f"stability {stability:.2f}"))
    loss = float(last.health.screen.loss[row])
    if loss > 0.01:
        out.append(RiskFactor("data_loss", round(min(1.0, loss * 5), 3), f"{loss:.1%} of readings lost"))
    twin, field = engine.table.keys[row]
    for alert in engine.divergence(twin):
        if field in alert.fields:
            out.append(RiskFactor("model_divergence", round(min(1.0, alert.score / 4.0), 3), alert.message))
    return tuple(sorted(out, key=lambda r: -r.score))


def _crossings_linear(
    engine: TwinIntelligence, last: PassResult, row: int, level: float, slope: float, slope_sigma: float
) -> tuple[ThresholdCrossing, ...]:
    spec = engine.table.specs[row]
    out: list[ThresholdCrossing] = []
    low = np.array([spec.low_limit if spec.low_limit is not None else np.nan])
    high = np.array([spec.high_limit if spec.high_limit is not None else np.nan])
    eta_high, eta_low = time_to_threshold(
        np.array([level]),
        np.array([slope]),
        np.array([slope_sigma]),
        low,
        high,
        engine.config.max_time_to_threshold_s,
    )
    for limit, eta, above in ((spec.high_limit, eta_high[0], True), (spec.low_limit, eta_low[0], False)):
        if limit is None:
            continue
        out.append(
            _crossing(spec.name, limit, above, float(eta), spec.unit, engine.config.max_time_to_threshold_s)
        )
    return tuple(out)


def _crossing(
    name: str, limit: float, above: bool, eta_s: float, unit: str, lookahead_s: float
) -> ThresholdCrossing:
    if not math.isfinite(eta_s):
        message = f"{name} not expected to cross {limit:g}{unit} within {lookahead_s / 60:.0f} min"
    elif eta_s == 0.0:
        message = f"{name} is already {'above' if above else 'below'} {limit:g}{unit}"
    else:
        message = f"{name} will reach {limit:g}{unit} in {eta_s / 60:.0f} min"
    return ThresholdCrossing(
        field=name,
        threshold=limit,
        direction="above" if above else "below",
        eta_min=eta_s / 60.0 if math.isfinite(eta_s) else None,
        message=message,
    )


def _refused(engine: TwinIntelligence, last: PassResult, row: int, method: str) -> FieldForecast | None:
    thr = engine.config.health.quality_threshold
    quality = float(last.health.quality[row])
    if quality >= thr:
        return None
    twin, field = engine.table.keys[row]
    reasons = Reason(int(last.health.reasons[row]))
    why = ", ".join(r.name for r in Reason if r in reasons and r.name is not None) or "low quality"
    return FieldForecast(
        twin=twin,
        field=field,
        t_s=last.t_s,
        method=method,
        value_now=None,
        quality=round(quality, 4),
        refused=f"quality {quality:.2f} below {thr} ({why})",
        horizons=(),
        crossings=(),
        risks=(),
        maintenance=None,
    )


def build_field_forecast(
    engine: TwinIntelligence, last: PassResult, row: int, horizons_min: Sequence[float]
) -> FieldForecast:
    refused = _refused(engine, last, row, "linear")
    if refused is not None:
        return refused
    fit = last.fit_short
    twin, field = engine.table.keys[row]
    quality = float(last.health.quality[row])
    tol = float(engine.table.forecast_tolerance[row])
    z = engine.config.interval_z
    level = float(fit.at(last.t_s)[row])
    slope = float(fit.slope[row])
    slope_sigma = float(fit.slope_sigma()[row])
    horizons: list[HorizonForecast] = []
    for h in horizons_min:
        t = last.t_s + 60.0 * h
        mean = level + slope * 60.0 * h
        sd = float(fit.predictive_sigma(t)[row])
        conf = quality * float(normal_coverage(np.array([tol]), np.array([sd]))[0])
        horizons.append(
            HorizonForecast(
                float(h),
                _opt(mean),
                _opt(mean - z * sd),
                _opt(mean + z * sd),
                round(conf if math.isfinite(mean) else 0.0, 4),
            )
        )
    crossings = _crossings_linear(engine, last, row, level, slope, slope_sigma)
    return FieldForecast(
        twin=twin,
        field=field,
        t_s=last.t_s,
        method="linear.trend",
        value_now=_opt(level),
        quality=round(quality, 4),
        refused=None,
        horizons=tuple(horizons),
        crossings=crossings,
        risks=_risks(engine, last, row, crossings),
        maintenance=build_maintenance(engine, last, row),
    )


def _learned_baseline(engine: TwinIntelligence, row: int) -> Callable[[FloatArray], FloatArray] | None:
    """The model-free detector's seasonal baseline of ``row`` as a function of time, where one is enabled."""
    seasonal = engine.detector.seasonal
    if row >= seasonal.fields or not seasonal.active[row]:
        return None

    def at(times: FloatArray) -> FloatArray:
        return seasonal.baseline(np.full(times.size, row, np.intp), times)

    return at


def build_calibrated_forecast(
    engine: TwinIntelligence, last: PassResult, row: int, horizons_min: Sequence[float]
) -> FieldForecast:
    """The field's own history through :mod:`drsdtp.intelligence.calibrated`: the best of last value,
    level, damped trend and daily seasonal baseline per horizon, with a backtest-calibrated 90 % interval
    and time to the declared limits (``eta_min``: the forecast reaches it; the message also says the
    earliest the interval does)."""
    refused = _refused(engine, last, row, "calibrated")
    if refused is not None:
        return refused
    twin, field = engine.table.keys[row]
    spec = engine.table.specs[row]
    t, v = engine.windows.history(row)
    fc = forecast_series(
        t,
        v,
        last.t_s,
        tuple(60.0 * float(h) for h in horizons_min),
        low_limit=math.nan if spec.low_limit is None else spec.low_limit,
        high_limit=math.nan if spec.high_limit is None else spec.high_limit,
        baseline=_learned_baseline(engine, row),
    )
    if fc is None:
        return build_field_forecast(engine, last, row, horizons_min)
    quality = float(last.health.quality[row])
    tol = float(engine.table.forecast_tolerance[row])
    horizons = tuple(
        HorizonForecast(
            float(h),
            _opt(fc.mean[k]),
            _opt(fc.lower[k]),
            _opt(fc.upper[k]),
            round(quality * float(np.mean(fc.errors[k] <= tol)) if fc.errors[k].size else 0.0, 4),
        )
        for k, h in enumerate(horizons_min)
    )
    crossings: list[ThresholdCrossing] = []
    for c in fc.crossings:
        eta = math.inf if c.eta_s is None else c.eta_s
        base = _crossing(spec.name, c.limit, c.direction == "above", eta, spec.unit, fc.horizons_s[-1])
        if c.earliest_s is not None and c.earliest_s != c.eta_s:
            base = ThresholdCrossing(
                base.field,
                base.threshold,
                base.direction,
                base.eta_min,
                f"{base.message} (possibly in {c.earliest_s / 60:.0f} min, at the interval's edge)",
            )
        crossings.append(base)
    seasonal = " (daily seasonal baseline learned)" if fc.seasonal else ""
    return FieldForecast(
        twin=twin,
        field=field,
        t_s=last.t_s,
        method=f"calibrated.{'+'.join(dict.fromkeys(fc.method))}{seasonal}",
        value_now=_opt(fc.level),
        quality=round(quality, 4),
        refused=None,
        horizons=horizons,
        crossings=tuple(crossings),
        risks=_risks(engine, last, row, tuple(crossings)),
        maintenance=build_maintenance(engine, last, row),
    )


def build_kernel_forecast(
    engine: TwinIntelligence,
    last: PassResult,
    row: int,
    kernel: SimulationKernel,
    state: TwinState,
    variable: str,
    horizons_min: Sequence[float],
) -> FieldForecast:
    refused = _refused(engine, last, row, kernel.name)
    if refused is not None:
        return refused
    from drsdtp.kernels import Scenario

    twin, field = engine.table.keys[row]
    spec = engine.table.specs[row]
    quality = float(last.health.quality[row])
    horizon_s = max(60.0 * max(horizons_min), engine.config.max_time_to_threshold_s)
    pred = kernel.simulate(state, Scenario(step_s=60.0), horizon_s)
    offsets, mean = pred.offsets_s, pred.mean[variable]
    lower, upper = pred.lower[variable], pred.upper[variable]
    # The kernel predicts the true value; the field reads it plus its own noise.
    noise = float(last.health.screen.noise[row])
    z = engine.config.interval_z
    horizons: list[HorizonForecast] = []
    for h in horizons_min:
        m = float(np.interp(60.0 * h, offsets, mean))
        half = float(np.interp(60.0 * h, offsets, upper - lower)) / 2.0
        sd = math.hypot(half / z, noise)
        conf = quality * float(normal_coverage(np.array([spec.forecast_tolerance]), np.array([sd]))[0])
        horizons.append(
            HorizonForecast(float(h), _opt(m), _opt(m - z * sd), _opt(m + z * sd), round(conf, 4))
        )
    crossings: list[ThresholdCrossing] = []
    for limit, above in ((spec.high_limit, True), (spec.low_limit, False)):
        if limit is None:
            continue
        eta = first_crossing(offsets, mean, limit, above)
        crossings.append(
            _crossing(field, limit, above, math.nan if eta is None else eta, spec.unit, horizon_s)
        )
    return FieldForecast(
        twin=twin,
        field=field,
        t_s=last.t_s,
        method=kernel.name,
        value_now=_opt(float(mean[0])),
        quality=round(quality, 4),
        refused=None,
        horizons=tuple(horizons),
        crossings=tuple(crossings),
        risks=_risks(engine, last, row, crossings),
        maintenance=build_maintenance(engine, last, row),
    )


def build_alert(
    twin: str,
    kernel: str,
    variable: str,
    fields: tuple[str, ...],
    verdict: Classification,
    slot: int,
    t_s: float,
) -> DivergenceAlert:
    kind_code = int(verdict.kind[slot])
    suspects = tuple(f for f, s in zip(fields, verdict.suspects[slot], strict=False) if s)
    kind = {
        KIND_MODEL_DRIFT: DivergenceKind.MODEL_DRIFT,
        KIND_SENSOR_FAULT: DivergenceKind.SENSOR_FAULT,
        KIND_UNRESOLVED: DivergenceKind.UNRESOLVED,
    }[kind_code]
    if kind is DivergenceKind.MODEL_DRIFT:
        message = f"model drift: every sensor of {variable} ({', '.join(fields)}) disagrees with {kernel}"
    elif kind is DivergenceKind.SENSOR_FAULT:
        message = f"sensor fault: {', '.join(suspects) or 'a sensor'} disagrees with its peers and the model"
    else:
        message = f"{fields[0]} disagrees with {kernel}; without a redundant sensor, sensor or model drift"
    return DivergenceAlert(
        twin=twin,
        kernel=kernel,
        variable=variable,
        fields=fields,
        kind=kind,
        severity=Severity(int(verdict.severity[slot])),
        score=round(float(verdict.score[slot]), 3),
        recalibrate=kind is not DivergenceKind.SENSOR_FAULT,
        suspects=suspects,
        message=message,
        t_s=t_s,
    )
