"""Real helpers for the ingest tests: an in-memory sink and interner, a mosquitto broker process, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drsdtp.adapters.base import Quality, ReadingBatch
from drsdtp.errors import InvalidValueError
from drsdtp.ingest.runner import AdapterRunner
from drsdtp.supervisor import Backoff
from tests.ports import free_port as free_port  # the suite's callers import it from here

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class DictInterner:
    """Dense ids per name, like the engine's interner."""

    def __init__(self) -> None:
        self.twins: dict[str, int] = {}
        self.fields: dict[str, int] = {}

    def intern_twin(self, name: str) -> int:
        return self.twins.setdefault(name, len(self.twins))

    def intern_field(self, name: str) -> int:
        return self.fields.setdefault(name, len(self.fields))

    def twin_name(self, i: int) -> str:
        return next(k for k, v in self.twins.items() if v == i)

    def field_name(self, i: int) -> str:
        return next(k for k, v in self.fields.items() if v == i)


@dataclass
class Row:
    twin: str
    field: str
    value: float
    source_ms: int
    quality: Quality
    stale: bool


@dataclass
class RecordingSink:
    """An in-memory store stand-in with the engine's contract: it refuses NaN/inf in what it stores.

    Like the store-backed sink will, it writes only rows with a value; value-less BAD rows are recorded as
    health events. ``delay_s`` makes it slow (a busy core) to exercise backpressure.
    """

    interner: DictInterner
    delay_s: float = 0.0
    calls: int = 0
    rows: list[Row] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def apply(self, batch: ReadingBatch) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        stored = batch.select(batch.has_value())
        if not np.isfinite(stored.values).all():
            raise InvalidValueError("NaN or inf")
        self.calls += 1
        self.batch_sizes.append(len(batch))
        names_t = {v: k for k, v in self.interner.twins.items()}
        names_f = {v: k for k, v in self.interner.fields.items()}
        for t, f, v, s, q, st in zip(
            batch.twin_ids.tolist(),
            batch.field_ids.tolist(),
            batch.values.tolist(),
            batch.source_ms.tolist(),
            batch.quality.tolist(),
            batch.stale.tolist(),
            strict=True,
        ):
            self.rows.append(Row(names_t[t], names_f[f], v, s, Quality(q), st))
        self.changed.set()

    def values(self, twin: str, field_: str) -> list[float]:
        return [r.value for r in self.rows if r.twin == twin and r.field == field_]

    def seen(self) -> set[tuple[str, str]]:
        return {(r.twin, r.field) for r in self.rows}


async def wait_until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``within_s`` seconds (a recovery deadline)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for: {what}")
        await asyncio.sleep(0.02)


def password_file(path: Path, user: str, password: str) -> Path:
    """A mosquitto password file (hashed by mosquitto_passwd itself)."""
    path.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def terminate(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; waits for it either way. Returns the
    exit status (negative for a signal)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_port(
    port: int, timeout: float = 10.0, alive: Callable[[], bool] = lambda: True, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if not alive():
            raise AssertionError(f"server for port {port} exited: {log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.02)


class Mosquitto:
    """A real mosquitto broker on a free port, with persistence so a restart keeps sessions and queues."""

    def __init__(self, workdir: Path, *, extra_conf: str = "", anonymous: bool = True) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra_conf = extra_conf
        self.anonymous = anonymous
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"

    def write_conf(self) -> None:
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 1000000\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            # As root mosquitto drops to user 'mosquitto', which cannot read the test's private temp dir.
            + ("user root\n" if os.geteuid() == 0 else "")
            + self.extra_conf
        )

    def start(self) -> None:
        assert self.proc is None
        self.write_conf()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port, alive=lambda: self.proc is not None and self.proc.poll() is None, log=self.log)

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file (sessions, queued QoS 1 messages) and exits."""
        if self.proc is None:
            return
        terminate(self.proc, 10)
        self.proc = None

    def restart(self, down_s: float = 0.5) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@contextlib.contextmanager
def running(broker: Mosquitto) -> Iterator[Mosquitto]:
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        if os.environ.get("DRSDTP_SHOW_BROKER_LOG"):
            print(broker.log.read_text())


# Short reconnect backoff so restart tests recover well inside the 10 s the issue allows.
FAST = Backoff(initial_s=0.05, max_s=0.5, healthy_after_s=5.0)


@contextlib.asynccontextmanager
async def serving(runner: AdapterRunner, *, connect_timeout: float = 10.0) -> AsyncIterator[AdapterRunner]:
    """Run an adapter runner in a TaskGroup for the block; a crash in the runner fails the test."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(runner.run())
        try:
            async with asyncio.timeout(connect_timeout):
                await runner.supervisor.wait_connected()
            yield runner
        finally:
            task.cancel()
