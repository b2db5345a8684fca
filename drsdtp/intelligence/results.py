"""Plain frozen result types returned by the read API; each has a JSON-serialisable ``to_dict()``."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from drsdtp.intelligence.serialize import Serializable
from drsdtp.intelligence.status import HealthStatus

__all__ = [
    "AnomalyEvent",
    "Correction",
    "DivergenceAlert",
    "DivergenceKind",
    "FieldForecast",
    "FieldHealth",
    "FieldTraits",
    "Freshness",
    "HealthStatus",
    "HorizonForecast",
    "MaintenanceEstimate",
    "ParamCorrection",
    "Recommendation",
    "RecommendationKind",
    "RiskFactor",
    "Severity",
    "ThresholdCrossing",
    "Trend",
    "TwinHealth",
    "Urgency",
    "WhatIfResult",
]


class Trend(enum.Enum):
    RISING = "RISING"
    FALLING = "FALLING"
    STABLE = "STABLE"
    UNKNOWN = "UNKNOWN"


class Freshness(enum.Enum):
    FRESH = "FRESH"
    AGING = "AGING"
    STALE = "STALE"
    NO_DATA = "NO_DATA"


class Severity(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Urgency(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    IMMEDIATE = 4


class DivergenceKind(enum.Enum):
    MODEL_DRIFT = "MODEL_DRIFT"
    SENSOR_FAULT = "SENSOR_FAULT"
    UNRESOLVED = "UNRESOLVED"


class RecommendationKind(enum.Enum):
    RECALIBRATE = "RECALIBRATE"
    INSPECT = "INSPECT"
    CONTINUE_MONITORING = "CONTINUE_MONITORING"
    ACTUATE = "ACTUATE"


@dataclass(frozen=True, slots=True)
class FieldHealth(Serializable):
    """Health of one field. ``quality`` is what gets replicated as ``<field>.q``.

    ``cause``: for a field with a finding, ``sensor`` (this sensor is wrong), ``process`` (the quantity
    really changed), ``model`` (the kernel is wrong) or empty (undecided, or nothing found); ``evidence``
    names what decided it (the peer or related fields, or the kernel), and ``cause_detail`` says what they
    showed (:mod:`drsdtp.intelligence.cause`)."""

    twin: str
    field: str
    status: HealthStatus
    quality: float
    reasons: tuple[str, ...]
    details: tuple[str, ...]
    value: float | None
    age_s: float | None
    noise: float | None
    cause: str = ""
    evidence: tuple[str, ...] = ()
    cause_detail: str = ""


@dataclass(frozen=True, slots=True)
class TwinHealth(Serializable):
    """Worst status and lowest quality over the twin's fields, with every field's health."""

    twin: str
    model: str
    t_s: float
    status: HealthStatus
    quality: float
    fields: tuple[FieldHealth, ...]


@dataclass(frozen=True, slots=True)
class AnomalyEvent(Serializable):
    """One anomaly onset. From the model-free detector, ``test`` names the test that fired (``spike``,
    ``spike_back``, ``shift``, ``trend``, ``drift``, ``variance``, ``flat``, ``gap``), ``magnitude`` is its
    statistic in the field's own units (noise widths; readings for ``flat``; periods for ``gap``) and
    ``score`` the calibrated anomaly score in [0, 1] (clean data exceeds ``s`` about ``1 - s`` of the time);
    ``t_s`` is then the time of the reading it is about. From the pass-based checks these stay empty."""

    twin: str
    field: str
    kind: str
    severity: Severity
    t_s: float
    value: float | None
    detail: str
    test: str = ""
    magnitude: float | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class FieldTraits(Serializable):
    """Behaviour of one field: stability 0..1, drift rate over the long window, trend over the short one."""

    twin: str
    field: str
    unit: str
    value: float | None
    stability: float | None
    drift_rate_per_min: float | None
    trend: Trend
    trend_rate_per_min: float | None
    freshness: Freshness
    age_s: float | None
    anomalies: tuple[AnomalyEvent, ...]


@dataclass(frozen=True, slots=True)
class HorizonForecast(Serializable):
    horizon_min: float
    value: float | None
    lower: float | None
    upper: float | None
    confidence: float


@dataclass(frozen=True, slots=True)
class ThresholdCrossing(Serializable):
    """``eta_min`` is None when the threshold is not reached within the look-ahead."""

    field: str
    threshold: float
    direction: str
    eta_min: float | None
    message: str


@dataclass(frozen=True, slots=True)
class RiskFactor(Serializable):
    name: str
    score: float
    detail: str


@dataclass(frozen=True, slots=True)
class MaintenanceEstimate(Serializable):
    """Remaining useful life of a calibration (or component) from the trend of a degradation indicator."""

    twin: str
    target: str
    indicator: str
    current: float
    limit: float
    rate_per_h: float
    remaining_h: float | None
    detail: str


@dataclass(frozen=True, slots=True)
class FieldForecast(Serializable):
    """Forecast of one field; ``refused`` says why no numbers are given (quality below the threshold)."""

    twin: str
    field: str
    t_s: float
    method: str
    value_now: float | None
    quality: float
    refused: str | None
    horizons: tuple[HorizonForecast, ...]
    crossings: tuple[ThresholdCrossing, ...]
    risks: tuple[RiskFactor, ...]
    maintenance: MaintenanceEstimate | None


@dataclass(frozen=True, slots=True)
class DivergenceAlert(Serializable):
    """Kernel predictions and readings of ``variable`` disagree systematically."""

    twin: str
    kernel: str
    variable: str
    fields: tuple[str, ...]
    kind: DivergenceKind
    severity: Severity
    score: float
    recalibrate: bool
    suspects: tuple[str, ...]
    message: str
    t_s: float


@dataclass(frozen=True, slots=True)
class ParamCorrection(Serializable):
    name: str
    old: float
    new: float
    estimate: float
    clipped: bool


@dataclass(frozen=True, slots=True)
class Correction(Serializable):
    """One logged change of a twin's committed model parameters."""

    twin: str
    kernel: str
    t_s: float
    reason: str
    changes: tuple[ParamCorrection, ...]


@dataclass(frozen=True, slots=True)
class Recommendation(Serializable):
    twin: str
    kind: RecommendationKind
    target: str
    confidence: float
    urgency: Urgency
    reason: str
    action: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class WhatIfResult(Serializable):
    """A scenario run on a forked twin; the live twin is untouched."""

    twin: str
    scenario: str
    description: str
    kernel: str
    t0_s: float
    offsets_min: tuple[float, ...]
    trajectories: Mapping[str, tuple[float, ...]]
    lower: Mapping[str, tuple[float, ...]]
    upper: Mapping[str, tuple[float, ...]]
    crossings: tuple[ThresholdCrossing, ...]
    refused: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
