"""The node's side of the serial line protocol against the firmware's golden lines, byte for byte."""

from __future__ import annotations

import math

import pytest

from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.serial import LineDecoder, SerialStats, parse_settings
from drsdtp.adapters.serial_line import checksum, command_line, seal, verify
from drsdtp.adapters.write import WriteOutcome, WriteStatus

from .golden import Golden, golden


def decoder(**extra: object) -> tuple[LineDecoder, SerialStats, list[tuple[str, WriteOutcome]]]:
    raw = {"type": "serial", "name": "fw", "port": "/dev/null", "checksum": "required", **extra}
    stats = SerialStats()
    replies: list[tuple[str, WriteOutcome]] = []
    return (
        LineDecoder(parse_settings(raw, "adapters[0]"), stats, lambda i, o: replies.append((i, o))),
        stats,
        replies,
    )


def test_crc_is_the_firmwares() -> None:
    assert checksum(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value, as test_proto.c asserts
    assert seal(b"{}") == b"{}*" + b"%04X" % checksum(b"{}")


@pytest.mark.parametrize("g", golden("B"), ids=lambda g: g.name)
def test_every_board_line_decodes(g: Golden) -> None:
    dec, stats, _ = decoder()
    out = SourceBatch(1_000)
    dec.feed(g.line + b"\n", out)
    assert not out.rejects, out.rejects
    assert stats.corrupt == 0
    assert stats.messages == 1


def test_board_lines_mean_what_the_firmware_says() -> None:
    lines = {g.name: g.line for g in golden("B")}
    dec, stats, replies = decoder()
    out = SourceBatch(1_000)
    for name in (
        "boot.power",
        "reading.basic",
        "reading.failed",
        "heartbeat",
        "ack.period",
        "error.unknown_op",
    ):
        dec.feed(lines[name] + b"\n", out)
    got = [(r.field, r.value, r.quality) for r in out.readings()]
    assert got[:2] == [("period_ms", 1000.0, Quality.GOOD), ("out", 0.0, Quality.GOOD)]  # boot: the state
    assert got[2:6] == [
        ("a0", 2500.0, Quality.GOOD),
        ("a1", 1200.0, Quality.GOOD),
        ("d2", 1.0, Quality.GOOD),
        ("out", 0.0, Quality.GOOD),
    ]
    failed = got[6]
    assert failed[0] == "a0" and math.isnan(failed[1]) and failed[2] == Quality.BAD  # null: a failed sensor
    assert ("period_ms", 500.0, Quality.GOOD) in got[-2:]  # the ack's echo
    assert {r.twin for r in out.readings()} == {"node-7"}
    assert (stats.boots, stats.heartbeats, stats.acks, stats.device_errors) == (1, 1, 1, 1)
    assert stats.lost == 4 + 2  # seq 0, 1, 2, 7 (3..6 lost), 8, 11 (9, 10 lost)
    board = stats.boards["node-7"]
    assert (board.fw, board.reset, board.up_s, board.skipped, board.errors) == ("1.0.0", "power", 3600, 2, 1)
    assert stats.skipped == 2
    assert replies == [
        ("c1", WriteOutcome(WriteStatus.ACKNOWLEDGED, "acknowledged")),
        ("c5", WriteOutcome(WriteStatus.REJECTED, "the board says: unknown op")),
    ]


@pytest.mark.parametrize("g", golden("X"), ids=lambda g: g.line.decode()[-12:])
def test_corrupt_lines_are_counted_and_never_ingested(g: Golden) -> None:
    dec, stats, _ = decoder(checksum="auto")
    out = SourceBatch(1_000)
    dec.feed(g.line + b"\n", out)
    assert len(out) == 0
    assert [r.reason for r in out.rejects] == [g.name]
    assert stats.corrupt == 1


def test_required_checksum_refuses_a_line_without_one() -> None:
    body = verify(golden("B")[2].line, True)  # the reading's JSON, without its suffix
    dec, stats, _ = decoder()
    out = SourceBatch(1_000)
    dec.feed(body + b"\n", out)
    assert [r.reason for r in out.rejects] == ["no checksum"]
    assert stats.corrupt == 1
    lenient, _, _ = decoder(checksum="auto")
    out = SourceBatch(1_000)
    lenient.feed(body + b"\n", out)
    assert len(out) == 4 and not out.rejects


def _args(outcome: str) -> tuple[str, str, object]:
    _, op, cid, *rest = outcome.split("|")
    value: object = None
    if rest:
        value = {"true": True, "false": False}.get(rest[0], rest[0])
        if op == "period":
            value = int(rest[0])
    return cid, op, value


@pytest.mark.parametrize(
    "g",
    [
        g
        for g in golden("C")
        if g.name.startswith("ok|") and "newer" not in g.line.decode() and '"on":1' not in g.line.decode()
    ],
    ids=lambda g: g.name,
)
def test_command_lines_are_the_boards_golden_ones(g: Golden) -> None:
    cid, op, value = _args(g.name)
    assert command_line(cid, op, value) == g.line + b"\n"


@pytest.mark.parametrize(
    ("op", "value", "why"),
    [
        ("period", 2.5, "whole milliseconds"),
        ("period", 4, "outside 5..60000"),
        ("period", True, "whole milliseconds"),
        ("out", 0.5, "true or false"),
        ("devid", "a/b", "devid takes"),
        ("fly", None, "unknown op"),
    ],
)
def test_values_a_board_would_refuse_are_refused_here(op: str, value: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        command_line("c1", op, value)


def test_command_ids_the_board_cannot_echo_are_refused() -> None:
    with pytest.raises(ValueError, match="command id"):
        command_line("x" * 33, "identify")
    with pytest.raises(ValueError, match="command id"):
        command_line('c"1', "identify")
    assert command_line("0123456789abcdef01234567", "identify").startswith(
        b'{"id":"0123456789abcdef01234567"'
    )
