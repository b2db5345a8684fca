"""A field's health status and the reasons behind it: plain enums, apart from the monitor
(:mod:`.health`) that computes them, so the results and the API can name them without importing the engine
(issue 13: idle RSS)."""

from __future__ import annotations

import enum

__all__ = ["STATUS_CODES", "HealthStatus", "Reason"]


class Reason(enum.IntFlag):
    """Why a field is not healthy (a bit set per field)."""

    STALE = 1
    STUCK = 2
    DRIFT = 4
    SPIKE = 8
    DROPOUT = 16
    LOSS = 32
    OUT_OF_RANGE = 64
    NO_DATA = 128
    ANOMALY = 256


class HealthStatus(enum.Enum):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"


STATUS_CODES: tuple[HealthStatus, ...] = (HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.FAILED)
