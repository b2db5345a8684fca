"""Firmware benchmark: the real .elf in simavr (firmware/build/fwsim), its UART at 115200 baud on a pty.

1) Readings per second the board sustains at 115200 baud, per sample period: reading lines counted between
   two heartbeats (exactly 5 s apart in simulated time, by the board's own timer), against what the line can
   carry (11 520 bytes/s over the measured line length) and what the period asks for; the readings the
   board skipped because its line was full (its heartbeat says) show the limit.
2) Latency from an ADC sample to durable twin state, with the simulation paced to the wall clock:
   the board's part (ADC conversion -> the line's last byte on the wire) in simulated time, exact; the
   host's part (that byte -> the change on a Watch stream, which the node sends once the reading is in its
   write-ahead log) on the wall clock, against a bare reader of the same pty in the same run.

usage: python benches/bench_firmware.py [--quick] [--samples 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drsdtp.adapters.serial_line import seal
from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.daemon.floods import Daemon
from tests.firmware.sim import Line, SimBoard, build_firmware

LINE_BYTES_PER_S = 115_200 / 10  # 8N1: ten bits a byte
PERIOD_MS = 100  # the latency runs' sample period
BASE_MV, STEP_MV, VALUES = 1000, 20, 150  # fwsim's ramp: each sample reads its own value, 1000, 1020 ... mV


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ----- 1) throughput -------------------------------------------------------------------------------------


def sustained(tmp: Path, periods: list[int], windows: int) -> None:
    print("1) readings/s at 115200 baud, counted between heartbeats (simulated time)")
    print(
        f"   {'period':>8} {'asked/s':>8} {'sent/s':>8} {'skipped/s':>10} {'line B':>7} "
        f"{'line max/s':>10} {'of max':>7}"
    )
    tmp.mkdir()
    board = SimBoard(tmp, speed=0, scenario="0 adc 0 2500\n0 adc 1 1200\n")
    line = Line(board.link)
    try:
        line.until("boot")
        for period in periods:
            line.command(f"p{period}", "period", period)
            line.until("ack", id=f"p{period}")
            first, _ = line.until("heartbeat")
            readings, last = 0, first
            for _ in range(windows):
                last, frames = line.until("heartbeat", limit_s=120)
                readings += sum(f.kind == "reading" for f in frames)
            seconds = 5.0 * windows
            size = reading_line_bytes(line)
            skipped = (last.info["skipped"] - first.info["skipped"]) / seconds
            cap = LINE_BYTES_PER_S / size
            rate = readings / seconds
            print(
                f"   {period:>6}ms {1000 / period:>8.1f} {rate:>8.1f} {skipped:>10.1f} {size:>7} "
                f"{cap:>10.1f} {rate / cap:>6.0%}"
            )
    finally:
        line.close()
        board.close()


def reading_line_bytes(line: Line) -> int:
    """The length of the board's next reading line, newline included (its JSON is compact, like this)."""
    frame, _ = line.until("reading")
    body = json.dumps(
        {"dev": frame.dev, "seq": frame.seq, "r": frame.readings}, separators=(",", ":")
    ).encode()
    return len(seal(body)) + 1


# ----- 2) latency ----------------------------------------------------------------------------------------


def sample_of(board: SimBoard, mv: float) -> int | None:
    """The index in ``board.events`` of the newest ADC0 conversion that read ``mv`` (fwsim's ramp gives
    each conversion its own value; the reading is that value within an ADC step)."""
    value = BASE_MV + STEP_MV * round((mv - BASE_MV) / STEP_MV)
    events = board.events
    for i in range(len(events) - 1, -1, -1):
        event = events[i]
        if event.startswith("adc ") and int(event.split()[1]) == value:
            return i
    return None


def board_and_eol(board: SimBoard, adc_index: int) -> tuple[float, float] | None:
    """(board part in ms of simulated time, wall time the line's last byte was reported) of a sample."""
    t_adc = int(board.events[adc_index].split()[-1])
    for i in range(adc_index + 1, len(board.events)):
        if board.events[i].startswith("eol "):
            return (int(board.events[i].split()[-1]) - t_adc) / 1000, board.stamps[i]
    return None


