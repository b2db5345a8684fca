"""The daemon skeleton: services entered in order, exited in reverse order within a shutdown deadline.

A *service* is any async context manager (an optional ``name`` attribute labels it in logs). The order of the
list is the dependency order, so the reverse order is the staged shutdown. For the node::

    store, peers (gossip), flush, api, intake (adapters + pipeline)

enters the store first and, on SIGTERM, stops intake first, then the API, then flushes, stops peers and closes
the store last. Background work lives in :class:`BackgroundService` subclasses, each owning a TaskGroup: a
crash there cancels the runner, which then shuts everything down in the same order and raises the crash.

Signals are the CLI's business: :func:`capture_signals` turns SIGTERM/SIGINT into the ``stop`` event that
:func:`run_services` waits for; a second signal cancels the main task (forced, faster shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final, Literal, Self

from drsdtp.sdnotify import SystemdNotifier, watchdog_pinger

__all__ = [
    "BackgroundService",
    "StageOutcome",
    "capture_signals",
    "run_services",
    "service_name",
]

log = logging.getLogger(__name__)

Service = AbstractAsyncContextManager[Any]
_STARTUP_ABORTED: Final = "drsdtp: stop requested during startup"


@dataclass(frozen=True, slots=True)
class StageOutcome:
    name: str
    outcome: Literal["stopped", "failed", "timed out", "forced"]
    seconds: float


def service_name(service: object) -> str:
    name = getattr(service, "name", None)
    return name if isinstance(name, str) and name else type(service).__name__


class BackgroundService:
    """A service whose work is one coroutine, :meth:`run`, owned by a TaskGroup entered with the service.

    Subclasses set ``name`` and implement :meth:`run`; :meth:`stopped` runs once the task ended (a last
    flush).
    """

    name = "background"
    _group: asyncio.TaskGroup | None = None
    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    async def stopped(self) -> None:
        """Called on exit once :meth:`run` has finished or was cancelled."""

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._task = group.create_task(self.run(), name=self.name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        group, task = self._group, self._task
        self._group = self._task = None
        if group is None or task is None:
            return
        task.cancel()
        try:
            await group.__aexit__(None, None, None)
        except BaseExceptionGroup as group_error:
            # One task, so at most one error: surface it as itself.
            raise group_error.exceptions[0] from None
        finally:
            await self.stopped()


class _Watchdog(BackgroundService):
    name = "systemd-watchdog"

    def __init__(self, notifier: SystemdNotifier, healthy: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.healthy = healthy

    async def run(self) -> None:
        await watchdog_pinger(self.notifier, healthy=self.healthy)


async def run_services(
    services: Sequence[Service],
    *,
    stop: asyncio.Event,
    shutdown_timeout: float,
    notifier: SystemdNotifier | None = None,
    healthy: Callable[[], bool] = lambda: True,
) -> list[StageOutcome]:
    """Enter ``services`` in order, serve until ``stop`` is set (or a service fails), exit them in reverse.

    Shutdown is bounded: every exit runs under one deadline, ``shutdown_timeout`` seconds after shutdown
    began; a stage still running at the deadline is cancelled and the next one starts (at its first await it
    is cancelled too, so synchronous close code still runs). Returns what happened to each stage. Errors from
    startup, from background tasks and from exits are raised together as one ExceptionGroup after all stages
    were given their chance to stop. Systemd hears READY=1 once all are entered and STOPPING=1 when stopping.
    """
    runner = asyncio.current_task()
    assert runner is not None, "run_services must run inside a task"
    notifier = notifier or SystemdNotifier(None)
    stack: list[Service] = []
    if notifier.watchdog_interval_s is not None:
        services = [_Watchdog(notifier, healthy), *services]
    errors: list[Exception] = []
    external_cancel: asyncio.CancelledError | None = None
    loop = asyncio.get_running_loop()

    try:
        with _cancel_on(stop, runner):
            for service in services:
                name = service_name(service)
                notifier.status(f"starting {name}")
                log.debug("starting %s", name)
                try:
                    await service.__aenter__()
                except Exception as exc:
                    log.error("%s failed to start: %s", name, exc)
                    errors.append(exc)
                    break
                stack.append(service)
        if not errors:
            notifier.ready(f"serving ({len(stack)} services)")
            log.info("node ready")
            await stop.wait()
            log.info("stop requested")
    except asyncio.CancelledError as exc:
        # Ours (stop set during startup), a failed BackgroundService's TaskGroup, or the caller's.
        # Ours was uncancelled on the way out, so a cancel still pending came from elsewhere.
        if runner.cancelling():
            external_cancel = exc

    notifier.stopping("stopping")
    deadline = loop.time() + shutdown_timeout
    outcomes: list[StageOutcome] = []
    while stack:
        service = stack.pop()
        name = service_name(service)
        notifier.status(f"stopping {name}")
        started = loop.time()
        outcome: Literal["stopped", "failed", "timed out", "forced"] = "stopped"
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                await service.__aexit__(None, None, None)
        except TimeoutError as exc:
            if timeout.expired():
                outcome = "timed out"
                log.error("%s did not stop before the shutdown deadline; abandoned", name)
            else:
                outcome = "failed"
                log.error("%s failed while stopping: %s", name, exc)
                errors.append(exc)
        except asyncio.CancelledError as exc:
            # A second signal (or the caller) forces the exit: the remaining stages get no more waiting time.
            outcome, deadline, external_cancel = "forced", loop.time(), exc
        except Exception as exc:
            outcome = "failed"
            log.error("%s failed while stopping: %s", name, exc)
            errors.append(exc)
        seconds = loop.time() - started
        outcomes.append(StageOutcome(name, outcome, seconds))
        log.info("%s %s in %.3f s", name, outcome, seconds)

    if errors:
        raise ExceptionGroup("drsdtp services failed", errors)
    if external_cancel is not None and runner.cancelling():
        raise external_cancel
    return outcomes


@contextlib.contextmanager
def _cancel_on(stop: asyncio.Event, task: asyncio.Task[Any]) -> Iterator[None]:
    """While the block runs (startup), setting ``stop`` cancels ``task``: a slow start can be interrupted."""
    if stop.is_set():
        raise asyncio.CancelledError(_STARTUP_ABORTED)
    waiter = asyncio.ensure_future(stop.wait())
    requested = False

    def on_stop(_: asyncio.Future[Any]) -> None:
        nonlocal requested
        if not waiter.cancelled():
            requested = True
            task.cancel(_STARTUP_ABORTED)

    waiter.add_done_callback(on_stop)
    try:
        yield
    finally:
        waiter.remove_done_callback(on_stop)
        waiter.cancel()
        if requested:
            task.uncancel()


@contextlib.contextmanager
def capture_signals(
    stop: asyncio.Event, *, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[None]:
    """For the CLI: the first SIGTERM/SIGINT sets ``stop``; the next cancels the current task (forced exit).

    Must be entered inside the running loop, in the task that should be cancelled on the second signal.
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("received %s: shutting down (send it again to force)", sig.name)
            stop.set()
        elif main is not None and not main.done():
            log.warning("received %s again: forcing shutdown", sig.name)
            main.cancel()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
