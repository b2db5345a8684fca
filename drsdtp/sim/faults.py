"""Sensor faults the simulated plant can inject, with onset and magnitude known for validation.

Each kind, as the receiver sees it (``t`` = plant time, ``k`` = step index, ``onset`` = ``onset_step``):

``stuck``
    The sensor keeps reporting fresh readings (new ``t_s``, new ``seq``) whose value is frozen at the last
    value it sent before the onset (or at ``magnitude`` with ``stuck_at_magnitude``): a flat line, no noise.
``drift``
    A bias growing linearly from the onset: ``+ magnitude * (t - t_onset) / 3600``, i.e. ``magnitude`` is in
    field units per hour. Readings stay fresh and noisy.
``spike``
    ``magnitude`` added with a random sign. At the onset step always; later active steps with probability
    ``rate``. Without ``duration_steps`` a spike lasts one step.
``dropout``
    Each active step the reading is lost with probability ``rate`` (1.0 = total loss): ``value`` is ``None``,
    nothing is sent, and the sensor's ``seq`` still advances, so the receiver sees a sequence gap.
``stale``
    The sensor (or its gateway) stops sampling and keeps re-sending its last pre-onset reading: value, ``t_s``
    and ``seq`` all frozen. A receiver that de-duplicates by ``seq`` sees no new data; the field's age grows.

``duration_steps=None`` means until the end (spike: one step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from drsdtp.errors import InvalidValueError

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "FaultTable"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FaultKind = Literal["stuck", "drift", "spike", "dropout", "stale"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)
_KIND_CODE: Final[dict[str, int]] = {kind: i for i, kind in enumerate(FAULT_KINDS)}
_NEVER: Final[int] = np.iinfo(np.int64).max
_HOUR_S: Final[float] = 3_600.0


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected sensor fault on ``(twin, field)`` starting at plant step ``onset_step``."""

    kind: FaultKind
    twin: str
    field: str
    onset_step: int
    magnitude: float = 0.0
    duration_steps: int | None = None
    rate: float = 1.0
    stuck_at_magnitude: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise InvalidValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.onset_step < 0:
            raise InvalidValueError(f"onset_step must be >= 0, got {self.onset_step}")
        if self.duration_steps is not None and self.duration_steps < 1:
            raise InvalidValueError(f"duration_steps must be >= 1, got {self.duration_steps}")
        if not 0.0 <= self.rate <= 1.0:
            raise InvalidValueError(f"rate must be in [0, 1], got {self.rate}")

    @property
    def end_step(self) -> int | None:
        """First step at which the fault is no longer active (``None``: never ends)."""
        if self.duration_steps is not None:
            return self.onset_step + self.duration_steps
        return self.onset_step + 1 if self.kind == "spike" else None


@dataclass(slots=True)
class FaultTable:
    """Injected faults as parallel arrays, so applying them is vectorised over faults too.

    ``columns`` maps a plant's field names to their column in its frames; every simulated asset keeps one.
    """

    columns: Mapping[str, int]
    faults: list[Fault] = field(default_factory=list)
    kind: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    row: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    col: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    onset: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    end: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    magnitude: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    rate: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    held_value: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    held_t_s: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))
    held_seq: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    captured: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, np.bool_))

    def add(self, fault: Fault, row: int) -> None:
        """Schedule ``fault`` on the plant row ``row`` (its field must be one of ``columns``)."""
        col = self.columns[fault.field]
        self.faults.append(fault)
        end = fault.end_step
        self.kind = np.append(self.kind, _KIND_CODE[fault.kind])
        self.row = np.append(self.row, row)
        self.col = np.append(self.col, col)
        self.onset = np.append(self.onset, fault.onset_step)
        self.end = np.append(self.end, _NEVER if end is None else end)
        self.magnitude = np.append(self.magnitude, fault.magnitude)
        self.rate = np.append(self.rate, fault.rate)
        held = fault.magnitude if fault.stuck_at_magnitude else math.nan
        self.held_value = np.append(self.held_value, held)
        self.held_t_s = np.append(self.held_t_s, math.nan)
        self.held_seq = np.append(self.held_seq, -1)
        self.captured = np.append(self.captured, fault.stuck_at_magnitude)

    def apply(
        self,
        rng: np.random.Generator,
        k: int,
        dt_s: float,
        values: FloatArray,
        sensor_t: FloatArray,
        seq: IntArray,
        last_values: FloatArray,
        last_t_s: FloatArray,
        last_seq: IntArray,
    ) -> None:
        """Apply the faults active at step ``k`` to a frame in place (``last_*``: what was sent last)."""
        n = len(self.faults)
        # Draw for every fault every step, active or not, so the stream does not depend on activity.
        draws = rng.random(n)
        signs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        if n == 0:
            return
        active = (k >= self.onset) & (k < self.end)
        newly = active & ~self.captured
        if newly.any():  # freeze what the sensor last sent, for stuck and stale
            self.held_value[newly] = last_values[self.row[newly], self.col[newly]]
            self.held_t_s[newly] = last_t_s[self.row[newly], self.col[newly]]
            self.held_seq[newly] = last_seq[self.row[newly], self.col[newly]]
            self.captured[newly] = True

        def sel(kind: str) -> npt.NDArray[np.bool_]:
            mask: npt.NDArray[np.bool_] = active & (self.kind == _KIND_CODE[kind])
            return mask

        m = sel("drift")
        elapsed_h = (k - self.onset[m]) * dt_s / _HOUR_S
        np.add.at(values, (self.row[m], self.col[m]), self.magnitude[m] * elapsed_h)
        m = sel("spike") & ((k == self.onset) | (draws < self.rate))
        np.add.at(values, (self.row[m], self.col[m]), signs[m] * self.magnitude[m])
        m = sel("stuck")
        values[self.row[m], self.col[m]] = self.held_value[m]
        m = sel("dropout") & (draws < self.rate)
        values[self.row[m], self.col[m]] = math.nan
        m = sel("stale") & (self.held_seq >= 0)
        values[self.row[m], self.col[m]] = self.held_value[m]
        sensor_t[self.row[m], self.col[m]] = self.held_t_s[m]
        seq[self.row[m], self.col[m]] = self.held_seq[m]
        m = sel("stale") & (self.held_seq < 0)  # stale from the very first step: the sensor never reported
        values[self.row[m], self.col[m]] = math.nan
