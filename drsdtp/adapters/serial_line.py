"""The serial line protocol of our sensor firmware: checksums, board lines and command lines.

Pure functions, shared by the adapter (:mod:`drsdtp.adapters.serial`), its tests and the firmware's golden
lines (``firmware/protocol/golden.txt``: both ends agree byte for byte). The protocol is described in
``firmware/README.md``; in short, every line both ways is a JSON object, ``*``, and the CRC-16/CCITT-FALSE
of the JSON as 4 uppercase hex digits::

    {"dev":"node-7","seq":1,"r":{"a0":2500,"a1":1200,"d2":true,"out":false}}*304B   board -> node
    {"id":"c1","op":"period","ms":500}*B840                                        node -> board

A board line is a reading (``r``), a boot line (``boot``: firmware version, reset cause), a heartbeat
(``hb``), an acknowledgement of a command (``ack``: its id) or an error (``err``: why, ``id``); every one
carries ``dev`` and ``seq`` and may carry readings in ``r`` (an ack echoes the state the command left).
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any, Final, Literal, NamedTuple

from drsdtp.adapters.payloads import PayloadError, PayloadLimits, load_json

__all__ = [
    "MAX_COMMAND_BYTES",
    "OPS",
    "Frame",
    "checksum",
    "command_line",
    "parse_line",
    "seal",
    "verify",
]

SEQ_MOD: Final = 1 << 32
MAX_TS: Final = 1 << 62  # epoch ms a timestamp may have (inside int64 whatever the device claims)
MAX_COMMAND_BYTES: Final = 127  # the board's command line limit, without the newline
OPS: Final = ("period", "out", "identify", "config", "devid", "reset")
PERIOD_MS: Final = (5, 60_000)  # the board's bounds
_NAME = re.compile(r"[A-Za-z0-9._:-]+")
_HEX = frozenset(b"0123456789ABCDEF")

Kind = Literal["reading", "boot", "heartbeat", "ack", "error"]


def checksum(body: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), what the firmware's proto_crc16 computes."""
    return binascii.crc_hqx(body, 0xFFFF)


def seal(body: bytes) -> bytes:
    """``body`` with its checksum suffix (no newline)."""
    return body + b"*%04X" % checksum(body)


def verify(line: bytes, required: bool) -> bytes:
    """The JSON of a line whose checksum matches; a PayloadError ("bad checksum", or "no checksum" when
    ``required``) otherwise. A line without a suffix passes unchanged when not required."""
    if len(line) >= 5 and line[-5] == 0x2A and _HEX.issuperset(line[-4:]):
        body, said = line[:-5], int(line[-4:], 16)
        got = checksum(body)
        if got != said:
            raise PayloadError("bad checksum", f"line says {said:04X}, its bytes give {got:04X}")
        return body
    if required:
        raise PayloadError("no checksum", 'the line does not end in "*" and 4 uppercase hex digits')
    return line


class Frame(NamedTuple):
    dev: str
    seq: int
    ts: int | None
    readings: dict[str, Any]
    kind: Kind
    info: dict[str, Any]  # boot/hb: that object; ack: {"id", "cfg"}; error: {"why", "id"}; reading: {}


def parse_line(line: bytes, limits: PayloadLimits, checksum_required: bool = False) -> Frame:
    """One line (without its newline) -> its frame; a PayloadError for anything that is not one."""
    msg = load_json(verify(line, checksum_required), limits)
    if type(msg) is not dict:
        raise PayloadError("not an object", repr(line[:60]))
    dev, seq, readings = msg.get("dev"), msg.get("seq"), msg.get("r", {})
    if (
        type(dev) is not str
        or not dev
        or type(seq) is not int
        or not 0 <= seq < SEQ_MOD
        or type(readings) is not dict
    ):
        raise PayloadError("bad frame", "needs dev (string), seq (uint32) and r (object)")
    ts = msg.get("ts")
    if ts is not None and (type(ts) is not int or not -MAX_TS < ts < MAX_TS):
        raise PayloadError("bad timestamp", f"ts must be integer epoch ms, got {str(ts)[:40]}")
    kind: Kind = "reading"
    info: dict[str, Any] = {}
    if "boot" in msg:
        kind, info = "boot", _object(msg["boot"], "boot")
    elif "hb" in msg:
        kind, info = "heartbeat", _object(msg["hb"], "hb")
    elif "ack" in msg:
        kind, info = "ack", {"id": _text(msg["ack"], "ack"), "cfg": msg.get("cfg")}
    elif "err" in msg:
        cid = msg.get("id")
        kind, info = "error", {"why": _text(msg["err"], "err"), "id": cid if type(cid) is str else None}
    elif "r" not in msg:
        raise PayloadError("bad frame", "needs r (readings), boot, hb, ack or err")
    return Frame(dev, seq, ts, readings, kind, info)


def _object(raw: Any, key: str) -> dict[str, Any]:
    if type(raw) is not dict:
        raise PayloadError("bad frame", f"{key} must be an object")
    return raw


def _text(raw: Any, key: str) -> str:
    if type(raw) is not str:
        raise PayloadError("bad frame", f"{key} must be a string")
    return raw


def command_line(command_id: str, op: str, value: Any = None) -> bytes:
    """The line (with checksum and newline) that sends command ``command_id`` to a board; a ValueError
    naming what is wrong for a value the operation cannot carry or a line the board would refuse."""
    if not 1 <= len(command_id) <= 32 or not _NAME.fullmatch(command_id):
        raise ValueError(f"command id {command_id!r}: 1 to 32 of A-Z a-z 0-9 . _ : -")
    msg: dict[str, Any] = {"id": command_id, "op": op}
    if op == "period":
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ValueError(f"period takes whole milliseconds, got {value!r}")
        if not PERIOD_MS[0] <= value <= PERIOD_MS[1]:
            raise ValueError(f"period {value:g} ms is outside {PERIOD_MS[0]}..{PERIOD_MS[1]} ms")
        msg["ms"] = int(value)
    elif op == "out":
        if isinstance(value, int | float) and value in (0, 1):
            value = bool(value)
        if not isinstance(value, bool):
            raise ValueError(f"out takes true or false (or 1 or 0), got {value!r}")
        msg["on"] = value
    elif op == "devid":
        if not isinstance(value, str) or not 1 <= len(value) <= 24 or not _NAME.fullmatch(value):
            raise ValueError(f"devid takes 1 to 24 of A-Z a-z 0-9 . _ : -, got {value!r}")
        msg["dev"] = value
    elif op not in OPS:
        raise ValueError(f"unknown op {op!r} (one of {', '.join(OPS)})")
    line = seal(json.dumps(msg, separators=(",", ":")).encode())
    if len(line) > MAX_COMMAND_BYTES:  # cannot happen within the limits above; kept as the board's bound
        raise ValueError(f"command line of {len(line)} bytes, more than the board's {MAX_COMMAND_BYTES}")
    return line + b"\n"
