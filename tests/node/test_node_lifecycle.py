"""Lifecycle: ordered startup, staged reverse shutdown under a deadline, failures, signals; real tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drsdtp.lifecycle import BackgroundService, capture_signals, run_services
from drsdtp.sdnotify import SystemdNotifier

REPO = Path(__file__).resolve().parents[2]


class Recorder(BackgroundService):
    """A service that records enter/exit in a shared journal; behaviour is injected per test."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        enter_fails: BaseException | None = None,
        enter_blocks: bool = False,
        exit_blocks: bool = False,
        exit_fails: Exception | None = None,
        crash: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.journal = journal
        self.enter_fails = enter_fails
        self.enter_blocks = enter_blocks
        self.exit_blocks = exit_blocks
        self.exit_fails = exit_fails
        self.crash = crash
        self.entered = asyncio.Event()

    async def __aenter__(self) -> Recorder:
        self.journal.append(f"enter {self.name}")
        if self.enter_fails is not None:
            raise self.enter_fails
        if self.enter_blocks:
            self.entered.set()
            await asyncio.Event().wait()
        await super().__aenter__()
        self.entered.set()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Recorded before the first await: runs even when the deadline has already passed.
        self.journal.append(f"exit {self.name}")
        if self.exit_blocks:
            await asyncio.Event().wait()
        await super().__aexit__(*exc_info)
        if self.exit_fails is not None:
            raise self.exit_fails
        self.journal.append(f"exited {self.name}")

    async def run(self) -> None:
        if self.crash is None:
            await asyncio.Event().wait()
        else:
            await self.crash.wait()
            raise RuntimeError(f"{self.name} crashed")


def names(journal: list[str], prefix: str) -> list[str]:
    return [e.split(" ", 1)[1] for e in journal if e.startswith(prefix + " ")]


async def run_until_ready(
    services: list[Recorder], **kw: object
) -> tuple[asyncio.Task[object], asyncio.Event]:
    stop = asyncio.Event()
    task: asyncio.Task[object] = asyncio.create_task(run_services(services, stop=stop, **kw))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        await services[-1].entered.wait()
    return task, stop


async def test_services_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    services = [Recorder(n, journal) for n in ("store", "peers", "flush", "intake")]
    task, stop = await run_until_ready(services, shutdown_timeout=10)
    assert names(journal, "enter") == ["store", "peers", "flush", "intake"]
    assert names(journal, "exit") == []
    stop.set()
    async with asyncio.timeout(10):
        outcomes = await task
    assert names(journal, "exited") == ["intake", "flush", "peers", "store"]
    assert [(o.name, o.outcome) for o in outcomes] == [  # type: ignore[attr-defined]
        ("intake", "stopped"),
        ("flush", "stopped"),
        ("peers", "stopped"),
        ("store", "stopped"),
    ]


async def test_a_hung_stage_is_abandoned_at_the_deadline_and_the_rest_still_stop() -> None:
    journal: list[str] = []
    services = [
        Recorder("store", journal),
        Recorder("peers", journal, exit_blocks=True),
        Recorder("intake", journal),
    ]
    task, stop = await run_until_ready(services, shutdown_timeout=0.2)
    stop.set()
    async with asyncio.timeout(10):
        outcomes = await task
    assert [(o.name, o.outcome) for o in outcomes] == [  # type: ignore[attr-defined]
        ("intake", "stopped"),
        ("peers", "timed out"),
        ("store", "timed out"),  # past the deadline: cancelled at its first await ...
    ]
    assert names(journal, "exit") == ["intake", "peers", "store"]  # ... but its synchronous close ran
    assert names(journal, "exited") == ["intake"]


async def test_a_failing_start_stops_what_started_and_raises() -> None:
    journal: list[str] = []
    services = [
        Recorder("store", journal),
        Recorder("peers", journal, enter_fails=OSError("address in use")),
        Recorder("intake", journal),
    ]
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await run_services(services, stop=asyncio.Event(), shutdown_timeout=10)
    assert [str(e) for e in info.value.exceptions] == ["address in use"]
    assert names(journal, "enter") == ["store", "peers"]  # intake never started
    assert names(journal, "exited") == ["store"]  # peers never entered, so it is not exited


async def test_a_crashing_background_task_shuts_the_node_down_in_order() -> None:
    journal: list[str] = []
    crash = asyncio.Event()
    services = [
        Recorder("store", journal),
        Recorder("peers", journal, crash=crash),
        Recorder("intake", journal),
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(services, stop=stop, shutdown_timeout=10))
    async with asyncio.timeout(10):
        await services[-1].entered.wait()
    crash.set()
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await task
    assert not stop.is_set()  # nobody asked to stop: the crash did
    assert [str(e) for e in info.value.exceptions] == ["peers crashed"]
    assert names(journal, "exit") == ["intake", "peers", "store"]
    assert names(journal, "exited") == ["intake", "store"]  # peers raised its crash from __aexit__


