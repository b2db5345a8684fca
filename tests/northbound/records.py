"""History journal records for the sink's tests: batch ``n`` holds readings ``n*rows .. n*rows+rows-1``."""

from __future__ import annotations

import numpy as np

from drsdtp.history import journal

T0_MS = 1_700_000_000_000


def record(number: int, rows: int = 10, twins: int = 3, offset: int = 0) -> bytes:
    first = (number - 1) * rows + offset
    idx = np.arange(rows)
    return journal.encode(
        number,
        [f"t{k}" for k in range(twins)],
        ["v"],
        idx % twins,
        np.zeros(rows, np.int64),
        (T0_MS + first + idx).astype(np.int64),
        (first + idx).astype(np.float64),
    )
