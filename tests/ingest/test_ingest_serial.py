"""Serial adapter over a real pseudo-terminal (the test holds the device side)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.serial import LineDecoder, SerialAdapter, SerialStats, parse_settings, wire_tag
from drsdtp.adapters.serial_line import checksum, seal, verify
from drsdtp.adapters.write import WriteOutcome, WriteRequest, WriteStatus
from drsdtp.errors import AdapterError, ConfigError
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


# ----- the firmware's protocol: checksums, boot lines, heartbeats, commands (firmware/README.md) -----


def sealed(frame_: dict[str, Any]) -> bytes:
    return seal(json.dumps(frame_, separators=(",", ":")).encode())


async def test_corrupt_lines_are_counted_and_dropped_and_a_boot_is_a_restart(
    pty: Pty, sink: RecordingSink, interner: DictInterner
) -> None:
    adapter = build_adapter(serial_config(pty.path, checksum="required"), "adapters[0]")
    assert isinstance(adapter, SerialAdapter)
    runner = AdapterRunner(adapter, sink, interner, FAST)
    good = sealed(frame("node-7", 2, t=2))
    async with serving(runner):
        pty.send(
            sealed(frame("node-7", 1, t=1)),
            good.replace(b'"t":2', b'"t":9'),  # noise on the line: the checksum no longer matches
            json.dumps(frame("node-7", 3, t=3)),  # no checksum where one is required
            sealed(frame("node-7", 4, t=4)),
            sealed(
                {"dev": "node-7", "seq": 0, "boot": {"fw": "1.0.0", "reset": "watchdog"}, "r": {"out": 0}}
            ),
            sealed(frame("node-7", 1, t=5)),
            sealed({"dev": "node-7", "seq": 2, "hb": {"up_s": 5, "skipped": 3, "errors": 0}}),
        )
        await wait_until(lambda: adapter.stats.heartbeats == 1, 10, "the heartbeat")
    stats = adapter.stats
    assert sink.values("room-1", "t") == [1.0, 4.0, 5.0]  # never 9: the corrupt line is not ingested
    assert sink.values("room-1", "out") == [0.0]
    assert (stats.corrupt, stats.lost, stats.restarts, stats.boots, stats.skipped) == (2, 2, 1, 1, 3)
    assert runner.pipeline.stats.rejected_by_reason == {"bad checksum": 1, "no checksum": 1}
    assert stats.boards["node-7"].reset == "watchdog"


class PtyBoard:
    """A board on the device end of a pty that answers command lines as ``answer`` says."""

    def __init__(self, pty: Pty, answer: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        self.pty, self.answer = pty, answer
        self.lines: list[bytes] = []
        self.seq = 0
        os.set_blocking(pty.master, False)
        asyncio.get_running_loop().add_reader(pty.master, self._on_line)
        self._buf = b""

    def _on_line(self) -> None:
        self._buf += os.read(self.pty.master, 4096)
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.lines.append(line)
            body = verify(line, True)
            reply = self.answer(json.loads(body))
            if reply is not None:
                self.seq += 1
                os.write(self.pty.master, sealed({"dev": "node-7", "seq": self.seq, **reply}) + b"\n")

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.pty.master)


def request(command: str, value: Any, timeout_s: float = 5.0) -> WriteRequest:
    return WriteRequest(command, "room-1", "out", "out", value, (), 1, timeout_s)


async def test_commands_are_written_and_answered_by_id(
    pty: Pty, sink: RecordingSink, interner: DictInterner
) -> None:
    def answer(cmd: dict[str, Any]) -> dict[str, Any] | None:
        if cmd["id"] == "silent":
            return None  # lost on the way: no answer
        if cmd.get("on") is False:
            return {"err": "bad value", "id": cmd["id"]}
        return {"ack": cmd["id"], "r": {"out": cmd["on"]}}

    adapter = build_adapter(serial_config(pty.path), "adapters[0]")
    assert isinstance(adapter, SerialAdapter)
    target = adapter.write_target({"op": "out"}, "actuators[0].write")
    with pytest.raises(AdapterError, match="not open"):
        await adapter.write(target, request("c0", True))
    runner = AdapterRunner(adapter, sink, interner, FAST)
    async with serving(runner):
        board = PtyBoard(pty, answer)
        try:
            outcomes = await asyncio.gather(
                adapter.write(target, request("c1", True)), adapter.write(target, request("c2", False))
            )
            assert list(outcomes) == [
                WriteOutcome(WriteStatus.ACKNOWLEDGED, "acknowledged"),
                WriteOutcome(WriteStatus.REJECTED, "the board says: bad value"),
            ]
            with pytest.raises(TimeoutError):
                await adapter.write(target, request("silent", True, timeout_s=0.3))
            refused = await adapter.write(target, request("c3", 0.5))
            assert refused.status == WriteStatus.REJECTED and "true or false" in refused.detail
            await wait_until(lambda: sink.values("room-1", "out") == [1.0], 10, "the ack's echo")
        finally:
            board.close()
    assert board.lines[:2] == [
        b'{"id":"c1","op":"out","on":true}*%04X' % checksum(b'{"id":"c1","op":"out","on":true}'),
        seal(b'{"id":"c2","op":"out","on":false}'),
    ]
    assert len(board.lines) == 3  # c3 never left the node
    stats = adapter.stats
    assert (stats.acks, stats.device_errors) == (1, 1)


async def test_long_command_ids_go_by_short_tags_the_board_cannot_mistake(
    pty: Pty, sink: RecordingSink, interner: DictInterner
) -> None:
    """A command id of 24 hex digits goes by its 8-digit tag on the line, answered by that tag; the full
    id where the board could take a tag for the last id it read: the session's first command (its last
    id is unknown), a tag equal to the previous line's (forced here by two commands of one tag); a retry
    goes by the id its last attempt went by (the board drops a repeat of its last id)."""
    silent: set[str] = set()

    def answer(cmd: dict[str, Any]) -> dict[str, Any] | None:
        if cmd["id"] in silent:
            return None
        return {"ack": cmd["id"], "r": {"out": cmd["on"]}}

    ids = [f"{i:024x}" for i in range(1, 4)]
    adapter = build_adapter(serial_config(pty.path), "adapters[0]")
    assert isinstance(adapter, SerialAdapter)
    target = adapter.write_target({"op": "out"}, "actuators[0].write")
    runner = AdapterRunner(adapter, sink, interner, FAST)
    async with serving(runner):
        board = PtyBoard(pty, answer)
        try:
            acked = WriteOutcome(WriteStatus.ACKNOWLEDGED, "acknowledged")
            for command in ids:
                assert await adapter.write(target, request(command, True)) == acked
            silent.add(wire_tag(ids[0]))
            with pytest.raises(TimeoutError):
                await adapter.write(target, request(ids[0], False, timeout_s=0.3))
            silent.clear()
            assert await adapter.write(target, request(ids[0], False)) == acked  # its retry
            reader = adapter._reader
            assert reader is not None
            reader._last = ("another", wire_tag(ids[1]))  # the line before had ids[1]'s tag
            assert await adapter.write(target, request(ids[1], True)) == acked
        finally:
            board.close()
    sent = [json.loads(verify(line, True))["id"] for line in board.lines]
    tags = [wire_tag(c) for c in ids]
    assert len(set(tags)) == 3 and all(len(t) == 8 for t in tags), tags
    assert sent == [ids[0], tags[1], tags[2], tags[0], tags[0], ids[1]]
    assert adapter.stats.acks == 5


def test_write_targets_name_a_board_operation() -> None:
    adapter = build_adapter(serial_config("/dev/ttyUSB9"), "adapters[0]")
    assert isinstance(adapter, SerialAdapter)
    assert adapter.write_target({"op": "period"}, "actuators[1].write").label == "period on /dev/ttyUSB9"
    with pytest.raises(ConfigError, match=r"actuators\[1\]\.write\.op"):
        adapter.write_target({"op": "launch"}, "actuators[1].write")
    with pytest.raises(ConfigError, match=r"actuators\[1\]\.write"):
        adapter.write_target({"op": "out", "pin": 3}, "actuators[1].write")
