"""(twin, field) names -> a dense row with interned ids, the field's rule and its report-by-exception state.

Resolving a name costs two dict lookups per reading; everything after that (range checks, deadband, expected
period) is a numpy gather over rows. A new name is validated and interned once. The number of rows is
bounded (``max_keys``): a client publishing to endless random topics must not grow memory without limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from drsdtp.adapters.base import Interner
from drsdtp.errors import DrsdtpError
from drsdtp.ingest.options import IngestOptions

__all__ = ["BAD_KEY", "KeyTable", "valid_name"]

_log = logging.getLogger(__name__)

BAD_KEY = -1  # row index for names that were refused (invalid, or over max_keys)
MAX_NAME_LEN = 200


def valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LEN and name.isprintable() and name.strip() == name


# (column, dtype, fill for unused rows). Report-by-exception state: last forwarded value/quality/time (NaN
# value = nothing forwarded yet); last_seen_ms: source time of the newest reading (expected period).
_COLUMNS: tuple[tuple[str, type[np.generic], float], ...] = (
    ("twin_id", np.uint32, 0),
    ("field_id", np.uint32, 0),
    ("lo", np.float64, -np.inf),
    ("hi", np.float64, np.inf),
    ("deadband", np.float64, 0.0),
    ("heartbeat_ms", np.float64, np.inf),
    ("expected_ms", np.float64, np.inf),
    ("last_value", np.float64, np.nan),
    ("last_quality", np.int16, -1),
    ("last_sent_ms", np.float64, -np.inf),
    ("last_seen_ms", np.float64, np.nan),
)


class KeyTable:
    """Dense per-key arrays; row ``i`` belongs to ``names[i]``."""

    twin_id: npt.NDArray[np.uint32]
    field_id: npt.NDArray[np.uint32]
    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    deadband: npt.NDArray[np.float64]
    heartbeat_ms: npt.NDArray[np.float64]
    expected_ms: npt.NDArray[np.float64]
    last_value: npt.NDArray[np.float64]
    last_quality: npt.NDArray[np.int16]
    last_sent_ms: npt.NDArray[np.float64]
    last_seen_ms: npt.NDArray[np.float64]

    def __init__(self, options: IngestOptions, interner: Interner, capacity: int = 256) -> None:
        self._options = options
        self._interner = interner
        self._index: dict[str, dict[str, int]] = {}
        self._refused = 0
        self.names: list[tuple[str, str]] = []
        self.has_deadband = False  # any row with a deadband or heartbeat: the deadband pass can be skipped
        self.has_expected = False
        self.has_range = False
        self._twin_ids: dict[str, int] = {}
        self._field_ids: dict[str, int] = {}
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        for name, dtype, fill in _COLUMNS:
            new = np.full(capacity, fill, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[: old.shape[0]] = old
            setattr(self, name, new)

    @property
    def capacity(self) -> int:
        return int(self.twin_id.shape[0])

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, twins: Sequence[str], fields: Sequence[str]) -> npt.NDArray[np.int64]:
        index = self._index
        out: list[int] = []
        append = out.append
        for t, f in zip(twins, fields, strict=True):
            try:
                append(index[t][f])
            except KeyError:
                append(self._add(t, f))
        return np.array(out, dtype=np.int64)

    def _add(self, twin: str, field: str) -> int:
        by_field = self._index.get(twin)
        if by_field is not None and field in by_field:
            return by_field[field]
        if len(self.names) + self._refused >= self._options.max_keys:
            # Not remembered: the refused set must stay bounded too.
            return BAD_KEY
        row = self._new_row(twin, field)
        if row == BAD_KEY:
            self._refused += 1
        self._index.setdefault(twin, {})[field] = row
        return row

    def _new_row(self, twin: str, field: str) -> int:
        if not (isinstance(twin, str) and isinstance(field, str) and valid_name(twin) and valid_name(field)):
            return BAD_KEY
        try:
            tid = self._twin_ids.get(twin)
            if tid is None:
                tid = self._twin_ids[twin] = int(self._interner.intern_twin(twin))
            fid = self._field_ids.get(field)
            if fid is None:
                fid = self._field_ids[field] = int(self._interner.intern_field(field))
        except (DrsdtpError, ValueError) as exc:
            _log.warning("refusing twin %r field %r: %s", twin, field, exc)
            return BAD_KEY
        row = len(self.names)
        if row >= self.capacity:
            self._alloc(self.capacity * 2)
        self.names.append((twin, field))
        self.twin_id[row] = tid
        self.field_id[row] = fid
        rule = self._options.rule_for(twin, field)
        if rule is not None:
            if rule.min is not None:
                self.lo[row] = rule.min
                self.has_range = True
            if rule.max is not None:
                self.hi[row] = rule.max
                self.has_range = True
            if rule.deadband > 0 or rule.heartbeat_s is not None:
                self.deadband[row] = rule.deadband
                self.has_deadband = True
            if rule.heartbeat_s is not None:
                self.heartbeat_ms[row] = rule.heartbeat_s * 1000.0
            if rule.expected_period_s is not None:
                self.expected_ms[row] = rule.expected_period_s * 1000.0
                self.has_expected = True
        return row

    def overdue(self, now_ms: float, factor: float = 2.0) -> list[tuple[str, str, float]]:
        """Fields with an expected period that have been silent for more than ``factor`` periods.

        Returns ``(twin, field, silent_s)``; a field that never reported counts from nothing (not listed).
        """
        n = len(self.names)
        silent = now_ms - self.last_seen_ms[:n]
        late = np.nonzero(silent > factor * self.expected_ms[:n])[0]
        return [(*self.names[i], float(silent[i]) / 1000.0) for i in late]
