"""(twin, field) names -> a dense row with interned ids, the field's rule and its report-by-exception state.

Resolving a name costs two dict lookups per reading; everything after that (range checks, deadband, expected
period) is a numpy gather over rows. A new name is validated, checked against the node's caps on what the
store may hold (:class:`drsdtp.ingest.caps.KeyCaps`: ``limits.max_twins`` / ``limits.max_fields``, counted
from the store, so they hold across restarts) and interned once.

``ingest.max_keys`` bounds this table only, i.e. one adapter's memory for deadband and period state: when
a new key finds it full, the table is cleared before the next batch and rebuilt from the readings that
follow (counted in ``resets`` and logged). It refuses nothing: a key the store holds is never refused, and
the caps decide what may be created. A fleet larger than ``max_keys`` still works, with deadbands that
forget their last value at each reset (over-reporting, never under-reporting).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drsdtp.adapters.base import Interner
from drsdtp.errors import DrsdtpError
from drsdtp.ingest.caps import TWIN_CAP, KeyCaps
from drsdtp.ingest.options import IngestOptions
from drsdtp.ingest.ratelog import RateLimitedLog

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["BAD_KEY", "FIELD_CAPPED", "TWIN_CAPPED", "KeyTable", "valid_name"]

_log = logging.getLogger(__name__)

# Row "indices" of refused keys (all negative).
BAD_KEY = -1  # not a valid name (remembered: it will never become one)
TWIN_CAPPED = -2  # would create a twin past limits.max_twins (not remembered: asked again next time)
FIELD_CAPPED = -3  # would create a field past limits.max_fields
MAX_NAME_LEN = 200


def valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LEN and name.isprintable() and name.strip() == name


# (column, dtype, fill for unused rows). Report-by-exception state: last forwarded value/quality/time (NaN
# value = nothing forwarded yet); last_seen_ms: source time of the newest reading (expected period).
_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("twin_id", "u4", 0),
    ("field_id", "u4", 0),
    ("lo", "f8", -math.inf),
    ("hi", "f8", math.inf),
    ("deadband", "f8", 0.0),
    ("heartbeat_ms", "f8", math.inf),
    ("expected_ms", "f8", math.inf),
    ("last_value", "f8", math.nan),
    ("last_quality", "i2", -1),
    ("last_sent_ms", "f8", -math.inf),
    ("last_seen_ms", "f8", math.nan),
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

    def __init__(
        self, options: IngestOptions, interner: Interner, caps: KeyCaps | None = None, capacity: int = 256
    ) -> None:
        self._options = options
        self._interner = interner
        self._caps = caps
        self._capacity0 = capacity
        self._index: dict[str, dict[str, int]] = {}
        self._entries = 0  # keys in _index, refused names included
        self._full = False  # a key was added past max_keys: clear before the next batch
        self.resets = 0
        self._reset_log = RateLimitedLog(_log, "key table")
        self.names: list[tuple[str, str]] = []
        self.has_deadband = False  # any row with a deadband or heartbeat: the deadband pass can be skipped
        self.has_expected = False
        self.has_range = False
        self._twin_ids: dict[str, int] = {}
        self._field_ids: dict[str, int] = {}
        self._capacity = 0  # columns allocated at the first batch: an idle adapter holds no arrays (numpy)

    def _alloc(self, capacity: int) -> None:
        self._capacity = capacity
        for name, dtype, fill in _COLUMNS:
            new = np.full(capacity, fill, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[: old.shape[0]] = old
            setattr(self, name, new)

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, twins: Sequence[str], fields: Sequence[str]) -> npt.NDArray[np.int64]:
        """Row per reading (negative: refused, see BAD_KEY). Rows are valid until the next call."""
        if self._full:
            self._reset()
        if not self._capacity:
            self._alloc(self._capacity0)
        index = self._index
        out: list[int] = []
        append = out.append
        for t, f in zip(twins, fields, strict=True):
            try:
                append(index[t][f])
            except KeyError:
                append(self._add(t, f))
        return np.array(out, dtype=np.int64)

    def _reset(self) -> None:
        self.resets += 1
        self._reset_log.warn(
            "full",
            "%d keys passed ingest.max_keys = %d: cleared (deadband state restarts; raise max_keys)",
            self._entries,
            self._options.max_keys,
        )
        self._index.clear()
        self._twin_ids.clear()
        self._field_ids.clear()
        self.names = []
        self._entries = 0
        self._full = False
        self.has_deadband = self.has_expected = self.has_range = False
        for name, _, _ in _COLUMNS:
            delattr(self, name)
        self._capacity = 0

    def _add(self, twin: str, field: str) -> int:
        by_field = self._index.get(twin)
        if by_field is not None and field in by_field:
            return by_field[field]
        row = self._new_row(twin, field)
        if row in (TWIN_CAPPED, FIELD_CAPPED):
            return row  # not remembered: the cap may allow it later (a bigger cap after a restart)
        self._index.setdefault(twin, {})[field] = row
        self._entries += 1
        if self._entries > self._options.max_keys:
            self._full = True  # grow for the rest of this batch (its rows must stay valid), clear after
        return row

    def _new_row(self, twin: str, field: str) -> int:
        if not (isinstance(twin, str) and isinstance(field, str) and valid_name(twin) and valid_name(field)):
            return BAD_KEY
        if self._caps is not None:
            refused = self._caps.admit(twin, field)
            if refused is not None:
                return TWIN_CAPPED if refused == TWIN_CAP else FIELD_CAPPED
        try:
            tid = self._twin_ids.get(twin)
            if tid is None:
                tid = self._twin_ids[twin] = int(self._interner.intern_twin(twin))
            fid = self._field_ids.get(field)
            if fid is None:
                fid = self._field_ids[field] = int(self._interner.intern_field(field))
        except (DrsdtpError, ValueError) as exc:
            _log.warning("refusing twin %r field %r: %s", twin, field, exc)
            if self._caps is not None:
                self._caps.release(twin, field)
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
        if not n:
            return []  # nothing seen yet (perhaps no columns either)
        silent = now_ms - self.last_seen_ms[:n]
        late = np.nonzero(silent > factor * self.expected_ms[:n])[0]
        return [(*self.names[i], float(silent[i]) / 1000.0) for i in late]
