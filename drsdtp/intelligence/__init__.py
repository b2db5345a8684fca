"""Twin intelligence: sensor health, traits, forecasts, divergence, what-if and recommendations.

Arrays in, arrays out on the hot path (:class:`TwinIntelligence` ``ingest`` / ``evaluate``), plain frozen
dataclasses with ``to_dict()`` on the read API. Quality convention: the quality (0..1) of field ``f`` is
replicated as the LWW field ``f.q`` next to the value; below ``HealthConfig.quality_threshold`` (0.5) a value
must not be used to decide.
"""

from typing import TYPE_CHECKING

from drsdtp.lazy import exports

if TYPE_CHECKING:
    from drsdtp.intelligence.divergence import DivergenceConfig
    from drsdtp.intelligence.engine import PassResult, Reading, TwinIntelligence
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
    from drsdtp.intelligence.status import HealthStatus, Reason
    from drsdtp.intelligence.windows import FieldWindows

# Each name is imported from its submodule on first read: importing one submodule stays cheap.
__getattr__ = exports(
    __name__,
    {
        "AnomalyEvent": "results",
        "Correction": "results",
        "DivergenceAlert": "results",
        "DivergenceConfig": "divergence",
        "DivergenceKind": "results",
        "FieldForecast": "results",
        "FieldHealth": "results",
        "FieldSpec": "spec",
        "FieldTraits": "results",
        "FieldWindows": "windows",
        "Freshness": "results",
        "HealthConfig": "spec",
        "HealthStatus": "status",
        "HorizonForecast": "results",
        "IntelligenceConfig": "spec",
        "MaintenanceEstimate": "results",
        "ModelSpec": "spec",
        "ParamCorrection": "results",
        "PassResult": "engine",
        "Reading": "engine",
        "Reason": "status",
        "Recommendation": "results",
        "RecommendationKind": "results",
        "RiskFactor": "results",
        "Severity": "results",
        "ThresholdCrossing": "results",
        "Trend": "results",
        "TwinHealth": "results",
        "TwinIntelligence": "engine",
        "Urgency": "results",
        "WhatIfResult": "results",
    },
)

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
