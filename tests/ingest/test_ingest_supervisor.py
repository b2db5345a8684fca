"""The one reconnect loop: full-jitter exponential backoff, reset after health, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest

from drsdtp.errors import AdapterError, ConfigError
from drsdtp.supervisor import Backoff, Supervisor


class Top(random.Random):
    """An rng whose uniform(a, b) returns b: the backoff ceiling itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FlakySource:
    """Fails to connect ``fail_connects`` times; the session then fails or ends as told."""

    def __init__(self, fail_connects: int) -> None:
        self.fail_connects = fail_connects
        self.opened = 0
        self.closed = 0

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[int]:
        if self.fail_connects > 0:
            self.fail_connects -= 1
            raise AdapterError("connection refused")
        self.opened += 1
        try:
            yield self.opened
        finally:
            self.closed += 1


async def test_exponential_backoff_is_capped_and_reconnects_are_counted() -> None:
    delays: list[float] = []

    async def record(d: float) -> None:
        delays.append(d)

    src = FlakySource(fail_connects=5)
    sessions: list[int] = []

    async def body(session: int) -> None:
        sessions.append(session)
        if session < 3:
            raise AdapterError("lost")

    sup = Supervisor(
        "t",
        src.connect,
        body,
        Backoff(initial_s=1.0, max_s=4.0, healthy_after_s=1e9),
        rng=Top(),
        sleep=record,
    )
    await sup.run()
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # 5 refused connects + 2 lost sessions
    assert sessions == [1, 2, 3]
    assert src.closed == 3
    assert (sup.stats.starts, sup.stats.reconnects, sup.stats.failures) == (3, 2, 7)


class Enough(BaseException):
    """Ends a supervisor run from inside the injected sleep (not an Exception, so never retried)."""


async def test_full_jitter_stays_under_the_ceiling() -> None:
    delays: list[float] = []

    async def record(d: float) -> None:
        delays.append(d)
        if len(delays) == 200:
            raise Enough

    backoff = Backoff(initial_s=0.5, max_s=8.0)

    async def never(_: int) -> None:
        raise AssertionError("the source never connects")

    sup = Supervisor(
        "t", FlakySource(fail_connects=1000).connect, never, backoff, rng=random.Random(1), sleep=record
    )
    with pytest.raises(Enough):
        await sup.run()
    assert all(0 <= d <= backoff.ceiling(i) for i, d in enumerate(delays))
    assert len({round(d, 6) for d in delays[10:]}) > 150  # spread out, not one fixed wait
    assert max(delays[10:]) > 6.0
    assert min(delays[10:]) < 2.0


async def test_a_healthy_session_resets_the_backoff() -> None:
    now = [0.0]
    delays: list[float] = []

    async def record(d: float) -> None:
        delays.append(d)
        now[0] += d

    src = FlakySource(fail_connects=3)

    async def body(session: int) -> None:
        now[0] += 100.0 if session == 1 else 1.0  # the first session is healthy for 100 s
        if session < 3:
            raise AdapterError("lost")

    sup = Supervisor(
        "t",
        src.connect,
        body,
        Backoff(initial_s=1.0, max_s=60.0, healthy_after_s=30.0),
        rng=Top(),
        sleep=record,
        clock=lambda: now[0],
    )
    await sup.run()
    # 3 refused connects grow the wait; a loss after 100 s of health starts at 1 s again, then grows.
    assert delays == [1.0, 2.0, 4.0, 1.0, 2.0]


async def test_cancellation_stops_and_exits_the_session() -> None:
    src = FlakySource(fail_connects=0)
    running = asyncio.Event()

    async def body(_: int) -> None:
        running.set()
        await asyncio.Event().wait()

    sup = Supervisor("t", src.connect, body, Backoff(initial_s=0.01, max_s=0.01))
    task = asyncio.create_task(sup.run())
    await running.wait()
    assert sup.stats.connected
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert src.closed == 1
    assert not sup.stats.connected


async def test_exceptions_outside_retry_on_propagate() -> None:
    async def body(_: int) -> None:
        raise KeyError("a bug")

    sup = Supervisor(
        "t", FlakySource(0).connect, body, Backoff(initial_s=0.01, max_s=0.01), retry_on=(AdapterError,)
    )
    with pytest.raises(KeyError):
        await sup.run()


def test_backoff_validation() -> None:
    with pytest.raises(ConfigError):
        Backoff(initial_s=2.0, max_s=1.0)
    with pytest.raises(ConfigError):
        Backoff(multiplier=0.5)
    assert Backoff(initial_s=1, max_s=30).ceiling(10_000) == 30
