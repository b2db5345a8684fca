"""Recommendations from health, divergence, corrections and model-checked actuator moves.

Each one has a confidence (0..1), a reason a person can read, and an urgency:

* ``RECALIBRATE``: a sensor drifts against its peers or the model; or the model drifts from every sensor.
* ``INSPECT``: a sensor is stuck, stale, losing data, out of range or spiky; or an estimated parameter left
  its safe range (the asset itself changed: a heater that no longer heats).
* ``ACTUATE``: the model forecasts a limit crossing and an actuator move, simulated on a forked twin,
  avoids it. Only offered when the data behind the forecast is above the quality threshold.
* ``CONTINUE_MONITORING``: nothing to do; confidence is the twin's lowest field quality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drsdtp.intelligence.results import (
    Correction,
    DivergenceAlert,
    DivergenceKind,
    FieldHealth,
    MaintenanceEstimate,
    Recommendation,
    RecommendationKind,
    Severity,
    ThresholdCrossing,
    TwinHealth,
    Urgency,
)

__all__ = ["ActionOutcome", "recommend"]

_INSPECT_REASONS: Mapping[str, tuple[str, Urgency]] = {
    "STUCK": ("reports a flat line", Urgency.HIGH),
    "OUT_OF_RANGE": ("reports impossible values", Urgency.HIGH),
    "STALE": ("sends no new readings", Urgency.HIGH),
    "DROPOUT": ("is losing readings", Urgency.MEDIUM),
    "LOSS": ("loses a share of its readings over time", Urgency.LOW),
    "SPIKE": ("produced an outlier", Urgency.LOW),
    "NO_DATA": ("has never reported", Urgency.MEDIUM),
}
_CALIBRATION_LOOKAHEAD_H = 72.0  # a calibration running out later than this is not worth a recommendation
_SEVERITY_URGENCY = {
    Severity.LOW: Urgency.LOW,
    Severity.MEDIUM: Urgency.MEDIUM,
    Severity.HIGH: Urgency.HIGH,
    Severity.CRITICAL: Urgency.IMMEDIATE,
}


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """A candidate actuator move and the crossings the model predicts with it (on a forked twin)."""

    action: Mapping[str, float]
    label: str
    crossings: tuple[ThresholdCrossing, ...]
    confidence: float


def _reached(crossings: Sequence[ThresholdCrossing]) -> list[ThresholdCrossing]:
    return [c for c in crossings if c.eta_min is not None]


def _field_recommendations(
    twin: str, fh: FieldHealth, maintenance: MaintenanceEstimate | None
) -> list[Recommendation]:
    out: list[Recommendation] = []
    if "DRIFT" in fh.reasons:
        urgency = Urgency.HIGH if fh.quality < 0.3 else Urgency.MEDIUM
        detail = next((d for d in fh.details if "drift" in d.lower()), "drifts against its references")
        if maintenance is not None and maintenance.remaining_h is not None:
            detail += f"; out of tolerance in {maintenance.remaining_h:.1f} h"
            if maintenance.remaining_h < 1.0:
                urgency = Urgency.HIGH
        out.append(
            Recommendation(
                twin,
                RecommendationKind.RECALIBRATE,
                fh.field,
                round(1.0 - fh.quality, 3),
                urgency,
                f"{fh.field}: {detail}",
            )
        )
    for reason in fh.reasons:
        if reason in _INSPECT_REASONS:
            text, urgency = _INSPECT_REASONS[reason]
            out.append(
                Recommendation(
                    twin,
                    RecommendationKind.INSPECT,
                    fh.field,
                    round(1.0 - fh.quality, 3),
                    urgency,
                    f"{fh.field} {text}",
                )
            )
    if (
        not fh.reasons
        and maintenance is not None
        and maintenance.remaining_h is not None
        and (maintenance.remaining_h < _CALIBRATION_LOOKAHEAD_H)
    ):
        urgency = Urgency.MEDIUM if maintenance.remaining_h < 24 else Urgency.LOW
        out.append(
            Recommendation(twin, RecommendationKind.RECALIBRATE, fh.field, 0.5, urgency, maintenance.detail)
        )
    return out


def recommend(
    health: TwinHealth,
    alerts: Sequence[DivergenceAlert],
    corrections: Sequence[Correction],
    maintenance: Mapping[str, MaintenanceEstimate],
    baseline: Sequence[ThresholdCrossing],
    actions: Sequence[ActionOutcome],
) -> tuple[Recommendation, ...]:
    twin = health.twin
    out: list[Recommendation] = []
    for fh in health.fields:
        out.extend(_field_recommendations(twin, fh, maintenance.get(fh.field)))
    for alert in alerts:
        urgency = _SEVERITY_URGENCY[alert.severity]
        confidence = round(min(1.0, alert.score / 4.0), 3)
        if alert.kind is DivergenceKind.MODEL_DRIFT:
            out.append(
                Recommendation(
                    twin,
                    RecommendationKind.RECALIBRATE,
                    f"model:{alert.kernel}",
                    confidence,
                    urgency,
                    alert.message,
                )
            )
        elif alert.kind is DivergenceKind.UNRESOLVED:
            out.append(
                Recommendation(
                    twin,
                    RecommendationKind.INSPECT,
                    ",".join(alert.fields),
                    confidence,
                    urgency,
                    alert.message,
                )
            )
        else:
            known = {r.target for r in out}
            for suspect in alert.suspects:
                if suspect not in known:
                    out.append(
                        Recommendation(
                            twin, RecommendationKind.INSPECT, suspect, confidence, urgency, alert.message
                        )
                    )
    if corrections:
        latest = corrections[-1]
        clipped = [c for c in latest.changes if c.clipped]
        if clipped:
            names = ", ".join(f"{c.name} (estimated {c.estimate:.3g}, kept {c.new:.3g})" for c in clipped)
            out.append(
                Recommendation(
                    twin,
                    RecommendationKind.INSPECT,
                    f"asset:{latest.kernel}",
                    0.8,
                    Urgency.HIGH,
                    f"parameters outside their safe range: {names}; the asset may have changed",
                )
            )

    reached = _reached(baseline)
    if reached and actions:
        soonest = min(reached, key=lambda c: c.eta_min if c.eta_min is not None else float("inf"))
        eta = soonest.eta_min if soonest.eta_min is not None else 0.0
        for outcome in actions:
            if not _reached(outcome.crossings):
                urgency = Urgency.IMMEDIATE if eta < 10 else Urgency.HIGH if eta < 30 else Urgency.MEDIUM
                out.append(
                    Recommendation(
                        twin,
                        RecommendationKind.ACTUATE,
                        ",".join(outcome.action),
                        round(outcome.confidence, 3),
                        urgency,
                        f"{soonest.message}; the model says '{outcome.label}' avoids it",
                        dict(outcome.action),
                    )
                )
                break
    if not out:
        out.append(
            Recommendation(
                twin,
                RecommendationKind.CONTINUE_MONITORING,
                twin,
                round(health.quality, 3),
                Urgency.LOW,
                "all fields healthy and the model agrees with the readings",
            )
        )
    return tuple(sorted(out, key=lambda r: (-int(r.urgency), -r.confidence)))
