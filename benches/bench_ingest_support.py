"""Shared pieces of the ingest benchmarks: a mosquitto broker, a store-backed sink, timing helpers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from drsdtp._core import Store
from drsdtp.adapters.base import ReadingBatch

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.05)


@contextlib.contextmanager
def mosquitto() -> Iterator[int]:
    """A loopback broker that queues QoS 0 and 1 for offline persistent sessions (backlog drains).

    Otherwise mosquitto defaults, e.g. at most 20 unacknowledged QoS 1 messages per MQTT 3.1.1 client."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 10000000\nmax_queued_bytes 0\nqueue_qos0_messages true\n"
            "log_dest stderr\nlog_type error\n" + ("user root\n" if os.geteuid() == 0 else "")
        )
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
        try:
            wait_port(port)
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


class StoreSink:
    """What the node's store-backed sink does: rows with a value go to ``Store.write_batch``; big batches in a
    thread (the call releases the GIL, so decoding the next batch overlaps with it), small ones inline (a
    thread hop costs 50-200 us, more than writing a few rows)."""

    def __init__(self, store: Store, inline_below: int = 2000) -> None:
        self.store = store
        self.inline_below = inline_below
        self.rows = 0
        self.calls = 0
        self.delta_bytes = 0

    async def apply(self, batch: ReadingBatch) -> None:
        b = batch.select(batch.has_value())
        args = (b.twin_ids, b.field_ids, b.values, b.source_ms)
        if len(b) < self.inline_below:
            delta = self.store.write_batch(*args)
        else:
            delta = await asyncio.to_thread(self.store.write_batch, *args)
        self.rows += len(b)
        self.calls += 1
        self.delta_bytes += len(delta)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_with_server(
    script: str,
    title: str,
    serve: Callable[[int], Coroutine[Any, Any, None]],
    measure: Callable[[int, float, int], Coroutine[Any, Any, None]],
    *,
    seconds: float,
) -> None:
    """The benchmark's command line: ``script serve PORT`` runs the server; otherwise start that server in a
    subprocess (it must not share the measuring process) and run ``measure(port, seconds, reps)``."""
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=seconds)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"drsdtp {title} ingest benchmark; load average {loadavg()}")
    port = free_port()
    server = subprocess.Popen([sys.executable, script, "serve", str(port)])
    try:
        wait_port(port, 30)
        asyncio.run(measure(port, args.seconds, args.reps))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"load average after: {loadavg()}")
