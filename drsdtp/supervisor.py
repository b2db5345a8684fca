"""The one reconnect-with-backoff loop of drsdtp.

A :class:`Supervisor` runs ``async with factory() as resource: await body(resource)`` and, when either the
connect (``__aenter__``) or the body fails, waits a full-jitter exponential backoff and starts over. Adapters
use it for their broker/server sessions; peer gossip reuses it for peer streams. It never swallows
cancellation: cancelling ``run()`` exits the resource's context and stops.

Full jitter (``sleep = uniform(0, min(cap, initial * multiplier**attempt))``, the AWS architecture blog's
recommendation) spreads the reconnects of many nodes after a broker restart instead of synchronising them.
A session that stayed up for ``healthy_after_s`` resets the attempt counter, so one blip after a day of
uptime retries fast instead of inheriting the old backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from drsdtp.errors import AdapterError, ConfigError

__all__ = ["Backoff", "Supervisor", "SupervisorStats", "cancel_check", "raise_if_cancelling"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed.

    On Python 3.11 ``asyncio.wait_for`` loses a cancel that arrives just as its inner future completes (fixed
    in 3.12, gh-86296); pymodbus, asyncua and aiomqtt all call it. The task then keeps running and the
    TaskGroup waiting for it never exits, so loops that call into those libraries check here once per turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def cancel_check() -> Callable[[], None]:
    """:func:`raise_if_cancelling` for a loop that runs in the calling task, the task looked up once: on
    Python 3.11 ``asyncio.current_task`` is Python code, a measurable cost for a loop turning per reading."""
    task = asyncio.current_task()

    def check() -> None:
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    return check


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry timing. ``max_s`` caps one wait; ``healthy_after_s`` of uptime resets the attempt count."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    healthy_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ConfigError("backoff.initial_s", "must be > 0 and <= backoff.max_s")
        if self.multiplier < 1:
            raise ConfigError("backoff.multiplier", "must be >= 1")
        if self.healthy_after_s < 0:
            raise ConfigError("backoff.healthy_after_s", "must be >= 0")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the wait before retry number ``attempt`` (0-based)."""
        # min() before the power would overflow for huge attempt counts; cap the exponent instead.
        return min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))


@dataclass(slots=True)
class SupervisorStats:
    """Plain counters; the metrics module exports them."""

    starts: int = 0  # successful connects (entered the context)
    reconnects: int = 0  # connects after the first one
    failures: int = 0  # connect or session failures
    connected: bool = False
    last_error: str = ""
    last_delay_s: float = 0.0  # the most recent backoff wait
    last_change_monotonic: float = field(default_factory=time.monotonic)
    last_attempt_monotonic: float = 0.0  # when the latest connect attempt began (0: none yet)


class Supervisor(Generic[T]):
    """Keep ``body(resource)`` running over a resource built by ``factory``, reconnecting on failure.

    ``run()`` returns when ``body`` returns normally (the source is exhausted) and raises only for
    exceptions outside ``retry_on`` or for cancellation.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[], AbstractAsyncContextManager[T]],
        body: Callable[[T], Awaitable[None]],
        backoff: Backoff | None = None,
        *,
        retry_on: tuple[type[Exception], ...] = (Exception,),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.stats = SupervisorStats()
        self._factory = factory
        self._body = body
        self._backoff = backoff or Backoff()
        self._retry_on = retry_on
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._connected_event = asyncio.Event()

    async def wait_connected(self) -> None:
        """Return once the resource is up (tests and readiness probes use it)."""
        await self._connected_event.wait()

    async def run(self) -> None:
        attempt = 0
        while True:
            raise_if_cancelling()
            connected_at: float | None = None
            self.stats.last_attempt_monotonic = self._clock()
            try:
                async with self._factory() as resource:
                    connected_at = self._clock()
                    self._mark_connected()
                    await self._body(resource)
                self._mark_disconnected("")
                return
            except self._retry_on as exc:
                self._mark_disconnected(f"{type(exc).__name__}: {exc}")
                self.stats.failures += 1
                if connected_at is not None and self._clock() - connected_at >= self._backoff.healthy_after_s:
                    attempt = 0
                delay = self._rng.uniform(0.0, self._backoff.ceiling(attempt))
                attempt += 1
                self._log_failure(exc, delay)
            except BaseException:
                self._mark_disconnected("stopped")
                raise
            self.stats.last_delay_s = delay
            await self._sleep(delay)

    def _mark_connected(self) -> None:
        if self.stats.starts:
            self.stats.reconnects += 1
            _log.info("%s: reconnected (reconnect #%d)", self.name, self.stats.reconnects)
        self.stats.starts += 1
        self.stats.connected = True
        self.stats.last_change_monotonic = self._clock()
        self._connected_event.set()

    def _mark_disconnected(self, reason: str) -> None:
        if self.stats.connected:
            self.stats.last_change_monotonic = self._clock()
        self.stats.connected = False
        if reason:
            self.stats.last_error = reason
        self._connected_event.clear()

    def _log_failure(self, exc: Exception, delay: float) -> None:
        # Expected remote failures get one line; anything else is a bug somewhere, so keep the traceback.
        if isinstance(exc, AdapterError | OSError | TimeoutError):
            _log.warning("%s: %s: %s; retrying in %.2f s", self.name, type(exc).__name__, exc, delay)
        else:
            _log.error(
                "%s: unexpected %s; retrying in %.2f s", self.name, type(exc).__name__, delay, exc_info=exc
            )
