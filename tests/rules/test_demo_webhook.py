"""The demo closes the loop end to end, with its real node process: room-1's stuck temp_2 makes the
heater's interlock refuse the thermostat's commands and raises the ``sensor-unreliable`` alarm, which the
node POSTs, signed, to the demo's webhook receiver, which checks the signature and prints it."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys

import pytest

from drsdtp.node.cluster_demo import free_port

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEBHOOK = "webhook received (signature ok): alarm raised sensor-unreliable on a/room-1 [major] from edge-a"
REFUSED = "rejected (interlock a/room-1/temp_2"
LIVENESS_S = 180  # a cap on a hang; the two lines come about 20 s in, at load 30 too


async def test_the_stuck_sensor_blocks_the_heater_and_the_webhook_gets_the_alarm(
    tmp_path: pathlib.Path,
) -> None:
    # One node, plant time 100x (rate 10): temp_2 sticks about 6 s in.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drsdtp", "demo", "--nodes", "1", "--twins", "4", "--rate", "10",
        "--duration", "300", "--data-dir", str(tmp_path), "--api", f"127.0.0.1:{free_port()}",
        "--metrics", f"127.0.0.1:{free_port()}",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    seen: set[str] = set()
    tail: list[str] = []
    try:
        try:
            async with asyncio.timeout(LIVENESS_S):  # a liveness cap, not a timing assertion
                while seen != {WEBHOOK, REFUSED}:
                    line = (await proc.stdout.readline()).decode(errors="replace")
                    assert line, "the demo ended early:\n" + "".join(tail[-40:])
                    tail.append(line)
                    del tail[:-40]
                    seen |= {s for s in (WEBHOOK, REFUSED) if s in line}
        except TimeoutError:
            missing = sorted({WEBHOOK, REFUSED} - seen)
            raise AssertionError(
                f"no {missing} in {LIVENESS_S} s; the demo's last lines:\n{''.join(tail)}"
            ) from None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert "Traceback" not in (tmp_path / "edge-a" / "node.log").read_text()
