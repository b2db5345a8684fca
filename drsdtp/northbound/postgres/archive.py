"""Reading history back from PostgreSQL: the readings the sink stored, for ranges the node's own tiers no
longer hold.

The database holds what every node that shares it has sunk (the readings' identity is unique there), so a
node can also answer for a time before it held the twin. Queries are bounded by the caller's point budget and
run on one connection of their own (never the sink's, whose transactions must not wait behind a reader),
opened on first use and reopened after a failure; a failure raises :class:`ArchiveUnavailable` so the caller
answers from local history and says so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from drsdtp.config import PostgresConfig
from drsdtp.history.series import Buckets, Rows
from drsdtp.northbound.postgres.connection import Connect, asyncpg_connect, close
from drsdtp.northbound.postgres.schema import quote, timestamp

__all__ = ["ArchiveStats", "ArchiveUnavailable", "PostgresArchive"]

log = logging.getLogger(__name__)
QUERY_TIMEOUT_S = 10.0


class ArchiveUnavailable(Exception):
    """The database could not answer (down, unreachable, or not yet created by the sink)."""


@dataclass(slots=True)
class ArchiveStats:
    queries: int = 0
    points: int = 0  # points returned from the database
    failures: int = 0


class PostgresArchive:
    def __init__(self, config: PostgresConfig, connect: Connect | None = None) -> None:
        self.config = config
        self.stats = ArchiveStats()
        self._table = f"{quote(config.schema)}.drsdtp_readings"
        self._connect = connect or asyncpg_connect(config)
        self._conn: Any = None
        self._lock = asyncio.Lock()  # one query at a time on the one connection

    async def count(self, twin: str, field: str, start_ms: int, end_ms: int) -> int:
        """Readings of (twin, field) the database holds in ``[start_ms, end_ms)``."""
        value = await self._fetch(
            "fetchval",
            f"SELECT count(*) FROM {self._table} WHERE twin = $1 AND field = $2 AND ts >= $3 AND ts < $4",
            twin, field, timestamp(start_ms), timestamp(end_ms),
        )  # fmt: skip
        return int(value or 0)

    async def rows(self, twin: str, field: str, start_ms: int, end_ms: int, limit: int) -> Rows:
        """The newest ``limit`` raw readings in ``[start_ms, end_ms)``, oldest first."""
        records = await self._fetch(
            "fetch",
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ms, value FROM ("
            f" SELECT ts, value FROM {self._table} WHERE twin = $1 AND field = $2 AND ts >= $3 AND ts < $4"
            " ORDER BY ts DESC, value DESC LIMIT $5) newest ORDER BY ts, value",
            twin, field, timestamp(start_ms), timestamp(end_ms), limit,
        )  # fmt: skip
        self.stats.points += len(records)
        return Rows(
            np.zeros(len(records), np.uint32),
            np.fromiter((r[0] for r in records), np.int64, len(records)),
            np.fromiter((r[1] for r in records), np.float64, len(records)),
        )

    async def buckets(
        self, twin: str, field: str, start_ms: int, end_ms: int, interval_ms: int, limit: int
    ) -> Buckets:
        """The newest ``limit`` buckets of ``interval_ms`` (aligned to the epoch, as the node's tiers are)
        over the readings in ``[start_ms, end_ms)``, oldest first."""
        records = await self._fetch(
            "fetch",
            "SELECT b, mn, mx, s, n FROM ("
            " SELECT (floor(extract(epoch FROM ts) * 1000 / $5) * $5)::bigint AS b,"
            " min(value) AS mn, max(value) AS mx, sum(value) AS s, count(*) AS n"
            f" FROM {self._table} WHERE twin = $1 AND field = $2 AND ts >= $3 AND ts < $4"
            " GROUP BY b ORDER BY b DESC LIMIT $6) newest ORDER BY b",
            twin, field, timestamp(start_ms), timestamp(end_ms), interval_ms, limit,
        )  # fmt: skip
        self.stats.points += len(records)
        n = len(records)

        def column(i: int, dtype: type[np.generic]) -> Any:
            return np.fromiter((r[i] for r in records), dtype, n)

        return Buckets(
            np.zeros(n, np.uint32), column(0, np.int64), column(1, np.float64),
            column(2, np.float64), column(3, np.float64), column(4, np.int64),
        )  # fmt: skip

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _fetch(self, method: str, query: str, *args: Any) -> Any:
        self.stats.queries += 1
        async with self._lock:
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                return await getattr(self._conn, method)(query, *args, timeout=QUERY_TIMEOUT_S)
            except Exception as exc:  # the driver's errors, OSError, timeouts: the database cannot answer
                self.stats.failures += 1
                await self._drop()
                raise ArchiveUnavailable(f"PostgreSQL history is unavailable: {exc}") from exc

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close(conn)
