"""Bounded rolling windows for many fields: one ring buffer row per field, plus running sums.

Memory is fixed by ``capacity`` (8 bytes per sample slot: float32 value and float32 time offset), whatever
the uptime. Appends are vectorised over a batch of fields. Two windows are summarised incrementally as they
slide: the whole ring (``long``) and the newest ``short`` samples; a health or forecast pass then reads
O(fields) sums and the ``recent`` newest samples instead of every sample. Times are stored as offsets from a
shared reference that is moved forward now and then (``rebase``), which also recomputes the sums exactly,
so rounding never accumulates.

A reading is new only if its ``seq`` (or, without one, its time) is beyond the last accepted one; anything
else is counted as a duplicate (a replaying gateway shows up here). Sequence gaps feed the loss ratio.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar

from drsdtp.errors import InvalidValueError
from drsdtp.intelligence.linefit import FloatArray, LineFit, RunningSums

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = ["FieldWindows", "RecentBlock"]

IntArray: TypeAlias = "npt.NDArray[np.int64]"
IndexArray: TypeAlias = "npt.NDArray[np.intp]"
G = TypeVar("G", bound="np.generic")
_REBASE_SPAN_S: Final[float] = 65_536.0  # float32 offsets then resolve better than 4 ms


class RecentBlock:
    """The ``k`` newest samples of every field, oldest first, NaN-padded: arrays of shape ``(fields, k)``."""

    __slots__ = ("t_s", "values")

    def __init__(self, t_s: FloatArray, values: FloatArray) -> None:
        self.t_s = t_s
        self.values = values


class FieldWindows:
    """Ring buffers of ``capacity`` samples for a growable number of fields."""

    def __init__(self, capacity: int, short: int, recent: int, fields: int = 0) -> None:
        if not (2 <= short <= capacity and 2 <= recent <= capacity):
            raise InvalidValueError("need 2 <= short, recent <= capacity")
        self.capacity, self.short, self.recent = capacity, short, recent
        self.fields = 0
        self._rows = 0
        self.t_ref = math.nan
        self._values = np.zeros((0, capacity), np.float32)
        self._times = np.zeros((0, capacity), np.float32)
        self._seq_ring = np.zeros((0, recent), np.int64)
        self.count = np.zeros(0, np.int64)
        self.last_t = np.zeros(0)
        self.last_v = np.zeros(0)
        self.last_seq = np.zeros(0, np.int64)
        self.dups_since_new = np.zeros(0, np.int64)
        self.duplicates = np.zeros(0, np.int64)
        self.rejected = np.zeros(0, np.int64)
        self.loss_missing = np.zeros(0)
        self.loss_expected = np.zeros(0)
        self.v_ref = np.zeros(0)
        self.long = RunningSums.zeros(0)
        self.short_sums = RunningSums.zeros(0)
        self.resize(fields)

    # -- shape ----------------------------------------------------------------------------------------------

    def resize(self, fields: int) -> None:
        """Make room for ``fields`` rows (existing rows keep their data; storage grows by a quarter)."""
        if fields <= self._rows:
            self.fields = max(self.fields, fields)
            return
        rows = max(fields, self._rows + self._rows // 4, 16)

        def grow(arr: npt.NDArray[G], fill: float) -> npt.NDArray[G]:
            out: npt.NDArray[G] = np.full((rows, *arr.shape[1:]), fill, dtype=arr.dtype)
            out[: arr.shape[0]] = arr
            return out

        self._values = grow(self._values, 0.0)
        self._times = grow(self._times, 0.0)
        self._seq_ring = grow(self._seq_ring, -1)
        self.count = grow(self.count, 0)
        self.last_t = grow(self.last_t, math.nan)
        self.last_v = grow(self.last_v, math.nan)
        self.last_seq = grow(self.last_seq, -1)
        self.dups_since_new = grow(self.dups_since_new, 0)
        self.duplicates = grow(self.duplicates, 0)
        self.rejected = grow(self.rejected, 0)
        self.loss_missing = grow(self.loss_missing, 0.0)
        self.loss_expected = grow(self.loss_expected, 0.0)
        self.v_ref = grow(self.v_ref, 0.0)
        self.long.resize(rows)
        self.short_sums.resize(rows)
        self._rows = rows
        self.fields = fields

    def reserve(self, fields: int) -> None:
        """Allocate storage for ``fields`` rows up front (avoids regrowth when many twins are added)."""
        used = self.fields
        self.resize(fields)
        self.fields = used

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes + self._times.nbytes + self._seq_ring.nbytes)

    # -- appends --------------------------------------------------------------------------------------------

    def append(
        self,
        rows: npt.ArrayLike,
        t_s: npt.ArrayLike,
        values: npt.ArrayLike,
        seq: npt.ArrayLike | None = None,
    ) -> int:
        """Append one reading per entry (rows may repeat; a row's entries must be in time order).

        Non-finite values or times are rejected and counted. Returns how many readings were accepted.
        """
        r = np.asarray(rows, dtype=np.intp).ravel()
        t = np.asarray(t_s, dtype=np.float64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        s = None if seq is None else np.asarray(seq, dtype=np.int64).ravel()
        if not (r.shape == t.shape == v.shape and (s is None or s.shape == r.shape)):
            raise InvalidValueError("rows, t_s, values (and seq) must have the same length")
        if r.size == 0:
            return 0
        if r.min() < 0 or r.max() >= self.fields:
            raise InvalidValueError(f"row out of range [0, {self.fields})")
        ok = np.isfinite(t) & np.isfinite(v)
        if not ok.all():
            np.add.at(self.rejected, r[~ok], 1)
            r, t, v = r[ok], t[ok], v[ok]
            s = None if s is None else s[ok]
        if math.isnan(self.t_ref) and t.size:
            self.t_ref = float(t.max())
        if t.size and float(t.max()) - self.t_ref > _REBASE_SPAN_S:
            self.rebase(float(t.max()))
        accepted = 0
        if np.unique(r).size == r.size:
            return self._append_unique(r, t, v, s)
        # Repeated rows: apply the k-th occurrence of every row in round k, keeping per-row order.
        order = np.argsort(r, kind="stable")
        sorted_rows = r[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_rows)) + 1]
        rank = np.arange(r.size) - np.repeat(starts, np.diff(np.r_[starts, r.size]))
        occurrence = np.empty(r.size, np.int64)
        occurrence[order] = rank
        for k in range(int(occurrence.max()) + 1):
            m = occurrence == k
            accepted += self._append_unique(r[m], t[m], v[m], None if s is None else s[m])
        return accepted

    def _append_unique(self, r: IndexArray, t: FloatArray, v: FloatArray, s: IntArray | None) -> int:
        last_seq, last_t = self.last_seq[r], self.last_t[r]
        # With a seq, de-duplicate by seq (a replayed reading repeats it); without, by time.
        new = np.isnan(last_t) | (t > last_t) if s is None else (last_seq < 0) | (s > last_seq)
        if not new.all():
            dup = r[~new]
            self.dups_since_new[dup] += 1
            self.duplicates[dup] += 1
            r, t, v = r[new], t[new], v[new]
            last_seq = last_seq[new]
            s = None if s is None else s[new]
        if r.size == 0:
            return 0

        # Loss accounting with an exponential memory about one window long.
        decay = 1.0 - 1.0 / self.capacity
        gap = np.zeros(r.size) if s is None else np.where(last_seq >= 0, np.maximum(s - last_seq - 1, 0), 0)
        self.loss_missing[r] = self.loss_missing[r] * decay + gap
        self.loss_expected[r] = self.loss_expected[r] * decay + gap + 1.0

        count = self.count[r]
        first = count == 0
        v32 = v.astype(np.float32)
        self.v_ref[r[first]] = v32[first]
        t32 = (t - self.t_ref).astype(np.float32)
        slot = count % self.capacity

        full = count >= self.capacity
        if full.any():
            rf, sf = r[full], slot[full]
            self.long.add(
                rf, self._times[rf, sf].astype(np.float64), self._rel(rf, self._values[rf, sf]), -1.0
            )
        leaving = count >= self.short
        if leaving.any():
            rl = r[leaving]
            sl = (count[leaving] - self.short) % self.capacity
            self.short_sums.add(
                rl, self._times[rl, sl].astype(np.float64), self._rel(rl, self._values[rl, sl]), -1.0
            )

        self._values[r, slot] = v32
        self._times[r, slot] = t32
        t_rel, v_rel = t32.astype(np.float64), self._rel(r, v32)
        self.long.add(r, t_rel, v_rel, 1.0)
        self.short_sums.add(r, t_rel, v_rel, 1.0)

        self._seq_ring[r, count % self.recent] = -1 if s is None else s
        self.count[r] = count + 1
        self.last_t[r] = t
        self.last_v[r] = v32
        if s is not None:
            self.last_seq[r] = s
        self.dups_since_new[r] = 0
        return int(r.size)

    def _rel(self, r: IndexArray, v32: npt.NDArray[np.float32]) -> FloatArray:
        out: FloatArray = v32.astype(np.float64) - self.v_ref[r]
        return out

    # -- exact recomputation --------------------------------------------------------------------------------

    def rebase(self, t_ref: float) -> None:
        """Move the time reference to ``t_ref`` and recompute every sum exactly from the stored samples."""
        n = self.fields
        if not math.isnan(self.t_ref):
            self._times[:n] -= np.float32(t_ref - self.t_ref)
        self.t_ref = t_ref
        has = self.count[:n] > 0
        self.v_ref[:n] = np.where(has, self.last_v[:n], 0.0)
        self.recompute()

    def recompute(self) -> None:
        """Recompute the long and short sums from the ring buffers (O(fields x capacity), vectorised)."""
        n, cap = self.fields, self.capacity
        count = self.count[:n, None]
        slot = np.arange(cap)[None, :]
        in_long = slot < np.minimum(count, cap)
        age = (count - 1 - slot) % cap  # 0 = newest
        in_short = in_long & (age < self.short)
        t = self._times[:n].astype(np.float64)
        v = self._values[:n].astype(np.float64) - self.v_ref[:n, None]
        for sums, mask in ((self.long, in_long), (self.short_sums, in_short)):
            tm, vm = np.where(mask, t, 0.0), np.where(mask, v, 0.0)
            sums.n[:n] = mask.sum(axis=1)
            sums.t[:n] = tm.sum(axis=1)
            sums.v[:n] = vm.sum(axis=1)
            sums.tt[:n] = (tm * tm).sum(axis=1)
            sums.tv[:n] = (tm * vm).sum(axis=1)
            sums.vv[:n] = (vm * vm).sum(axis=1)

    # -- reads ----------------------------------------------------------------------------------------------

    def fit_long(self) -> LineFit:
        return self._slice_fit(self.long)

    def fit_short(self) -> LineFit:
        return self._slice_fit(self.short_sums)

    def _slice_fit(self, sums: RunningSums) -> LineFit:
        n = self.fields
        part = RunningSums(sums.n[:n], sums.t[:n], sums.v[:n], sums.tt[:n], sums.tv[:n], sums.vv[:n])
        return part.fit(0.0 if math.isnan(self.t_ref) else self.t_ref, self.v_ref[:n])

    def recent_block(self, k: int | None = None) -> RecentBlock:
        """The ``k`` (default ``recent``) newest samples of every field, oldest first, NaN where missing."""
        k = self.recent if k is None else k
        n, cap = self.fields, self.capacity
        count = self.count[:n]
        slots = ((count - k) % cap).astype(np.intp)[:, None] + np.arange(k, dtype=np.intp)[None, :]
        slots[slots >= cap] -= cap
        slots += (np.arange(n, dtype=np.intp) * cap)[:, None]
        values = self._values.reshape(-1)[slots].astype(np.float64)
        times = self._times.reshape(-1)[slots].astype(np.float64)
        times += self.t_ref
        short = count < k
        if short.any():  # young fields: blank the slots that were never written
            empty = np.arange(k)[None, :] < (k - count[short])[:, None]
            values[short] = np.where(empty, np.nan, values[short])
            times[short] = np.where(empty, np.nan, times[short])
        return RecentBlock(t_s=times, values=values)

    def recent_missing(self) -> FloatArray:
        """Readings missing (sequence gaps) among the ``recent`` newest accepted ones, per field."""
        n = self.fields
        ring = self._seq_ring[:n]
        known = ring >= 0
        lo = np.where(known, ring, np.iinfo(np.int64).max).min(axis=1)
        hi = np.where(known, ring, -1).max(axis=1)
        span = np.where(hi >= 0, hi - lo + 1, 0)
        out: FloatArray = np.maximum(span - known.sum(axis=1), 0).astype(np.float64)
        return out

    def loss_ratio(self) -> FloatArray:
        n = self.fields
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(
                self.loss_expected[:n] > 0, self.loss_missing[:n] / self.loss_expected[:n], 0.0
            )
        return out

    def history(self, row: int) -> tuple[FloatArray, FloatArray]:
        """All stored samples of one field, oldest first: ``(t_s, values)``."""
        c = int(self.count[row])
        k = min(c, self.capacity)
        slots = (np.arange(c - k, c)) % self.capacity
        return (
            self._times[row, slots].astype(np.float64) + self.t_ref,
            self._values[row, slots].astype(np.float64),
        )