async def test_the_runner_is_not_left_cancelled_after_a_crash() -> None:
    journal: list[str] = []
    crash = asyncio.Event()
    crash.set()  # crashes as soon as it runs
    with pytest.raises(ExceptionGroup):
        async with asyncio.timeout(10):
            await run_services(
                [Recorder("a", journal, crash=crash)], stop=asyncio.Event(), shutdown_timeout=10
            )
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
    await asyncio.sleep(0)  # would raise CancelledError if a cancellation were still pending


async def test_an_error_while_stopping_does_not_skip_later_stages() -> None:
    journal: list[str] = []
    services = [Recorder("store", journal), Recorder("peers", journal, exit_fails=ValueError("flush failed"))]
    task, stop = await run_until_ready(services, shutdown_timeout=10)
    stop.set()
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await task
    assert [str(e) for e in info.value.exceptions] == ["flush failed"]
    assert names(journal, "exited") == ["store"]


async def test_stop_during_a_slow_start_interrupts_it() -> None:
    journal: list[str] = []
    slow = Recorder("replay", journal, enter_blocks=True)
    services = [Recorder("store", journal), slow, Recorder("intake", journal)]
    stop = asyncio.Event()
    task = asyncio.create_task(run_services(services, stop=stop, shutdown_timeout=10))
    async with asyncio.timeout(10):
        await slow.entered.wait()
    stop.set()
    async with asyncio.timeout(10):
        outcomes = await task
    assert names(journal, "enter") == ["store", "replay"]
    assert [o.name for o in outcomes] == ["store"]
    assert not task.cancelled()


async def test_stop_already_set_starts_nothing() -> None:
    journal: list[str] = []
    stop = asyncio.Event()
    stop.set()
    assert await run_services([Recorder("a", journal)], stop=stop, shutdown_timeout=1) == []
    assert journal == []


async def test_cancelling_the_runner_still_stops_everything_then_propagates() -> None:
    journal: list[str] = []
    services = [Recorder("store", journal), Recorder("intake", journal)]
    task, _ = await run_until_ready(services, shutdown_timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert names(journal, "exited") == ["intake", "store"]


async def test_systemd_hears_ready_then_stopping_and_the_watchdog_runs(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        journal: list[str] = []
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000"}
        with SystemdNotifier.from_env(env) as notifier:
            services = [Recorder("store", journal)]
            task, stop = await run_until_ready(services, shutdown_timeout=10, notifier=notifier)
            messages: list[bytes] = []
            async with asyncio.timeout(10):
                while b"WATCHDOG=1" not in messages or not any(m.startswith(b"READY=1") for m in messages):
                    messages.append(await loop.sock_recv(sock, 4096))
            stop.set()
            async with asyncio.timeout(10):
                outcomes = await task
            while True:
                try:
                    messages.append(sock.recv(4096))
                except BlockingIOError:
                    break
    ready = next(i for i, m in enumerate(messages) if m.startswith(b"READY=1"))
    stopping = next(i for i, m in enumerate(messages) if m.startswith(b"STOPPING=1"))
    assert messages.index(b"STATUS=starting store") < ready < stopping
    assert messages.index(b"STATUS=stopping store") > stopping
    # The watchdog is a stage of its own: first in, last out, so it pings through the whole shutdown.
    assert [o.name for o in outcomes] == ["store", "systemd-watchdog"]  # type: ignore[attr-defined]


async def test_capture_signals_first_stops_then_forces() -> None:
    stop = asyncio.Event()
    forced = asyncio.Event()

    async def main() -> None:
        with capture_signals(stop, signals=(signal.SIGUSR1,)):
            os.kill(os.getpid(), signal.SIGUSR1)
            await stop.wait()
            os.kill(os.getpid(), signal.SIGUSR1)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                forced.set()
                raise

    task = asyncio.create_task(main())
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert stop.is_set()
    assert forced.is_set()
    # Handlers are removed on exit: SIGUSR1 is back to its default disposition.
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from drsdtp.lifecycle import BackgroundService, capture_signals, run_services

    class Service(BackgroundService):
        def __init__(self, name):
            self.name = name
        async def __aenter__(self):
            await super().__aenter__()
            if self.name == "intake":  # the last service: the node is up
                print("ready", flush=True)
            return self
        async def run(self):
            await asyncio.Event().wait()
        async def stopped(self):
            print("stopped", self.name, flush=True)

    async def main():
        stop = asyncio.Event()
        with capture_signals(stop):
            services = [Service("store"), Service("intake")]
            outcomes = await run_services(services, stop=stop, shutdown_timeout=5)
        print("outcomes", [o.outcome for o in outcomes], flush=True)

    asyncio.run(main())
    """
)


def test_sigterm_stops_a_real_process_gracefully() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["stopped intake", "stopped store", "outcomes ['stopped', 'stopped']"]
