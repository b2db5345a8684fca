"""Shared pieces of the ingest benchmarks: a mosquitto broker, a real node to ingest into, timing helpers.
Results go out through ``bench_report.emit`` (printed, and as JSON for ``make bench``)."""

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
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from drsdtp.config import parse_config
from drsdtp.ingest.runner import AdapterRunner
from drsdtp.node.node import Node

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, server: subprocess.Popen[bytes] | None = None) -> None:
    """Until something listens on ``port``; ``server``, when given, is the process that should: its exit
    ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited with {server.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port} after {timeout:.0f} s")
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
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield port
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not go in time (mosquitto can take long to free big queues of
    sessions nobody will drain): a bench that printed its figures must not fail on its helper's exit."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def node_config(data_dir: str, adapter: dict[str, Any]) -> Any:
    """A node as `drsdtp run` builds one (write-ahead log, history, intelligence on: the defaults), with one
    adapter, on loopback ports of its own."""
    return parse_config(
        {
            "node_id": "bench",
            "data_dir": data_dir,
            "log_level": "warning",
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "adapters": [adapter],
        }
    )


@contextlib.asynccontextmanager
async def ingesting_node(
    adapter: dict[str, Any], data_dir: str | None = None
) -> AsyncIterator[AdapterRunner]:
    """A real node (every service of `drsdtp run`) in this process, ingesting from ``adapter``; yields the
    adapter's runner (its pipeline stats count what the node's sink made durable). ``data_dir`` keeps the
    node's state across two starts (the MQTT backlog drains register a session, then drain it)."""
    with contextlib.ExitStack() as stack:
        d = data_dir or stack.enter_context(tempfile.TemporaryDirectory())
        async with Node(node_config(d, adapter)) as node:
            yield node.intake.service.runners[adapter["name"]]


async def wait_applied(runner: AdapterRunner, target: int) -> float:
    """Poll (every ms) until the runner applied ``target`` readings; returns the seconds since its session
    began connecting (a source's queue may start arriving with the connect acknowledgement)."""
    stats, sup = runner.pipeline.stats, runner.supervisor.stats
    deadline = time.monotonic() + 300.0
    while stats.applied < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{runner.adapter.name}: applied {stats.applied} of {target}")
        await asyncio.sleep(0.001)
    return time.monotonic() - sup.last_attempt_monotonic


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
        # A server process importing asyncua or pymodbus takes seconds idle and far more on a loaded machine.
        wait_port(port, 120, server)
        asyncio.run(measure(port, args.seconds, args.reps))
    finally:
        stop_process(server)
    print(f"load average after: {loadavg()}")
