"""A field's history from the node's own tiers, extended back in time from PostgreSQL.

The node keeps bounded history on purpose; the database sink keeps what outgrows it. A query whose range
starts before the oldest point the node still holds (at any level) takes that older part from the database
(:class:`~drsdtp.northbound.postgres.archive.PostgresArchive`) at the same resolution and joins the two at the
boundary, so callers see one series. ``auto`` picks the finest level that fits the point budget over the whole
range, counting the database's readings too. The two parts never overlap: the database answers strictly before
the node's oldest point (a bucket cut by that boundary is merged from both sides). When the database cannot
answer, the node's own part is returned and the failure is logged and counted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from drsdtp.history.options import RAW, HistoryOptions
from drsdtp.history.series import Buckets, Rows, SeriesData

if TYPE_CHECKING:
    from drsdtp.northbound.postgres.archive import PostgresArchive

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

__all__ = ["read_archived"]

log = logging.getLogger(__name__)


class LocalHistory(Protocol):  # the HistoryService subset used here
    async def query(
        self, twin: str, field: str, start_ms: int, end_ms: int, resolution: str, max_points: int
    ) -> SeriesData: ...
    async def oldest(self, twin: str, field: str) -> int | None: ...


async def read_archived(
    local: LocalHistory,
    archive: PostgresArchive,
    options: HistoryOptions,
    twin: str,
    field: str,
    start_ms: int,
    end_ms: int,
    resolution: str,
    max_points: int,
) -> SeriesData:
    # Imported when used: a node without [postgres] never loads the northbound modules.
    from drsdtp.northbound.postgres.archive import ArchiveUnavailable

    asked = resolution or "auto"
    oldest = await local.oldest(twin, field)
    boundary = end_ms if oldest is None else min(end_ms, oldest)
    known = asked in ("auto", RAW) or any(t.label == asked for t in options.tiers)
    if start_ms >= boundary or not known:  # the node holds the whole range (or refuses the resolution)
        return await local.query(twin, field, start_ms, end_ms, asked, max_points)
    try:
        level, recent = asked, None
        if asked == "auto":
            older = await archive.count(twin, field, start_ms, boundary)
            if older == 0:
                return await local.query(twin, field, start_ms, end_ms, asked, max_points)
            level, recent = await _auto(local, options, twin, field, start_ms, end_ms, older, max_points)
        if level == RAW:
            old_rows = await archive.rows(twin, field, start_ms, boundary, max_points)
            if recent is None:
                recent = await local.query(twin, field, start_ms, end_ms, RAW, max_points)
            rows = Rows.concat([old_rows, Rows(np.zeros(len(recent), np.uint32), recent.ts, recent.value)])
            return SeriesData.from_rows(twin, field, rows)
        interval = next(t.interval_ms for t in options.tiers if t.label == level)
        old_buckets = await archive.buckets(twin, field, start_ms, boundary, interval, max_points)
    except ArchiveUnavailable as exc:
        log.warning("history of %s/%s before the node's own: %s", twin, field, exc)
        return await local.query(twin, field, start_ms, end_ms, asked, max_points)
    recent = await local.query(twin, field, start_ms, end_ms, level, max_points)
    local_buckets = Buckets(
        np.zeros(len(recent), np.uint32), recent.ts, recent.min, recent.max,
        recent.value * recent.count, recent.count,
    )  # fmt: skip
    joined = Buckets.concat([old_buckets, local_buckets]).merged()
    return SeriesData.from_buckets(twin, field, level, joined)


async def _auto(
    local: LocalHistory,
    options: HistoryOptions,
    twin: str,
    field: str,
    start_ms: int,
    end_ms: int,
    older: int,
    max_points: int,
) -> tuple[str, SeriesData | None]:
    """The finest level holding the whole range within ``max_points``: raw when the database's readings
    plus the node's raw ones fit (returned with the node's raw points, read to count them), else the first
    tier whose bucket count fits (else the coarsest)."""
    if older < max_points:
        recent = await local.query(twin, field, start_ms, end_ms, RAW, max_points)
        if older + len(recent) <= max_points:
            return RAW, recent
    for tier in options.tiers:
        if (end_ms - start_ms) // tier.interval_ms + 1 <= max_points:
            return tier.label, None
    return (options.tiers[-1].label, None) if options.tiers else (RAW, None)
