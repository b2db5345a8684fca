"""Twin intelligence: sensor health, traits, forecasts, divergence, what-if and recommendations.

Arrays in, arrays out on the hot path (:class:`TwinIntelligence` ``ingest`` / ``evaluate``), plain frozen
dataclasses with ``to_dict()`` on the read API. Quality convention: the quality (0..1) of field ``f`` is
replicated as the LWW field ``f.q`` next to the value; below ``HealthConfig.quality_threshold`` (0.5) a value
must not be used to decide.
"""

from drsdtp.intelligence.divergence import DivergenceConfig
from drsdtp.intelligence.engine import PassResult, Reading, TwinIntelligence
from drsdtp.intelligence.health import HealthStatus, Reason
from drsdtp.intelligence.results import (
    AnomalyEvent,
    Correction,
    DivergenceAlert,
    DivergenceKind,
    FieldForecast,
    FieldHealth,
    FieldTraits,
    Freshness,
    HorizonForecast,
    MaintenanceEstimate,
    ParamCorrection,
    Recommendation,
    RecommendationKind,
    RiskFactor,
    Severity,
    ThresholdCrossing,
    Trend,
    TwinHealth,
    Urgency,
    WhatIfResult,
)
from drsdtp.intelligence.spec import FieldSpec, HealthConfig, IntelligenceConfig, ModelSpec
from drsdtp.intelligence.windows import FieldWindows

__all__ = [
    "AnomalyEvent",
    "Correction",
    "DivergenceAlert",
    "DivergenceConfig",
    "DivergenceKind",
    "FieldForecast",
    "FieldHealth",
    "FieldSpec",
    "FieldTraits",
    "FieldWindows",
    "Freshness",
    "HealthConfig",
    "HealthStatus",
    "HorizonForecast",
    "IntelligenceConfig",
    "MaintenanceEstimate",
    "ModelSpec",
    "ParamCorrection",
    "PassResult",
    "Reading",
    "Reason",
    "Recommendation",
    "RecommendationKind",
    "RiskFactor",
    "Severity",
    "ThresholdCrossing",
    "Trend",
    "TwinHealth",
    "TwinIntelligence",
    "Urgency",
    "WhatIfResult",
]
