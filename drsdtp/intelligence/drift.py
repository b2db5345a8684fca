"""Drift: two-sided CUSUMs on residuals against redundant peers and against the model, and who is to blame.

A residual is normalised by its expected noise, clipped (so one spike cannot raise an alarm on its own) and
compared with a slowly learnt baseline (a constant calibration offset between two sensors is not drift).

Attribution, per field:

* with redundant peers, the field drifts if the *peer* CUSUM alarms and either its own model CUSUM alarms or
  it has the largest model offset of its group (the model is the tie-breaker between two sensors);
* if every sensor of a group disagrees with the model but not with each other, no sensor is blamed: that is
  model drift, reported by :mod:`drsdtp.intelligence.divergence`;
* without peers, a model CUSUM alarm is the only evidence (sensor drift and model drift cannot be told apart
  from one sensor; the divergence monitor says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from drsdtp.intelligence.linefit import FloatArray
from drsdtp.intelligence.spec import HealthConfig

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["AGAINST_MODEL", "AGAINST_NONE", "AGAINST_PEERS", "DriftDetector", "DriftVerdict", "ResidualCusum"]

BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
IntArray: TypeAlias = "npt.NDArray[np.int64]"
AGAINST_NONE, AGAINST_PEERS, AGAINST_MODEL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class DriftVerdict:
    flagged: BoolArray
    severe: BoolArray
    against: npt.NDArray[np.int8]
    peer_alarm: BoolArray
    model_alarm: BoolArray
    peer_offset: FloatArray
    model_offset: FloatArray
    peer_score: FloatArray
    model_score: FloatArray


class ResidualCusum:
    """Two-sided CUSUM per row with a learnt baseline and a smoothed offset estimate."""

    def __init__(
        self,
        config: HealthConfig,
        *,
        baseline_alpha: float = 0.002,
        offset_alpha: float = 0.1,
        track_in_alarm: bool = False,
        h_scale: float = 1.0,
    ) -> None:
        self.k, self.h, self.clip = config.cusum_k, config.cusum_h * h_scale, config.cusum_clip
        self.baseline_alpha, self.offset_alpha = baseline_alpha, offset_alpha
        self.track_in_alarm = track_in_alarm
        self.pos = np.zeros(0)
        self.neg = np.zeros(0)
        self.baseline = np.zeros(0)
        self.offset = np.zeros(0)
        self.updates = np.zeros(0, np.int64)

    def resize(self, rows: int) -> None:
        extra = rows - self.pos.shape[0]
        if extra > 0:
            self.pos, self.neg = np.r_[self.pos, np.zeros(extra)], np.r_[self.neg, np.zeros(extra)]
            self.baseline, self.offset = (
                np.r_[self.baseline, np.zeros(extra)],
                np.r_[self.offset, np.zeros(extra)],
            )
            self.updates = np.r_[self.updates, np.zeros(extra, np.int64)]

    @property
    def alarm(self) -> BoolArray:
        out: BoolArray = np.maximum(self.pos, self.neg) > self.h
        return out

    @property
    def score(self) -> FloatArray:
        """CUSUM statistic in units of the alarm threshold (>= 1 means alarm)."""
        out: FloatArray = np.maximum(self.pos, self.neg) / self.h
        return out

    def update(self, valid: BoolArray, resid: FloatArray, sigma: FloatArray) -> None:
        n = valid.shape[0]
        self.resize(n)
        ok = valid & np.isfinite(resid) & np.isfinite(sigma) & (sigma > 0)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return
        r, s = resid[idx], sigma[idx]
        seen = self.updates[idx]
        # The first residuals set the baseline quickly (a calibration offset), then it follows slowly.
        alpha = np.maximum(1.0 / (seen + 1.0), self.baseline_alpha)
        base = self.baseline[idx]
        z = np.clip((r - base) / s, -self.clip, self.clip)
        pos = np.minimum(np.maximum(0.0, self.pos[idx] + z - self.k), 2.0 * self.h)
        neg = np.minimum(np.maximum(0.0, self.neg[idx] - z - self.k), 2.0 * self.h)
        self.pos[idx], self.neg[idx] = np.where(seen > 20, pos, 0.0), np.where(seen > 20, neg, 0.0)
        quiet = (np.maximum(pos, neg) < 0.5 * self.h) | self.track_in_alarm
        self.baseline[idx] = np.where(quiet | (seen <= 20), base + alpha * (r - base), base)
        self.offset[idx] += self.offset_alpha * ((r - self.baseline[idx]) - self.offset[idx])
        self.updates[idx] = seen + 1

    def reset(self, rows: npt.ArrayLike) -> None:
        """Forget ``rows`` (their reference changed: a model committed new parameters), so an offset learnt
        against the old model is not taken for drift against the new one."""
        idx = np.asarray(rows, dtype=np.intp)
        idx = idx[(idx >= 0) & (idx < self.pos.shape[0])]
        self.pos[idx], self.neg[idx], self.baseline[idx], self.offset[idx] = 0.0, 0.0, 0.0, 0.0
        self.updates[idx] = 0


class DriftDetector:
    """Peer and model CUSUMs for every field, and the attribution rules of the module docstring."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        # Two sensors keep a calibration offset: the peer baseline freezes while alarmed. The model's bias
        # moves with operating conditions until parameters are re-estimated: its baseline always follows.
        self.peer = ResidualCusum(config)
        self.model = ResidualCusum(config, track_in_alarm=True, h_scale=1.5)

    def assess(
        self,
        *,
        peer_valid: BoolArray,
        peer_resid: FloatArray,
        peer_sigma: FloatArray,
        model_valid: BoolArray,
        model_resid: FloatArray,
        model_sigma: FloatArray,
        group: IntArray,
        group_size: IntArray,
        noise: FloatArray,
    ) -> DriftVerdict:
        n = group.shape[0]
        self.peer.update(peer_valid, peer_resid, peer_sigma)
        self.model.update(model_valid, model_resid, model_sigma)
        self.peer.resize(n)
        self.model.resize(n)
        peer_alarm = self.peer.alarm[:n] & (self.peer.updates[:n] > 0)
        model_alarm = self.model.alarm[:n] & (self.model.updates[:n] > 0)
        has_peers = group_size >= 2
        has_model = self.model.updates[:n] > 0

        # Groups of three or more blame the member furthest from the others (the mean of the others is
        # pulled by the drifting one, so every member's peer CUSUM may alarm).
        peer_off = np.abs(self.peer.offset[:n])
        n_groups_p = int(group.max()) + 1 if n and group.max() >= 0 else 0
        peer_max = np.full(n_groups_p, -np.inf)
        in_group = np.flatnonzero(group >= 0)
        np.maximum.at(peer_max, group[in_group], peer_off[in_group])
        furthest = (group >= 0) & (peer_off >= (peer_max[np.maximum(group, 0)] if n_groups_p else peer_off))

        model_off = np.abs(self.model.offset[:n])
        n_groups = int(group.max()) + 1 if n and group.max() >= 0 else 0
        group_max = np.full(n_groups, -np.inf)
        members = np.flatnonzero((group >= 0) & has_model)
        np.maximum.at(group_max, group[members], model_off[members])
        group_has_model = np.isfinite(group_max)
        gidx = np.maximum(group, 0)
        largest = has_model & (group >= 0) & (model_off >= (group_max[gidx] if n_groups else model_off))
        tie_break = np.where(
            (group >= 0) & (group_has_model[gidx] if n_groups else False),
            largest | model_alarm,
            np.where(group_size >= 3, furthest, True),
        )
        flagged = np.where(has_peers, peer_alarm & tie_break, model_alarm)

        offset = np.where(has_peers, self.peer.offset[:n], self.model.offset[:n])
        severe = flagged & (np.abs(offset) > self.config.drift_fail_sigma * noise)
        against = np.where(flagged, np.where(has_peers, AGAINST_PEERS, AGAINST_MODEL), AGAINST_NONE).astype(
            np.int8
        )
        return DriftVerdict(
            flagged=flagged,
            severe=severe,
            against=against,
            peer_alarm=peer_alarm,
            model_alarm=model_alarm,
            peer_offset=self.peer.offset[:n].copy(),
            model_offset=self.model.offset[:n].copy(),
            peer_score=self.peer.score[:n],
            model_score=self.model.score[:n],
        )
