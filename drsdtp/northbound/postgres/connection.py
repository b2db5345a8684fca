"""The sink's connections to PostgreSQL: one way to open (asyncpg, imported only when a sink is configured),
one way to close, and the supervised session each writer of the database runs under (jittered backoff)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from drsdtp.config import PostgresConfig
from drsdtp.supervisor import Backoff, Supervisor

__all__ = ["Connect", "asyncpg_connect", "close", "supervised"]

Connect = Callable[[], Awaitable[Any]]


def asyncpg_connect(config: PostgresConfig) -> Connect:
    async def connect() -> Any:
        import asyncpg  # the driver only when the sink is configured

        return await asyncpg.connect(config.dsn, timeout=config.connect_timeout_s)

    return connect


async def close(conn: Any) -> None:
    """Closes a connection that may already be broken, within 5 s, without raising."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 5.0)


def supervised(
    name: str, config: PostgresConfig, connect: Connect, work: Callable[[Any], Awaitable[None]]
) -> Supervisor[Any]:
    """Runs ``work`` on a fresh connection, reconnecting with backoff whenever it or the connection fails."""

    @contextlib.asynccontextmanager
    async def connection() -> AsyncIterator[Any]:
        conn = await connect()
        try:
            yield conn
        finally:
            await close(conn)

    return Supervisor(name, connection, work, Backoff(initial_s=0.2, max_s=config.max_backoff_s))
