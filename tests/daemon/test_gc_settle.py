"""``drsdtp run`` freezes its start-up objects once every service is up, and leaves the collector on; it
times each collection's pause and the event loop's lag (what a latency tail waits out)."""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

from drsdtp.node.gc_settle import GcSettle
from drsdtp.node.loop_lag import LoopLag
from drsdtp.stats import HistogramSource
from tests.gossip.support import eventually
from tests.ingest.support import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
_LINE = re.compile(
    r"gc: froze (\d+) start-up objects; collector enabled=(\w+), thresholds \((\d+), (\d+), (\d+)\)"
)


def spawn(config: pathlib.Path, log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "drsdtp", "--log-level", "info", "run", "--config", str(config)],
            cwd=ROOT, stdout=out, stderr=out, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip


async def test_a_running_node_froze_its_start_up_objects_collector_on(tmp_path: pathlib.Path) -> None:
    config, metrics_port = tmp_path / "node.toml", free_port()
    config.write_text(
        f'node_id = "gc-1"\ndata_dir = "{tmp_path / "data"}"\n[listen]\napi = "127.0.0.1:{free_port()}"\n'
        f'metrics = "127.0.0.1:{metrics_port}"\npeer = "127.0.0.1:0"\n'
    )
    log = tmp_path / "node.log"
    proc = spawn(config, log)
    try:
        await eventually(lambda: "node ready" in log.read_text(), 60, "the node ready")
        found = _LINE.search(log.read_text())
        assert found, log.read_text()[-3000:]
        # The node's own import graph alone is tens of thousands of objects; a handful would mean the
        # freeze ran before start-up did.
        assert int(found[1]) > 10_000
        assert found[2] == "True"
        assert tuple(int(x) for x in found.groups()[2:]) == gc.get_threshold()  # the interpreter's own
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        frozen = re.search(r"^drsdtp_gc_frozen_objects (\S+)$", text, re.MULTILINE)
        assert frozen and float(frozen[1]) > 10_000, text
        assert re.search(r'^drsdtp_gc_collections_total\{generation="2"\} [1-9]', text, re.MULTILINE), text
        assert re.search(r"^drsdtp_gc_pause_seconds_count \S+$", text, re.MULTILINE), text
        lag = re.compile(r"^drsdtp_event_loop_lag_seconds_count ([1-9]\S*)$", re.MULTILINE)

        def lag_sampled() -> bool:
            return bool(lag.search(urllib.request.urlopen(url, timeout=10).read().decode()))

        await eventually(lag_sampled, 30, "the event loop's lag sampled and exported")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0, log.read_text()[-3000:]


async def test_the_service_freezes_on_entry_and_unfreezes_on_exit() -> None:
    assert gc.get_freeze_count() == 0
    settle = GcSettle()
    try:
        async with settle:
            assert settle.frozen > 0 and gc.get_freeze_count() > 0
            assert gc.isenabled()
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0  # an in-process node leaves nothing pinned behind


def _above(histogram: HistogramSource, seconds: float) -> int:
    """Observations above ``seconds`` (a bucket bound)."""
    snap = histogram.snapshot()
    at = next(count for bound, count in snap.buckets if bound == seconds)
    return int(snap.count - at)


async def test_each_collection_while_entered_is_timed() -> None:
    settle = GcSettle()
    try:
        async with settle:
            before = settle.pauses.snapshot().count
            gc.collect()
            gc.collect(0)
            timed = settle.pauses.snapshot().count
            assert timed >= before + 2  # (the interpreter may have run one of its own meanwhile)
        gc.collect()  # after exit: no longer timed
        assert settle.pauses.snapshot().count == timed
    finally:
        gc.unfreeze()


async def test_a_blocked_loop_shows_as_lag() -> None:
    """The sampler's wake-up falls due while the loop is blocked for 0.3 s: it wakes at least 0.25 s late
    (a lower bound only, which a loaded machine can only raise)."""
    async with LoopLag(interval_s=0.02) as lag:
        await asyncio.sleep(0.1)  # a few samples of a free loop
        assert lag.lag.snapshot().count > 0
        time.sleep(0.3)  # noqa: ASYNC251 - the stall under test
        await asyncio.sleep(0.1)
        assert _above(lag.lag, 0.25) >= 1
