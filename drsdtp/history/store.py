"""The durable, bounded history of every field: write-ahead segments, sorted blocks, downsampled tiers.

Data path (see the module docs of ``wal``, ``blocks`` and ``manifest`` for the file formats)::

    append_batch ──▶ active segment (one CRC'd record per batch; fsync by flush())
                        │ sealed at segment_bytes, or segment_ms after compact() first saw it
    compact()    ──▶ raw block (sorted by series, deduplicated, per-series CRC, zlib)
                        │ older than raw_retention_ms, or beyond raw_max_points for a field
                 ──▶ tier 1 block (1 min buckets: min/max/sum/count) ──▶ tier 2 (15 min) ──▶ dropped

Size is bounded by retention, not uptime: per field at most raw_max_points raw readings (or raw_retention_ms
of them) plus one bucket per tier interval over that tier's retention; ``max_bytes`` caps the total for
deployments where the number of fields is not known in advance. Readings not yet folded into a block are
also held in memory (about 20 B each; one segment, plus the sealed ones until the next ``compact``).
Not thread-safe: call every method from one thread. ``flush`` and ``compact`` block on fsync; the node may
run them in a worker thread provided it serialises all calls (one lock around the store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeAlias

from drsdtp.errors import InvalidValueError
from drsdtp.history import compaction
from drsdtp.history.blocks import (
    BlockInfo,
    CorruptBlockError,
    block_path,
    open_block,
    read_block,
    read_chunk,
    write_block,
)
from drsdtp.history.catalog import LOST_TWIN, Catalog
from drsdtp.history.export import ExportFormat, write_series
from drsdtp.history.files import fsync_dir, storage_error
from drsdtp.history.manifest import Manifest, read_manifest, write_manifest
from drsdtp.history.options import RAW, HistoryOptions
from drsdtp.history.series import Buckets, Rows, SeriesData, downsample, rollup
from drsdtp.history.wal import SegmentWriter, encode_record, replay_segment, segment_path

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from drsdtp.lazy import numpy as np

__all__ = ["CompactionReport", "HistoryStats", "HistoryStore", "NameSource"]

_log = logging.getLogger(__name__)

U32: TypeAlias = "NDArray[np.uint32]"
_UNKNOWN = 0xFFFFFFFF  # series id of readings whose intern ids have no name
_MIN_TS = -(1 << 62)
_MAX_TS = 1 << 62
DEFAULT_MAX_POINTS = 10_000
_SEALED_WARNING = 8  # sealed segments waiting for compact() before each warning


class NameSource(Protocol):
    """Names of engine intern ids (``drsdtp.core.Store`` satisfies it), for batches given as id arrays."""

    def twin_name(self, twin_id: int) -> str | None: ...

    def field_name(self, field_id: int) -> str | None: ...


@dataclass(slots=True)
class HistoryStats:
    """Counters since open (plain attributes; the node's metrics module exports them)."""

    appended: int = 0  # readings accepted by append_batch
    dropped_nonfinite: int = 0  # NaN/inf readings (BAD quality without a value): not history
    dropped_unknown: int = 0  # ids without a name, or replayed rows whose catalog line was never flushed
    torn_tails: int = 0  # segments (or the catalog) whose tail was cut on open
    cut_bytes: int = 0
    corrupt_chunks: int = 0  # series chunks failing their CRC (readings lost, logged)
    corrupt_blocks: int = 0  # blocks whose header or index is damaged (moved aside as *.corrupt)
    manifest_recoveries: int = 0
    blocks_written: int = 0
    compactions: int = 0


@dataclass(slots=True)
class CompactionReport:
    """What one ``compact`` call did (for logs and tests)."""

    sealed: int = 0  # segments folded into raw blocks
    expired: dict[int, int] = field(default_factory=dict)  # level -> blocks moved down a tier (or dropped)
    trimmed: int = 0  # raw readings downsampled early (raw_max_points)
    merged: int = 0  # tier blocks merged
    evicted: int = 0  # blocks moved down or dropped to honour max_bytes

    @property
    def changed(self) -> bool:
        return bool(self.sealed or any(self.expired.values()) or self.trimmed or self.merged or self.evicted)


@dataclass(slots=True)
class _Segment:
    writer: SegmentWriter
    parts: list[Rows] = field(default_factory=list)
    journal: int = 0  # the highest journal number appended to it
    sealed: bool = False
    first_seen_ms: int | None = None  # when compact() first saw it hold data (its age clock)


class HistoryStore:
    """Per-field time series on local disk. See the module docs for the data path and its bounds."""

    def __init__(
        self,
        directory: Path | str,
        options: HistoryOptions | None = None,
        *,
        names: NameSource | None = None,
        now_ms: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.options = options or HistoryOptions()
        self.stats = HistoryStats()
        self._names = names
        # (engine twin id << 32 | field id), sorted, and the series id of each: a batch's pairs are looked up
        # in one searchsorted (a dict lookup per distinct pair was a tenth of a replica's CPU). Made at the
        # first batch: an idle node does not import numpy (issue 13).
        self._engine_keys: NDArray[np.uint64] | None = None
        self._engine_series: U32 | None = None
        self._segment_dir = self.directory / "wal"
        self._block_dir = self.directory / "blocks"
        try:
            self._segment_dir.mkdir(parents=True, exist_ok=True)
            self._block_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise storage_error(f"cannot create the history directory {self.directory}", exc) from exc
        self._catalog = Catalog(self.directory / "series.log")
        if self._catalog.cut_bytes:
            self.stats.torn_tails += 1
            self.stats.cut_bytes += self._catalog.cut_bytes
        self._blocks: dict[int, BlockInfo] = {}
        self._segments: list[_Segment] = []
        self._next_segment = 0
        self._dir_dirty = False
        self._closed = False
        self._staged = False
        self._obsolete: list[Path] = []
        self._folded_journal = 0  # every journalled batch up to this number is in blocks
        self._recover(_now(now_ms))

    # --- open and recovery --------------------------------------------------------------------------------

    def _recover(self, now_ms: int) -> None:
        manifest_path = self.directory / "MANIFEST"
        manifest = read_manifest(manifest_path)
        dirty = False
        if manifest is None:
            # Damaged: trust every intact block (a compaction interrupted at the same moment could count
            # some readings twice) and every segment; keep the damaged file for inspection.
            self.stats.manifest_recoveries += 1
            manifest_path.replace(manifest_path.with_name("MANIFEST.damaged"))
            ids = sorted(i for p in self._block_dir.glob("blk-*.dat") if (i := _block_id(p)) is not None)
            manifest = Manifest(tuple(ids), (max(ids) + 1) if ids else 1, 0)
            dirty = True
        self._next_block_id = manifest.next_block_id
        self._folded_journal = manifest.journal_mark
        listed = set(manifest.blocks)
        for path in self._block_dir.iterdir():
            if path.suffix == ".tmp" or (path.suffix == ".dat" and _block_id(path) not in listed):
                path.unlink()  # written by a compaction that did not commit
        for block_id in manifest.blocks:
            path = block_path(self._block_dir, block_id)
            try:
                self._blocks[block_id] = open_block(path)
            except (CorruptBlockError, FileNotFoundError) as exc:
                _log.error("history block %s is unusable (%s): moved aside", path, exc)
                self.stats.corrupt_blocks += 1
                if path.exists():
                    path.replace(path.with_suffix(".corrupt"))
                dirty = True
        used = [int(b.index["series"].max()) + 1 for b in self._blocks.values() if len(b.index)]
        self._catalog.reserve(max(used, default=0))
        replayed: list[Rows] = []
        floor = manifest.segment_floor
        for sequence, path in self._segment_files():
            self._next_segment = max(self._next_segment, sequence + 1)
            if sequence < floor:
                path.unlink()  # already folded into a block before the crash
                continue
            replay = replay_segment(path)
            if replay is None:
                continue
            if replay.cut_bytes:
                self.stats.torn_tails += 1
                self.stats.cut_bytes += replay.cut_bytes
            known = replay.rows.series < len(self._catalog.names)
            self.stats.dropped_unknown += int((~known).sum())
            replayed.append(replay.rows.select(known))
            if known.all():  # else leave those batches to the journal (a repeat only counts once)
                self._folded_journal = max(self._folded_journal, replay.journal)  # folded below
        had_segments = self._next_segment > floor
        self._next_segment = max(self._next_segment, floor)
        added: list[BlockInfo] = []
        replayed_rows = 0
        if replayed:  # nothing to replay (the usual start) builds no arrays: numpy stays unimported
            rows = Rows.concat(replayed)
            replayed_rows = len(rows)
            if replayed_rows:
                added.append(self._write_block(0, rows.sorted_unique(), now_ms, _raw_newest(rows, now_ms)))
        if added or dirty or had_segments:
            # Fold what was replayed into a block at once: those segment files may hold rows of series
            # whose catalog line was lost, and a later series must never inherit them.
            self._stage(added, [])
            self._obsolete.extend(path for _, path in self._segment_files())
            self._publish()
        if replayed:
            _log.info("history: replayed %d readings from %d segments", replayed_rows, len(replayed))

    def _segment_files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self._segment_dir.glob("wal-*.log"):
            try:
                found.append((int(path.stem.split("-")[1]), path))
            except ValueError:
                continue
        return sorted(found)

    # --- ingest -------------------------------------------------------------------------------------------

    def append_batch(
        self,
        twins: Sequence[str] | NDArray[Any],
        fields: Sequence[str] | NDArray[Any],
        values: NDArray[np.float64] | Sequence[float],
        ts_ms: NDArray[np.int64] | Sequence[int],
        journal: int = 0,
    ) -> int:
        """Append one batch of readings (names, or engine intern ids when the store has ``names``).

        Vectorised: readings are grouped per series with one stable argsort; Python work is per distinct
        series in the batch, not per reading. NaN/inf values are skipped (counted). Not durable until
        :meth:`flush`. ``journal``: the batch's number in the node's journal (increasing; 0: none), so
        :attr:`journal_mark` can tell recovery which journalled batches are already here. Returns the
        number of readings appended.
        """
        self._check_open()
        value = np.asarray(values, np.float64)
        ts = np.asarray(ts_ms, np.int64)
        n = len(value)
        if not (len(twins) == len(fields) == len(ts) == n):
            raise InvalidValueError(
                f"append_batch: arrays differ in length ({len(twins)}, {len(fields)}, {n}, {len(ts)})"
            )
        if n == 0:
            return 0
        series = self._series_ids(twins, fields)
        keep = np.isfinite(value) & (series != _UNKNOWN)
        kept = int(keep.sum())
        if kept < n:
            self.stats.dropped_nonfinite += int((~np.isfinite(value)).sum())
            self.stats.dropped_unknown += int((np.isfinite(value) & (series == _UNKNOWN)).sum())
            if kept == 0:
                return 0
            series, ts, value = series[keep], ts[keep], value[keep]
        order = np.argsort(series, kind="stable")  # stable: a series keeps its arrival order
        rows = Rows(series[order], ts[order], value[order])
        group_series, group_counts = np.unique(rows.series, return_counts=True)
        segment = self._active_segment()
        segment.writer.append(encode_record(rows, group_series, group_counts, journal), kept)
        segment.parts.append(rows)
        segment.journal = max(segment.journal, journal)
        self.stats.appended += kept
        if segment.writer.size >= self.options.segment_bytes:
            segment.sealed = True
            waiting = sum(s.sealed for s in self._segments)
            if waiting % _SEALED_WARNING == 0:
                _log.warning(
                    "history: %d sealed segments (%d MiB, held in memory too) wait for compact()",
                    waiting, sum(s.writer.size for s in self._segments) >> 20,
                )  # fmt: skip
        return kept

    def _series_ids(self, twins: Sequence[str] | NDArray[Any], fields: Sequence[str] | NDArray[Any]) -> U32:
        if isinstance(twins, np.ndarray) and twins.dtype.kind in "ui":
            return self._series_from_engine_ids(twins, np.asarray(fields))
        twin_names, twin_code = np.unique(np.asarray(twins, dtype=str), return_inverse=True)
        field_names, field_code = np.unique(np.asarray(fields, dtype=str), return_inverse=True)
        pair = twin_code.astype(np.int64) * len(field_names) + field_code
        pairs, inverse = np.unique(pair, return_inverse=True)
        keys = [
            (str(twin_names[p // len(field_names)]), str(field_names[p % len(field_names)])) for p in pairs
        ]
        ids = np.asarray(self._catalog.define(keys), np.uint32)
        out: U32 = ids[inverse.reshape(-1)]
        return out

    def _series_from_engine_ids(self, twins: NDArray[Any], fields: NDArray[Any]) -> U32:
        if self._names is None:
            raise InvalidValueError("append_batch got intern ids, but the history store has no name source")
        key = (twins.astype(np.uint64) << np.uint64(32)) | fields.astype(np.uint64)
        pairs, inverse = np.unique(key, return_inverse=True)
        if self._engine_keys is None or self._engine_series is None:
            self._engine_keys, self._engine_series = np.empty(0, np.uint64), np.empty(0, np.uint32)
        known = self._engine_keys
        at = np.minimum(np.searchsorted(known, pairs), max(len(known) - 1, 0))
        hit = known[at] == pairs if len(known) else np.zeros(len(pairs), np.bool_)
        ids = np.where(hit, self._engine_series[at] if len(known) else 0, _UNKNOWN).astype(np.uint32)
        missing = np.flatnonzero(~hit)
        if len(missing):
            fresh: list[int] = []  # indexes into pairs of the series seen for the first time
            names: list[tuple[str, str]] = []
            for i, pair in zip(missing.tolist(), pairs[missing].tolist(), strict=True):
                twin, name = self._names.twin_name(pair >> 32), self._names.field_name(pair & 0xFFFFFFFF)
                if twin is not None and name is not None:
                    fresh.append(i)
                    names.append((twin, name))
            if fresh:
                # One catalog append (one write) for all of them: a replica receiving a peer's 100k new
                # series spent a third of its CPU in one define, and one write, per series.
                ids[fresh] = self._catalog.define(names)
                keys = np.concatenate([known, pairs[fresh]])
                order = np.argsort(keys, kind="stable")
                self._engine_keys = keys[order]
                self._engine_series = np.concatenate([self._engine_series, ids[fresh]])[order]
        out: U32 = ids[inverse.reshape(-1)]
        return out

    def _active_segment(self) -> _Segment:
        if self._segments and not self._segments[-1].sealed:
            return self._segments[-1]
        sequence = self._next_segment
        self._next_segment += 1
        segment = _Segment(SegmentWriter(segment_path(self._segment_dir, sequence), sequence))
        self._segments.append(segment)
        self._dir_dirty = True
        return segment

    def flush(self) -> None:
        """Make every appended reading durable: catalog first, then segments (group commit)."""
        self._check_open()
        self._catalog.sync()
        for segment in self._segments:
            segment.writer.sync()
        if self._dir_dirty:
            fsync_dir(self._segment_dir)
            self._dir_dirty = False

    @property
    def journal_mark(self) -> int:
        """The highest journal number appended: after :meth:`flush` (or on open), every journalled batch
        up to it is durable here, since batches are appended in journal order."""
        return max(self._folded_journal, *(s.journal for s in self._segments), 0)

    @property
    def sealed_segments(self) -> int:
        """Sealed segments waiting to be folded into a block (their readings are held in memory)."""
        return sum(s.sealed for s in self._segments)

    def fold(self, now_ms: int | None = None) -> int:
        """Fold the sealed segments into a raw block now (the first step of :meth:`compact`), so the readings
        held in memory stay within about one segment. Returns the segments folded."""
        self._check_open()
        folded = self._fold_sealed_segments(_now(now_ms))
        self._publish()
        return folded

    def rotate(self) -> None:
        """Seal the active segment now (the next ``compact`` folds it into a block)."""
        if self._segments and self._segments[-1].parts:
            self._segments[-1].sealed = True

    # --- compaction ---------------------------------------------------------------------------------------

    def compact(self, now_ms: int | None = None) -> CompactionReport:
        """Fold sealed segments into blocks, downsample what aged, merge small blocks, honour ``max_bytes``.

        All steps commit together through the manifest, so a crash loses nothing and counts nothing
        twice. Call periodically (every ``segment_ms / 10`` or so) from the node.
        """
        self._check_open()
        now = _now(now_ms)
        report = CompactionReport()
        self._age_active_segment(now)
        try:
            report.sealed = self._fold_sealed_segments(now)
            for level in range(len(self.options.tiers) + 1):
                cutoff = now - self.options.level_retention_ms(level)
                expired = [b for b in self._level(level) if b.newest_ms < cutoff]
                if expired:
                    self._move_down(level, expired, now)
                report.expired[level] = len(expired)
            report.trimmed = self._trim_raw(now)
            report.merged = self._merge_tiers(now)
            report.evicted = self._enforce_max_bytes(now)
        finally:
            self._publish()  # every staged step is complete, even if a later one failed
        self.stats.compactions += 1
        if report.changed:
            _log.debug("history compaction: %s", report)
        return report

    def _age_active_segment(self, now_ms: int) -> None:
        if not self._segments or self._segments[-1].sealed or not self._segments[-1].parts:
            return
        active = self._segments[-1]
        if active.first_seen_ms is None:
            active.first_seen_ms = now_ms
        elif now_ms - active.first_seen_ms >= self.options.segment_ms:
            active.sealed = True

    def _fold_sealed_segments(self, now_ms: int) -> int:
        sealed = [s for s in self._segments if s.sealed]
        if not sealed:
            return 0
        rows = Rows.concat([part for s in sealed for part in s.parts])
        added = (
            [self._write_block(0, rows.sorted_unique(), now_ms, _raw_newest(rows, now_ms))]
            if len(rows)
            else []
        )
        self._stage(added, [])
        for segment in sealed:
            segment.writer.close()
            self._obsolete.append(segment.writer.path)
        self._segments = [s for s in self._segments if not s.sealed]
        self._folded_journal = max(self._folded_journal, *(s.journal for s in sealed))
        return len(sealed)

    def _move_down(self, level: int, blocks: list[BlockInfo], now_ms: int) -> None:
        """Downsample ``blocks`` into the next tier (or drop them from the last) in one commit."""
        added: list[BlockInfo] = []
        if level < len(self.options.tiers):
            data = self._read_all(blocks)
            buckets = self._to_tier(level + 1, data)
            if len(buckets):
                newest = max(b.newest_ms for b in blocks)
                added.append(self._write_block(level + 1, buckets, now_ms, newest))
        self._stage(added, blocks)

    def _to_tier(self, level: int, data: list[Rows | Buckets]) -> Buckets:
        interval = self.options.tiers[level - 1].interval_ms
        parts = [downsample(d, interval) if isinstance(d, Rows) else rollup(d, interval) for d in data]
        return Buckets.concat(parts).merged()

    def _read_all(self, blocks: list[BlockInfo]) -> list[Rows | Buckets]:
        out: list[Rows | Buckets] = []
        for block in blocks:
            data, bad = read_block(block)
            self.stats.corrupt_chunks += bad
            out.append(data)
        return out

    def _trim_raw(self, now_ms: int) -> int:
        """Downsample the oldest raw readings of fields holding more than ``raw_max_points`` of them."""
        raw = sorted(self._level(0), key=lambda b: (b.min_ts, b.block_id))
        plan = compaction.trim_plan(raw, self.options.raw_max_points)
        if not plan:
            return 0
        touched = [b for b in raw if b.block_id in plan]
        kept: list[Rows] = []
        dropped: list[Rows] = []
        for block in touched:
            data, bad = read_block(block)
            self.stats.corrupt_chunks += bad
            assert isinstance(data, Rows)
            keep = compaction.keep_mask(data, plan[block.block_id])
            kept.append(data.select(keep))
            dropped.append(data.select(~keep))
        added: list[BlockInfo] = []
        for block, rows in zip(touched, kept, strict=True):
            if len(rows):
                added.append(self._write_block(0, rows, now_ms, block.newest_ms, created_ms=block.created_ms))
        removed = Rows.concat(dropped)
        if self.options.tiers and len(removed):
            newest = max(b.newest_ms for b in touched)
            added.append(self._write_block(1, self._to_tier(1, [removed]), now_ms, newest))
        self._stage(added, touched)
        return len(removed)

    def _merge_tiers(self, now_ms: int) -> int:
        merged = 0
        for level in range(1, len(self.options.tiers) + 1):
            max_span = self.options.tiers[level - 1].retention_ms // 8
            while group := compaction.merge_candidates(
                self._level(level), self.options.merge_target_bytes, max_span
            ):
                data = self._read_all(group)
                buckets = Buckets.concat([d for d in data if isinstance(d, Buckets)]).merged()
                newest = max(b.newest_ms for b in group)
                added = [self._write_block(level, buckets, now_ms, newest)] if len(buckets) else []
                self._stage(added, group)
                merged += len(group)
        return merged

    def _enforce_max_bytes(self, now_ms: int) -> int:
        limit = self.options.max_bytes
        evicted = 0
        while limit is not None and self.disk_bytes() > limit:
            victim = compaction.eviction_victim(self._blocks.values())
            if victim is None:
                break  # only the live segment is left: the next fold makes it evictable
            self._move_down(victim.level, [victim], now_ms)
            evicted += 1
        if evicted:
            _log.info("history: moved %d blocks down a tier to stay under max_bytes=%d", evicted, limit)
        return evicted

    def _level(self, level: int) -> list[BlockInfo]:
        return [b for b in self._blocks.values() if b.level == level]

    def _write_block(
        self, level: int, data: Rows | Buckets, now_ms: int, newest_ms: int, *, created_ms: int | None = None
    ) -> BlockInfo:
        block_id = self._next_block_id
        self._next_block_id += 1
        self.stats.blocks_written += 1
        return write_block(
            self._block_dir, block_id, level, data,
            created_ms=created_ms or now_ms, newest_ms=newest_ms, compress=self.options.compress,
        )  # fmt: skip

    def _stage(self, added: list[BlockInfo], removed: list[BlockInfo]) -> None:
        """Swap blocks in memory; the files of ``removed`` go once :meth:`_publish` has committed."""
        for block in removed:
            del self._blocks[block.block_id]
            self._obsolete.append(block.path)
        for block in added:
            self._blocks[block.block_id] = block
        self._staged = True

    def _publish(self) -> None:
        """Commit the staged blocks in one manifest write, then delete what they superseded.

        One commit per compaction rather than per step: fsyncs dominate compaction time on flash. Blocks a
        crash leaves unlisted are deleted on the next open, so intermediate blocks need no commit.
        """
        if not self._staged:
            return
        fsync_dir(self._block_dir)  # the block renames must be durable before the manifest names them
        floor = self._segments[0].writer.sequence if self._segments else self._next_segment
        manifest = Manifest(tuple(sorted(self._blocks)), self._next_block_id, floor, self._folded_journal)
        write_manifest(self.directory / "MANIFEST", manifest)
        self._staged = False
        for path in self._obsolete:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # harmless: unlisted, so deleted on the next open
                _log.warning("history: cannot delete superseded file %s: %s", path, exc)
        self._obsolete.clear()

    # --- queries ------------------------------------------------------------------------------------------

    def series(self, twin_prefix: str | None = None) -> list[tuple[str, str]]:
        """Every (twin, field) with history, sorted; optionally only twins starting with ``twin_prefix``."""
        keys = [k for k in self._catalog.names if k[0] != LOST_TWIN]
        if twin_prefix is not None:
            keys = [k for k in keys if k[0].startswith(twin_prefix)]
        return sorted(keys)

    def query(
        self,
        twin: str,
        field: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        resolution: str = "auto",
        *,
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> SeriesData:
        """One field's history in ``[start_ms, end_ms)``, oldest first.

        ``resolution``: ``raw``, a tier label (``1m``, ``15m`` ...), or ``auto``: the finest level that
        holds the whole range (no part of it only in a coarser tier) within ``max_points``. A tier query
        also covers the time still held finer (raw readings are bucketed on the fly); an explicit level
        does not return what only a coarser tier still holds. Bucket results start at the bucket holding
        ``start_ms``.
        """
        self._check_open()
        labels = self.options.labels
        if resolution != "auto" and resolution not in labels:
            raise InvalidValueError(f"unknown resolution {resolution!r}: expected auto or one of {labels}")
        series = self._catalog.ids.get((twin, field))
        start = _MIN_TS if start_ms is None else start_ms
        end = _MAX_TS if end_ms is None else end_ms
        if series is None or start >= end:
            empty = Rows.empty()
            if resolution in ("auto", RAW):
                return SeriesData.from_rows(twin, field, empty)
            return SeriesData.from_buckets(twin, field, resolution, Buckets.empty())
        level = (
            labels.index(resolution)
            if resolution != "auto"
            else self._auto_level(series, start, end, max_points)
        )
        if level == 0:
            return SeriesData.from_rows(twin, field, self._raw_rows(series, start, end))
        interval = self.options.tiers[level - 1].interval_ms
        aligned = start - start % interval
        parts: list[Buckets] = [downsample(self._raw_rows(series, aligned, end), interval)]
        for finer in range(1, level + 1):
            for block in self._overlapping(finer, series, aligned, end):
                chunk = self._chunk(block, series)
                if isinstance(chunk, Buckets):
                    parts.append(
                        rollup(chunk.select((chunk.start >= aligned) & (chunk.start < end)), interval)
                    )
        return SeriesData.from_buckets(twin, field, labels[level], Buckets.concat(parts).merged())

    def oldest(self, twin: str, field: str) -> int | None:
        """The timestamp of the oldest point any level still holds for (twin, field); None if none."""
        self._check_open()
        series = self._catalog.ids.get((twin, field))
        if series is None:
            return None
        lo, hi = self._extent(series)
        return lo if lo <= hi else None

    def _auto_level(self, series: int, start: int, end: int, max_points: int) -> int:
        top = len(self.options.tiers)
        lo, hi = self._extent(series)
        start, end = max(start, lo), min(end, hi + 1)
        for level in range(top + 1):
            if any(self._overlapping(coarser, series, start, end) for coarser in range(level + 1, top + 1)):
                continue  # part of the range only survives in a coarser tier
            if level == 0:
                points = sum(int(e["rows"]) for b in self._overlapping(0, series, start, end)
                             if (e := b.entry(series)) is not None)  # fmt: skip
                points += sum(int(((p.series == series) & (p.ts >= start) & (p.ts < end)).sum())
                              for s in self._segments for p in s.parts)  # fmt: skip
            else:
                points = (end - start) // self.options.tiers[level - 1].interval_ms + 1
            if points <= max_points:
                return level
        return top

    def _extent(self, series: int) -> tuple[int, int]:
        lo, hi = _MAX_TS, _MIN_TS
        for block in self._blocks.values():
            entry = block.entry(series)
            if entry is not None:
                lo, hi = min(lo, int(entry["min_ts"])), max(hi, int(entry["max_ts"]))
        for segment in self._segments:
            for part in segment.parts:
                ts = part.ts[part.series == series]
                if len(ts):
                    lo, hi = min(lo, int(ts.min())), max(hi, int(ts.max()))
        return lo, hi

    def _overlapping(self, level: int, series: int, start: int, end: int) -> list[BlockInfo]:
        out = []
        for block in sorted(self._level(level), key=lambda b: b.block_id):  # block order = arrival order
            entry = block.entry(series)
            if entry is not None and int(entry["min_ts"]) < end and int(entry["max_ts"]) >= start:
                out.append(block)
        return out

    def _chunk(self, block: BlockInfo, series: int) -> Rows | Buckets | None:
        try:
            return read_chunk(block, series)
        except CorruptBlockError as exc:
            self.stats.corrupt_chunks += 1
            _log.error("history: %s; those readings are skipped", exc)
            return None

    def _raw_rows(self, series: int, start: int, end: int) -> Rows:
        parts: list[Rows] = []
        for block in self._overlapping(0, series, start, end):
            chunk = self._chunk(block, series)
            if isinstance(chunk, Rows):
                parts.append(chunk.select((chunk.ts >= start) & (chunk.ts < end)))
        for segment in self._segments:
            for part in segment.parts:
                parts.append(part.select((part.series == series) & (part.ts >= start) & (part.ts < end)))
        return Rows.concat(parts).sorted_unique()

    # --- export -------------------------------------------------------------------------------------------

    def iter_series(
        self,
        twin_prefix: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        resolution: str = "auto",
        *,
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> Iterator[SeriesData]:
        """Each field's history in turn (lazily: one field in memory at a time)."""
        for twin, name in self.series(twin_prefix):
            yield self.query(twin, name, start_ms, end_ms, resolution, max_points=max_points)

    def export(
        self,
        out: TextIO,
        fmt: ExportFormat = "csv",
        *,
        twin_prefix: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        resolution: str = "auto",
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> int:
        """Stream history as CSV, JSON or JSON lines to ``out`` (``drsdtp export``); returns the points."""
        data = self.iter_series(twin_prefix, start_ms, end_ms, resolution, max_points=max_points)
        return write_series(out, data, fmt)

    # --- size and lifecycle -------------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """Bytes of blocks and segments (the catalog and manifest are a few bytes per field)."""
        return sum(b.size for b in self._blocks.values()) + sum(s.writer.size for s in self._segments)

    def level_bytes(self) -> dict[str, int]:
        """Block bytes per level label, plus ``segments``."""
        out = dict.fromkeys(self.options.labels, 0)
        for block in self._blocks.values():
            out[self.options.labels[block.level]] += block.size
        out["segments"] = sum(s.writer.size for s in self._segments)
        return out

    def close(self) -> None:
        """Flush and close. Unfolded segments are replayed (and folded) by the next open."""
        if self._closed:
            return
        self.flush()
        for segment in self._segments:
            segment.writer.close()
        self._catalog.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise storage_error(f"history store {self.directory} is closed")

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _now(now_ms: int | None) -> int:
    return time.time_ns() // 1_000_000 if now_ms is None else now_ms


def _block_id(path: Path) -> int | None:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _raw_newest(rows: Rows, now_ms: int) -> int:
    """Retention age of fresh raw readings: their newest stamp, but never later than their arrival (a
    reading stamped in the future by a bad clock must not be kept forever)."""
    return min(int(rows.ts.max()), now_ms) if len(rows) else now_ms
