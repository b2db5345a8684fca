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

from dataclasses import dataclass
from typing import Final, Literal, get_args

from drsdtp.errors import InvalidValueError

__all__ = ["FAULT_KINDS", "Fault", "FaultKind"]

FaultKind = Literal["stuck", "drift", "spike", "dropout", "stale"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)


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
