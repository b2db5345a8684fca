"""Row registry: which (twin, field) lives in which window row, and its static settings as arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from drsdtp.errors import UnknownTwinError
from drsdtp.intelligence.linefit import FloatArray
from drsdtp.intelligence.spec import FieldSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["FieldTable"]

IntArray: TypeAlias = "npt.NDArray[np.int64]"
BoolArray: TypeAlias = "npt.NDArray[np.bool_]"


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else v


@dataclass(slots=True)
class FieldTable:
    """Grows as twins are added; every per-field setting is a numpy array indexed by row."""

    keys: list[tuple[str, str]] = field(default_factory=list)
    specs: list[FieldSpec] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)
    period: FloatArray = field(default_factory=lambda: np.zeros(0))
    resolution: FloatArray = field(default_factory=lambda: np.zeros(0))
    noise_floor: FloatArray = field(default_factory=lambda: np.zeros(0))
    analog: BoolArray = field(default_factory=lambda: np.zeros(0, bool))
    valid_min: FloatArray = field(default_factory=lambda: np.zeros(0))
    valid_max: FloatArray = field(default_factory=lambda: np.zeros(0))
    low_limit: FloatArray = field(default_factory=lambda: np.zeros(0))
    high_limit: FloatArray = field(default_factory=lambda: np.zeros(0))
    max_rate_per_s: FloatArray = field(default_factory=lambda: np.zeros(0))
    deadband_per_s: FloatArray = field(default_factory=lambda: np.zeros(0))
    forecast_tolerance: FloatArray = field(default_factory=lambda: np.zeros(0))
    stability_scale: FloatArray = field(default_factory=lambda: np.zeros(0))
    calibration_tolerance: FloatArray = field(default_factory=lambda: np.zeros(0))
    group: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    group_size: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    _groups: dict[tuple[str, str], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, twin: str, field_name: str) -> int:
        try:
            return self.index[(twin, field_name)]
        except KeyError:
            raise UnknownTwinError(f"{twin}/{field_name}") from None

    def add_twin(self, twin: str, specs: tuple[FieldSpec, ...]) -> list[int]:
        """Register the fields of ``twin``; returns their rows."""
        start = len(self.keys)
        rows = list(range(start, start + len(specs)))
        group_ids: list[int] = []
        for row, spec in zip(rows, specs, strict=True):
            self.keys.append((twin, spec.name))
            self.specs.append(spec)
            self.index[(twin, spec.name)] = row
            if spec.redundancy_group is None:
                group_ids.append(-1)
            else:
                group_ids.append(self._groups.setdefault((twin, spec.redundancy_group), len(self._groups)))

        def col(values: list[float]) -> FloatArray:
            return np.asarray(values, dtype=np.float64)

        self.period = np.r_[self.period, col([s.expected_period_s for s in specs])]
        self.resolution = np.r_[self.resolution, col([s.resolution for s in specs])]
        self.noise_floor = np.r_[self.noise_floor, col([s.noise_floor for s in specs])]
        self.analog = np.r_[self.analog, np.asarray([s.analog for s in specs], bool)]
        self.valid_min = np.r_[self.valid_min, col([s.valid_min for s in specs])]
        self.valid_max = np.r_[self.valid_max, col([s.valid_max for s in specs])]
        self.low_limit = np.r_[self.low_limit, col([_nan_if_none(s.low_limit) for s in specs])]
        self.high_limit = np.r_[self.high_limit, col([_nan_if_none(s.high_limit) for s in specs])]
        self.max_rate_per_s = np.r_[self.max_rate_per_s, col([s.max_rate_per_min / 60.0 for s in specs])]
        self.deadband_per_s = np.r_[
            self.deadband_per_s, col([s.trend_deadband_per_min / 60.0 for s in specs])
        ]
        self.forecast_tolerance = np.r_[self.forecast_tolerance, col([s.forecast_tolerance for s in specs])]
        self.stability_scale = np.r_[self.stability_scale, col([s.stability_scale for s in specs])]
        self.calibration_tolerance = np.r_[
            self.calibration_tolerance, col([s.calibration_tolerance for s in specs])
        ]
        self.group = np.r_[self.group, np.asarray(group_ids, np.int64)]
        counts = np.bincount(self.group[self.group >= 0], minlength=max(len(self._groups), 1))
        self.group_size = np.where(self.group >= 0, counts[np.maximum(self.group, 0)], 0)
        return rows
