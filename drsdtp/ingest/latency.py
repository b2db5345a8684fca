"""End-to-end latency samples (source timestamp -> applied) in a bounded ring buffer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["LatencyWindow"]


class LatencyWindow:
    """The last ``capacity`` latency samples in milliseconds; percentiles over that window.

    Adding a batch is one numpy copy, so recording every reading costs nothing measurable even at
    hundreds of thousands of readings per second.
    """

    def __init__(self, capacity: int = 8192) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._buf: npt.NDArray[np.float64] | None = None  # allocated by the first sample: idle holds no numpy
        self._next = 0
        self._filled = 0
        self.total = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return self._filled

    def add(self, samples_ms: npt.ArrayLike) -> None:
        arr = np.asarray(samples_ms, dtype=np.float64).ravel()
        n = int(arr.shape[0])
        if n == 0:
            return
        self.total += n
        cap = self._capacity
        if self._buf is None:
            self._buf = np.zeros(cap, dtype=np.float64)
        if n >= cap:
            self._buf[:] = arr[-cap:]
            self._next = 0
            self._filled = cap
            return
        end = self._next + n
        if end <= cap:
            self._buf[self._next : end] = arr
        else:
            first = cap - self._next
            self._buf[self._next :] = arr[:first]
            self._buf[: n - first] = arr[first:]
        self._next = end % cap
        self._filled = min(cap, self._filled + n)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the window in ms; NaN while empty."""
        if not self._filled or self._buf is None:
            return float("nan")
        return float(np.percentile(self._buf[: self._filled], q))

    def percentiles(self, qs: Sequence[float] = (50.0, 90.0, 99.0)) -> dict[float, float]:
        if not self._filled or self._buf is None:
            return {q: float("nan") for q in qs}
        values = np.percentile(self._buf[: self._filled], list(qs))
        return {q: float(v) for q, v in zip(qs, values, strict=True)}

    def clear(self) -> None:
        self._next = self._filled = 0
