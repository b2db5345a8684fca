"""The sink's connections to PostgreSQL: one way to open (asyncpg, imported only when a sink is configured),
one way to close, and the supervised session each writer of the database runs under (jittered backoff; the
database going away is logged as one line, an unexpected error with its traceback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from drsdtp.config import PostgresConfig
from drsdtp.errors import AdapterError
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
        try:
            conn = await connect()
        except Exception as exc:
            if lost(exc):  # a server starting or shutting down refuses with a PostgresError, not OSError
                raise AdapterError(f"cannot connect to the database: {type(exc).__name__}: {exc}") from exc
            raise
        try:
            yield conn
        finally:
            await close(conn)

    async def guarded(conn: Any) -> None:
        try:
            await work(conn)
        except Exception as exc:
            if lost(exc):  # the database went away: a line in the log, not a traceback
                raise AdapterError(f"the database connection was lost: {type(exc).__name__}: {exc}") from exc
            raise

    return Supervisor(name, connection, guarded, Backoff(initial_s=0.2, max_s=config.max_backoff_s))


def lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the connection or the server going away (a closed connection, a shutdown,
    a server that cannot take connections yet), as opposed to a query the server refused."""
    import asyncpg  # the driver, imported by the connect already

    return isinstance(
        exc,
        asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError,
    )
