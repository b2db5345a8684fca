"""Serial adapter over a real pseudo-terminal (the test holds the device side)."""

from __future__ import annotations

import json
import os
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.serial import LineDecoder, SerialAdapter, SerialStats, parse_settings
from drsdtp.ingest.deadletters import DeadLetterStore
from drsdtp.ingest.runner import AdapterRunner

from .support import FAST, DictInterner, RecordingSink, serving, wait_until


class Pty:
    """The device end of a pseudo-terminal; the adapter opens ``path``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def send(self, *lines: dict[str, Any] | str | bytes) -> None:
        for line in lines:
            data = line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line))
            os.write(self.master, (data if isinstance(data, bytes) else data.encode()) + b"\n")

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass  # already closed by the replug test


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def serial_config(path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "serial", "name": "bench", "port": path, "devices": {"node-7": "room-1"}, **extra}


def frame(dev: str, seq: Any, **readings: Any) -> dict[str, Any]:
    return {"dev": dev, "seq": seq, "r": readings}


async def test_json_lines_become_readings(pty: Pty, sink: RecordingSink, interner: DictInterner) -> None:
    runner = AdapterRunner(build_adapter(serial_config(pty.path), "adapters[3]"), sink, interner, FAST)
    ts = int(time.time() * 1000) - 5000
    async with serving(runner):
        pty.send(frame("node-7", 1, temp=21.5, hum=40), {**frame("node-9", 7, co2=None), "ts": ts})
        await wait_until(lambda: len(sink.rows) == 3, 10, "three readings")
    assert sink.values("room-1", "temp") == [21.5]  # mapped device id
    assert sink.values("room-1", "hum") == [40.0]
    [co2] = [r for r in sink.rows if r.field == "co2"]
    assert co2.twin == "node-9"
    assert co2.quality == Quality.BAD
    assert co2.source_ms == ts


async def test_gaps_duplicates_restarts_and_garbage_are_counted(
    pty: Pty, sink: RecordingSink, interner: DictInterner
) -> None:
    runner = AdapterRunner(
        build_adapter(serial_config(pty.path, max_line_bytes=200), "adapters[0]"), sink, interner, FAST
    )
    async with serving(runner):
        pty.send(
            frame("node-7", 1, t=1),
            frame("node-7", 2, t=2),
            frame("node-7", 5, t=5),  # 3, 4 lost
            frame("node-7", 5, t=5),  # duplicate
            b"\x00\xffgarbage",
            "{not json",
            json.dumps(frame("node-7", "six", t=6)),  # malformed
            "x" * 500,  # over-long line
            json.dumps(frame("node-7", 6, t="warm", u=6)),  # one wrong-typed field, one good
            frame("node-7", 0, t=100),  # the device restarted
            frame("node-7", 1, t=101),
        )
        await wait_until(lambda: 101.0 in sink.values("room-1", "t"), 10, "last reading applied")
    stats = runner.adapter.stats
    assert isinstance(stats, SerialStats)
    assert sink.values("room-1", "t") == [1.0, 2.0, 5.0, 100.0, 101.0]
    assert sink.values("room-1", "u") == [6.0]
    assert (stats.lost, stats.duplicates, stats.restarts) == (2, 1, 1)
    assert stats.malformed == 1  # the wrong-typed field; the other lines are refused whole, dead letters:
    assert runner.pipeline.stats.rejected_by_reason == {"not JSON": 2, "bad frame": 1, "too large": 1}
    letters = runner.pipeline.dead_letters
    assert isinstance(letters, DeadLetterStore)
    assert {letter.source for letter in letters.letters()} == {pty.path}
    assert runner.invalid == 5


async def test_unplug_and_replug_recovers(
    tmp_path: Path, sink: RecordingSink, interner: DictInterner
) -> None:
    link = tmp_path / "ttyDRSDTP"  # like a /dev/serial/by-id symlink that udev repoints on replug
    first = Pty()
    link.symlink_to(first.path)
    runner = AdapterRunner(build_adapter(serial_config(str(link)), "adapters[0]"), sink, interner, FAST)
    second: Pty | None = None
    try:
        async with serving(runner):
            first.send(frame("node-7", 1, t=1))
            await wait_until(lambda: sink.values("room-1", "t") == [1.0], 10, "before unplug")
            first.close()  # unplugged: reads fail with EIO
            await wait_until(lambda: runner.supervisor.stats.failures >= 1, 10, "adapter noticed")
            second = Pty()
            link.unlink()
            link.symlink_to(second.path)
            await wait_until(lambda: runner.reconnects >= 1, 10, "reopened after replug")
            second.send(frame("node-7", 2, t=2))
            await wait_until(lambda: sink.values("room-1", "t") == [1.0, 2.0], 10, "after replug")
    finally:
        if second is not None:
            second.close()


def test_decoder_reassembles_lines_split_across_reads() -> None:
    settings = parse_settings(serial_config("/dev/null"), "adapters[0]")
    stats = SerialStats()
    decoder = LineDecoder(settings, stats)
    out = SourceBatch(received_ms=1_000)
    data = b"".join(json.dumps(frame("d", i, v=i)).encode() + b"\r\n" for i in range(1, 4))
    for i in range(0, len(data), 7):  # a slow UART delivers a few bytes at a time
        decoder.feed(data[i : i + 7], out)
    assert [r.value for r in out.readings()] == [1.0, 2.0, 3.0]
    assert [r.source_ms for r in out.readings()] == [1_000] * 3  # no ts: the receive time
    assert stats.malformed == 0
    assert stats.lost == 0


def test_adapter_type_is_registered() -> None:
    assert isinstance(build_adapter(serial_config("/dev/ttyUSB9"), "adapters[0]"), SerialAdapter)
