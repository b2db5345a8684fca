"""Divergence between kernel predictions and readings, per (twin, field, kernel), and what it means.

Every pass the tracker predicts each bound state variable before seeing the new readings; the residual of
each field bound to it is normalised by its expected spread. Per field an EWMA of that z-score (systematic
bias) and a two-sided CUSUM (persistent small shifts) run without any learnt baseline: a model that is
consistently off must show.

Per (twin, variable), with the fields bound to it:

* health blames a field for drift against its peers           -> ``SENSOR_FAULT``, naming it;
* fields disagree with the model while agreeing with each other (all biased the same way, at least half
  the alarm level, one of them alarmed)                       -> ``MODEL_DRIFT`` (recalibrate the model);
* one field alarms while another agrees with the model, or they lean opposite ways -> ``SENSOR_FAULT``,
  naming the alarmed ones (in between: not classified yet);
* a single field is bound and disagrees                       -> ``UNRESOLVED`` (sensor or model: no peer).

The engine reacts to a new ``MODEL_DRIFT`` by re-opening the twin's parameter estimation and committing the
re-estimated (safe, bounded) parameters after ``settle_s``; every commit is logged as a correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from drsdtp.errors import ConfigError
from drsdtp.intelligence.linefit import FloatArray

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "KIND_MODEL_DRIFT",
    "KIND_NONE",
    "KIND_SENSOR_FAULT",
    "KIND_UNRESOLVED",
    "Classification",
    "DivergenceConfig",
    "DivergenceMonitor",
]

BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
IntArray: TypeAlias = "npt.NDArray[np.int64]"
KIND_NONE, KIND_MODEL_DRIFT, KIND_SENSOR_FAULT, KIND_UNRESOLVED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class DivergenceConfig:
    ewma_alpha: float = 0.05
    ewma_limit: float = 1.0
    cusum_k: float = 0.5
    cusum_h: float = 15.0
    warmup: int = 30
    settle_s: float = 1200.0
    commit_interval_s: float = 1800.0
    min_relative_change: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ConfigError("divergence.ewma_alpha", "must be in (0, 1]")
        for key in ("ewma_limit", "cusum_h", "settle_s", "commit_interval_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"divergence.{key}", "must be positive")


@dataclass(frozen=True, slots=True)
class Classification:
    """Per (twin, variable) pair: ``kind`` code, severity 1..4, score and the suspect members."""

    kind: npt.NDArray[np.int8]
    severity: npt.NDArray[np.int8]
    score: FloatArray
    suspects: BoolArray


class DivergenceMonitor:
    """EWMA and CUSUM of normalised model residuals, one entry per field row."""

    def __init__(self, config: DivergenceConfig) -> None:
        self.config = config
        self.ewma = np.zeros(0)
        self.pos = np.zeros(0)
        self.neg = np.zeros(0)
        self.updates = np.zeros(0, np.int64)

    def resize(self, rows: int) -> None:
        extra = rows - self.ewma.shape[0]
        if extra > 0:
            self.ewma, self.pos, self.neg = (
                np.r_[a, np.zeros(extra)] for a in (self.ewma, self.pos, self.neg)
            )
            self.updates = np.r_[self.updates, np.zeros(extra, np.int64)]

    def update(self, valid: BoolArray, resid: FloatArray, sigma: FloatArray) -> None:
        cfg = self.config
        self.resize(valid.shape[0])
        ok = valid & np.isfinite(resid) & np.isfinite(sigma) & (sigma > 0)
        idx = np.flatnonzero(ok)
        z = np.clip(resid[idx] / sigma[idx], -8.0, 8.0)
        self.ewma[idx] += cfg.ewma_alpha * (z - self.ewma[idx])
        self.pos[idx] = np.minimum(np.maximum(0.0, self.pos[idx] + z - cfg.cusum_k), 2 * cfg.cusum_h)
        self.neg[idx] = np.minimum(np.maximum(0.0, self.neg[idx] - z - cfg.cusum_k), 2 * cfg.cusum_h)
        self.updates[idx] += 1

    def reset(self, rows: npt.ArrayLike) -> None:
        """Forget the residual history of ``rows`` (after their model changed)."""
        idx = np.asarray(rows, dtype=np.intp)
        idx = idx[idx >= 0]
        self.ewma[idx], self.pos[idx], self.neg[idx] = 0.0, 0.0, 0.0
        self.updates[idx] = 0

    def row_alarm(self, rows: int) -> tuple[BoolArray, FloatArray, FloatArray]:
        """Per row: alarm, sign of the bias, and score (``|ewma| / limit``, or CUSUM / h if larger)."""
        cfg = self.config
        self.resize(rows)
        ewma, pos, neg = self.ewma[:rows], self.pos[:rows], self.neg[:rows]
        warm = self.updates[:rows] >= cfg.warmup
        cusum = np.maximum(pos, neg) / cfg.cusum_h
        score = np.maximum(np.abs(ewma) / cfg.ewma_limit, cusum)
        alarm = warm & (score >= 1.0)
        sign = np.where(np.abs(ewma) > 0, np.sign(ewma), np.sign(pos - neg))
        return alarm, sign, np.where(warm, score, 0.0)

    def classify(self, members: IntArray, blamed: BoolArray) -> Classification:
        """Classify pairs given their member rows ``(pairs, m)`` (``-1`` = none) and health's drift blame."""
        rows = int(members.max()) + 1 if members.size else 0
        alarm, sign, score = self.row_alarm(max(rows, self.ewma.shape[0]))
        exists = members >= 0
        safe = np.where(exists, members, 0)
        valid = exists & (self.updates[safe] >= self.config.warmup)
        alarmed = valid & alarm[safe]
        blame = valid & blamed[np.minimum(safe, blamed.shape[0] - 1)] if blamed.size else np.zeros_like(valid)
        n_valid = valid.sum(axis=1)
        n_alarm = alarmed.sum(axis=1)
        member_score = np.where(valid, score[safe], 0.0)
        leaning = valid & (member_score >= 0.5)
        member_sign = np.where(valid, sign[safe], 0.0)
        together = (leaning.sum(axis=1) == n_valid) & (np.abs(member_sign.sum(axis=1)) == n_valid)
        # Disagreement among the sensors themselves: one alarmed while another sits near zero or leans the
        # other way. Anything in between is not classified yet (more samples will tell).
        alarmed_sign = np.where(alarmed, member_sign, 0.0).sum(axis=1, keepdims=True)
        opposite = valid & (member_sign * alarmed_sign < 0) & (member_score >= 0.25)
        quiet = valid & (member_score < 0.25)
        contradict = (n_alarm > 0) & (opposite.any(axis=1) | quiet.any(axis=1))
        any_blame = blame.any(axis=1)
        model_or_sensor = np.where(
            together, KIND_MODEL_DRIFT, np.where(contradict, KIND_SENSOR_FAULT, KIND_NONE)
        )
        kind = np.where(
            any_blame & (n_valid >= 2),
            KIND_SENSOR_FAULT,
            np.where(n_alarm == 0, KIND_NONE, np.where(n_valid == 1, KIND_UNRESOLVED, model_or_sensor)),
        ).astype(np.int8)
        pair_score = np.max(np.where(alarmed | blame, score[safe], 0.0), axis=1, initial=0.0)
        severity = np.where(pair_score >= 4, 4, np.where(pair_score >= 2, 3, 2)).astype(np.int8)
        suspects = np.where((kind == KIND_SENSOR_FAULT)[:, None], alarmed | blame, False)
        suspects |= np.where((kind == KIND_UNRESOLVED)[:, None], alarmed, False)
        return Classification(kind=kind, severity=severity, score=pair_score, suspects=suspects)