def bare(board: SimBoard, samples: int) -> tuple[list[float], list[float]]:
    """A bare reader of the pty: (board parts ms, host parts ms) per sample."""
    line = Line(board.link)
    boards: list[float] = []
    hosts: list[float] = []
    try:
        while len(hosts) < samples:
            frame = line.frame()
            now = time.monotonic()
            if frame.kind != "reading" or frame.readings.get("a0") is None:
                continue
            index = sample_of(board, float(frame.readings["a0"]))
            got = None if index is None else board_and_eol(board, index)
            if got is None:
                continue
            boards.append(got[0])
            hosts.append((now - got[1]) * 1000)
    finally:
        line.close()
    return boards, hosts


NODE_CONFIG = (
    "[wal]\nfsync_interval_ms = 2\n"
    '[[adapters]]\ntype = "serial"\nname = "board"\nport = "{port}"\nchecksum = "required"\n'
    'devices = {{ "avr-1" = "board-1" }}\n'
)


async def through_node(tmp: Path, board: SimBoard, samples: int) -> tuple[list[float], list[float]]:
    daemon = Daemon(tmp, NODE_CONFIG.format(port=board.link), node_id="fw-bench")
    boards: list[float] = []
    hosts: list[float] = []
    try:
        await daemon.start()
        channel, stub = connect(Address("127.0.0.1", daemon.api_port))
        async with channel:
            call = stub.Watch(api_pb2.WatchRequest(twin_ids=["board-1"], fields=["a0"]))
            async for change in call:
                now = time.monotonic()
                if change.origin != "ingest":
                    continue
                a0 = next((f.f64 for f in change.twin.fields if f.name == "a0"), None)
                index = None if a0 is None else sample_of(board, a0)
                got = None if index is None else board_and_eol(board, index)
                if got is None:
                    continue
                boards.append(got[0])
                hosts.append((now - got[1]) * 1000)
                if len(hosts) >= samples:
                    call.cancel()
                    break
    finally:
        daemon.stop()
    return boards, hosts


def latency(tmp: Path, samples: int) -> None:
    print(
        f"\n2) latency ADC sample -> durable twin state, {samples} samples at {PERIOD_MS} ms, "
        "paced to the wall clock"
    )
    tmp.mkdir()
    board = SimBoard(tmp, speed=1.0, scenario="0 adc 1 1200\n", trace=True)
    try:
        line = Line(board.link)
        line.until("boot")
        line.command("bench", "period", PERIOD_MS)
        line.until("ack", id="bench")
        line.close()
        board.send(f"ramp 0 {BASE_MV} {STEP_MV} {VALUES}")
        b_boards, b_hosts = bare(board, samples)
        n_boards, n_hosts = asyncio.run(through_node(tmp, board, samples))
    finally:
        board.close()
    rows = [
        ("board: ADC -> last byte on the wire (sim)", n_boards + b_boards, None),
        ("host, bare pty reader: last byte -> line read", b_hosts, None),
        ("host, node: last byte -> durable, on Watch", n_hosts, b_hosts),
        ("end to end through the node", [b + h for b, h in zip(n_boards, n_hosts, strict=True)], None),
    ]
    print(f"   {'':50} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
    for label, values, base in rows:
        ratio = f"{statistics.median(values) / statistics.median(base):7.1f}x" if base else ""
        print(f"   {label:50} {pct(values, 50):8.2f} {pct(values, 99):8.2f} {ratio:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few periods, one window, 20 samples")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    build_firmware()
    periods = [20, 5] if args.quick else [1000, 100, 20, 10, 5]
    with tempfile.TemporaryDirectory() as tmp:
        sustained(Path(tmp) / "rate", periods, 1 if args.quick else 2)
        latency(Path(tmp) / "latency", 20 if args.quick else args.samples)


if __name__ == "__main__":
    main()
