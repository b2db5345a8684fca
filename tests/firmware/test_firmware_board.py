"""The real firmware (.elf in simavr) on its serial line, the test speaking for the node: what the board
sends, how it takes commands, what it keeps in EEPROM, how it resets. Simulated time runs unpaced."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp.adapters.serial_line import seal

from .sim import Line, SimBoard

SCENARIO = "0 adc 0 2500\n0 adc 1 1200\n0 din 1\n"
LSB_MV = 5000 / 1024  # one ADC step


@pytest.fixture
def board(tmp_path: Path) -> Iterator[tuple[SimBoard, Line]]:
    sim = SimBoard(tmp_path, speed=0, scenario=SCENARIO, trace=True)
    line = Line(sim.link)
    yield sim, line
    line.close()
    err = sim.close()
    assert "crashed" not in " ".join(sim.events), err


def test_boot_then_readings_with_consecutive_seq(board: tuple[SimBoard, Line]) -> None:
    sim, line = board
    boot = line.frame()
    assert boot.kind == "boot" and boot.seq == 0
    assert boot.info == {"fw": "1.0.0", "reset": "power"}
    assert boot.readings == {"period_ms": 1000, "out": False}
    frames = [line.frame() for _ in range(4)]
    assert [f.seq for f in frames] == [1, 2, 3, 4]
    for f in frames:
        assert f.kind == "reading" and f.dev == "avr-1"
        assert abs(f.readings["a0"] - 2500) <= 2 * LSB_MV
        assert abs(f.readings["a1"] - 1200) <= 2 * LSB_MV
        assert f.readings["d2"] is True and f.readings["out"] is False
    sim.send("adc 1 5000")  # the sensor shorted to the rail: a failed reading, sent as null
    sim.send("din 0")
    frame, _ = line.until("reading", a1=None)
    assert frame.readings["d2"] is False
    sim.sync()
    adc = sim.times("adc")
    periods = {b - a for a, b in itertools.pairwise(adc)}
    assert all(abs(p - 1_000_000) <= 2_000 for p in periods), periods  # sampled every 1000 ms (sim time)


def test_heartbeat_every_five_seconds(board: tuple[SimBoard, Line]) -> None:
    _, line = board
    hb, before = line.until("heartbeat")
    assert hb.info == {"up_s": 5, "skipped": 0, "errors": 0}
    assert hb.readings == {"period_ms": 1000, "out": False}
    assert [f.seq for f in before] == list(range(len(before)))  # boot, then readings: nothing skipped


def test_commands_are_acknowledged_with_the_state_they_left(board: tuple[SimBoard, Line]) -> None:
    sim, line = board
    line.until("boot")
    mark = len(sim.events)
    line.command("c1", "out", True)
    ack, _ = line.until("ack", id="c1")
    assert ack.readings == {"period_ms": 1000, "out": True}
    assert sim.wait_event("pin B0 1", after=mark)
    frame, _ = line.until("reading")
    assert frame.readings["out"] is True

    sim.sync()
    n = len(sim.times("adc"))
    line.command("c2", "period", 100)
    ack, _ = line.until("ack", id="c2")
    assert ack.readings["period_ms"] == 100
    # Unpaced, the board runs ahead of what the test has read from the line; conversions after the
    # command was sent are first at the old period, then (after one interval across the change) the new.
    deadline = time.monotonic() + 20
    while True:
        sim.sync()
        periods = [b - a for a, b in itertools.pairwise(sim.times("adc")[n:])]
        if len(periods) >= 6 and all(abs(p - 100_000) <= 2_000 for p in periods[-5:]):
            break
        assert time.monotonic() < deadline, f"the sample period did not become 100 ms: {periods}"
        line.frame()  # keep the line drained so the board runs on
    odd = [p for p in periods if abs(p - 100_000) > 2_000 and abs(p - 1_000_000) > 2_000]
    assert len(odd) <= 1, periods  # only the one across the change

    mark = len(sim.events)
    line.command("c3", "identify")
    ack, _ = line.until("ack", id="c3")
    assert ack.info["cfg"] == {"fw": "1.0.0", "adc": 2, "min_ms": 5, "max_ms": 60000}
    sim.wait_event("led 1", after=mark)  # blinking

    line.command("c4", "config")
    ack, _ = line.until("ack", id="c4")
    assert ack.info["cfg"]["fw"] == "1.0.0" and ack.readings == {"period_ms": 100, "out": True}


def test_a_repeat_of_the_last_command_is_acknowledged_not_applied(board: tuple[SimBoard, Line]) -> None:
    sim, line = board
    line.until("boot")
    line.command("r1", "out", True)
    line.until("ack", id="r1")
    line.command("r1", "out", False)  # a retry whose first ack was lost reuses the id
    ack, _ = line.until("ack", id="r1")
    assert ack.readings["out"] is True
    sim.sync()  # every pin change before the ack is in events now
    pins = [e.split()[2] for e in sim.events if e.startswith("pin B0 ")]
    assert pins == ["0", "1"]  # off at reset, on once: the repeat was not applied


@pytest.mark.parametrize(
    ("sent", "why", "cid"),
    [
        (b'{"id":"e1","op":"period","ms":500}\n', "no checksum", None),
        (b'{"id":"e1","op":"period","ms":501}*B840\n', "bad checksum", None),
        (seal(b'{"id":"e2","op":"warp"}') + b"\n", "unknown op", "e2"),
        (seal(b'{"id":"e3","op":"period","ms":1}') + b"\n", "bad value", "e3"),
        (seal(b'{"id":"e4","op":"out"}') + b"\n", "missing value", "e4"),
        (seal(b'{"id":"e5","op":[1,2]}') + b"\n", "bad json", "e5"),
        (seal(b'{"op":"identify"}') + b"\n", "no id", None),
        (b"x" * 5000 + b"\n", "too long", None),
        (bytes(range(1, 10)) + b"\xff\xfe\n", "no checksum", None),
    ],
)
def test_bad_command_lines_get_an_error_line_and_the_board_goes_on(
    board: tuple[SimBoard, Line], sent: bytes, why: str, cid: str | None
) -> None:
    _, line = board
    line.until("boot")
    line.write(sent)
    err, _ = line.until("error")
    assert err.info == {"why": why, "id": cid}
    line.command("ok1", "config")  # still takes commands
    ack, _ = line.until("ack", id="ok1")
    reading, _ = line.until("reading")  # and still samples
    hb, _ = line.until("heartbeat")
    assert hb.info["errors"] == 1
    assert hb.seq > reading.seq > ack.seq > err.seq


def test_period_and_device_id_survive_resets_the_output_does_not(tmp_path: Path) -> None:
    eeprom = tmp_path / "board.eeprom"
    sim = SimBoard(tmp_path, speed=0, scenario=SCENARIO, eeprom=eeprom)
    line = Line(sim.link)
    try:
        line.until("boot")
        line.command("p1", "period", 250)
        line.until("ack", id="p1")
        line.command("p2", "devid", "node-9")
        ack, _ = line.until("ack", id="p2")
        assert ack.dev == "node-9"
        line.command("p3", "out", True)
        line.until("ack", id="p3")
        sim.send("reset")  # the reset button
        boot, _ = line.until("boot")
        assert (boot.dev, boot.seq, boot.info["reset"]) == ("node-9", 0, "external")
        assert boot.readings == {"period_ms": 250, "out": False}  # the output comes up off: the safe state
    finally:
        line.close()
        sim.close()
    sim = SimBoard(tmp_path, speed=0, scenario=SCENARIO, eeprom=eeprom)  # power cycled: the EEPROM file
    line = Line(sim.link)
    try:
        boot = line.frame()
        assert (boot.kind, boot.dev, boot.info["reset"], boot.readings["period_ms"]) == (
            "boot", "node-9", "power", 250,
        )  # fmt: skip
    finally:
        line.close()
        sim.close()


def test_the_watchdog_resets_a_board_that_stops_its_loop(board: tuple[SimBoard, Line]) -> None:
    _, line = board
    line.until("boot")
    line.command("w1", "reset")  # acknowledged, then the loop stops feeding the watchdog
    line.until("ack", id="w1")
    boot, before = line.until("boot")
    assert boot.info["reset"] == "watchdog"
    assert len(before) <= 1  # it hung once the ack was out (a reading due meanwhile may go out too)


def test_a_reset_in_the_middle_of_a_line_still_gives_a_whole_boot_line(board: tuple[SimBoard, Line]) -> None:
    sim, line = board
    line.until("boot")
    line.command("fast", "period", 5)  # the line is busy 93 % of the time: a reset nearly always cuts a line
    line.until("ack", id="fast")
    for _ in range(3):
        line.until("reading")
        sim.send("reset")
        boot, _ = line.until("boot")  # the empty line before it ends the cut one: never merged into it
        assert boot.seq == 0 and boot.info["reset"] == "external"
        line.command("fast", "period", 5)  # (the period persists; a new id would re-apply, this one acks)
        line.until("ack", id="fast")
