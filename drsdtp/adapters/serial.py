"""Serial adapter (pyserial) for our sensor firmware's line protocol (``firmware/``, ``firmware/README.md``).

Line protocol: one JSON object per line (UTF-8, ``\\n`` terminated, at most ``max_line_bytes``), followed by
``*`` and its CRC-16 as 4 uppercase hex digits (:mod:`drsdtp.adapters.serial_line`)::

    {"dev":"node-7","seq":1234,"r":{"temp":21.5,"hum":40.2,"co2":null}}*3F2A
    {"dev":"node-7","seq":1235,"ts":1767225600123,"r":{"temp":21.6}}*9B01

``dev``: device id (the twin name, or mapped by ``devices``); ``seq``: uint32 counter, +1 per line, wrapping
at 2**32; ``ts``: optional epoch milliseconds (boards without a clock omit it and the receive time is used);
``r``: field -> number, boolean or null (null: the sensor failed this sample; sent as BAD without value).
Besides readings a board sends a boot line (``boot``: firmware version and reset cause), heartbeats
(``hb``), and acknowledgements (``ack``) or errors (``err``) of the commands the node wrote; each may carry
readings in ``r`` too (an ack echoes the state the command left, which completes the command as applied).

Checksum: a line whose checksum does not match is corrupt: counted (``corrupt``) and refused whole (a dead
letter, reason "bad checksum"), never ingested. ``checksum = "required"`` also refuses lines without one
(reason "no checksum"); the default ``"auto"`` accepts those from boards that send none.

Loss accounting per device: a jump of ``seq`` by ``k > 1`` counts ``k - 1`` lost lines; the same ``seq`` again
is a duplicate (dropped); a boot line, or a jump backwards, is a device restart (counted in ``restarts``, no
loss assumed). A board's heartbeat reports the readings it skipped (its line was full): counted in
``skipped``.

A line that cannot be decoded (too long, corrupt, not JSON within the limits, not a frame, a timestamp
outside int64 milliseconds) is a dead letter (:class:`~drsdtp.adapters.base.Rejected`, source = the port); a
wrongly typed field inside a good frame is counted in ``malformed`` and the frame's other fields are kept.

Writes (:class:`drsdtp.adapters.write.Writer`): ``[actuators.write] op = "out"`` (or ``"period"``,
``"identify"``, ``"config"``, ``"devid"``, ``"reset"``) sends the command line with the command's id on the
open port; the board's ack is ``acknowledged``, its error line ``rejected`` with its reason; no answer within
the attempt's timeout raises ``TimeoutError`` (the executor retries; the board acks a repeat of its last
command's id without applying it twice). One board per port.

On the line a command goes by a short tag (:func:`wire_tag`: 8 hex digits of a hash of its id, the same for
every attempt) instead of its 24 hex digits: 32 bytes less per command and ack, 2.8 ms at 115200 baud. The
board dedups on the last id it read, so the port's reader sends a command's full id where a tag could be
mistaken for that one: the first command of a session (the board's last id is unknown) and a command whose
tag equals the previous line's; a retry goes by the id its last attempt went by. The protocol is unchanged
(an id is 1-32 characters either way).

Settings::

    [[adapters]]
    type = "serial"
    name = "bench"
    port = "/dev/ttyUSB0"      # a stable udev symlink is best: /dev/serial/by-id/...
    baudrate = 115200
    devices = { "node-7" = "room-1" }   # optional device id -> twin
    checksum = "auto"          # auto | required
    max_line_bytes = 4096      # the payload size limit of a line
    max_depth = 32             # JSON limits, as for MQTT payloads (drsdtp.adapters.payloads)
    max_number_digits = 64
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drsdtp.adapters.base import AdapterStats, Rejected, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common, require_module
from drsdtp.adapters.payloads import (
    DEFAULT_LIMITS,
    PayloadError,
    PayloadLimits,
    parse_payload_limits,
    reason_of,
    value_of,
)
from drsdtp.adapters.serial_line import OPS, SEQ_MOD, Frame, command_line, parse_line
from drsdtp.adapters.settings import Table
from drsdtp.adapters.write import WriteOutcome, WriteRequest, WriteStatus, WriteTarget
from drsdtp.errors import AdapterError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.ingest.ratelog import RateLimitedLog

__all__ = [
    "BoardInfo",
    "LineDecoder",
    "SerialAdapter",
    "SerialSettings",
    "SerialStats",
    "SerialWriteTarget",
    "build",
    "parse_line",
]

_log = logging.getLogger(__name__)
_PAUSE_READINGS = 20_000  # stop reading the port while this many readings wait for the pipeline
_MAX_PENDING = 16  # commands awaiting the board's answer at once (the executor sends one per actuator)
_CORRUPT = frozenset({"bad checksum", "no checksum"})


@dataclass(frozen=True, slots=True)
class SerialSettings:
    common: CommonSettings
    port: str
    baudrate: int
    bytesize: int
    parity: str
    stopbits: float
    devices: Mapping[str, str]
    max_line_bytes: int
    limits: PayloadLimits = DEFAULT_LIMITS
    checksum_required: bool = False


@dataclass(slots=True)
class BoardInfo:
    """What a board said about itself (boot and heartbeat lines)."""

    fw: str = ""
    reset: str = ""  # the cause of its last reset: power, external, watchdog, brownout, unknown
    up_s: int = 0
    skipped: int = 0  # readings it skipped since it booted (its line was full)
    errors: int = 0  # command lines it refused since it booted


@dataclass(slots=True)
class SerialStats(AdapterStats):
    duplicates: int = 0
    restarts: int = 0
    corrupt: int = 0  # lines whose checksum did not match (or was missing where required): dropped
    boots: int = 0
    heartbeats: int = 0
    skipped: int = 0  # readings boards skipped, from their heartbeats
    acks: int = 0  # command acknowledgements received
    device_errors: int = 0  # error lines received (commands the board refused)
    last_seq: dict[str, int] = field(default_factory=dict)
    boards: dict[str, BoardInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SerialWriteTarget:
    port: str
    op: str

    @property
    def label(self) -> str:
        return f"{self.op} on {self.port}"


def parse_settings(raw: Mapping[str, Any], key: str) -> SerialSettings:
    t = Table(raw, key)
    require_module(t, "serial", "serial")
    common = parse_common(t)
    limits = parse_payload_limits(t, "max_line_bytes", 4096, lo_bytes=64, hi_bytes=1 << 20)
    settings = SerialSettings(
        common=common,
        port=t.get_str("port"),
        baudrate=t.get_int("baudrate", 115200, lo=50, hi=4_000_000),
        bytesize=t.get_int("bytesize", 8, lo=5, hi=8),
        parity=t.choice("parity", ("N", "E", "O"), "N"),
        stopbits=t.get_float("stopbits", 1.0, lo=1.0, hi=2.0),
        devices=t.str_map("devices", {}),
        max_line_bytes=limits.max_payload_bytes,
        limits=limits,
        checksum_required=t.choice("checksum", ("auto", "required"), "auto") == "required",
    )
    if settings.stopbits not in (1.0, 1.5, 2.0):
        raise t.error("stopbits", "must be 1, 1.5 or 2")
    t.done()
    return settings


TAG_HEX = 8  # a command's tag on the line: 32 bits of a hash of its id (see the module doc)


def wire_tag(command_id: str) -> str:
    """The short id a command goes by on the line: the id itself when it is no longer, else ``TAG_HEX``
    hex digits of its hash (the same on every attempt and every node)."""
    if len(command_id) <= TAG_HEX:
        return command_id
    return hashlib.blake2b(command_id.encode(), digest_size=TAG_HEX // 2).hexdigest()


def build(raw: Mapping[str, Any], key: str) -> SerialAdapter:
    return SerialAdapter(parse_settings(raw, key))


Reply = Callable[[str, WriteOutcome], None]  # (command id, outcome): an ack or error line arrived


class LineDecoder:
    """Bytes in, readings out: framing, checksums, JSON, sequence accounting, the board's own lines. Pure,
    so it is tested without a port; ``on_reply`` hears the acks and errors of commands."""

    def __init__(self, settings: SerialSettings, stats: SerialStats, on_reply: Reply | None = None) -> None:
        self._settings = settings
        self._stats = stats
        self._on_reply = on_reply
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to the next newline
        self._log = RateLimitedLog(_log, f"{settings.common.name}: bad lines")

    def feed(self, data: bytes, out: SourceBatch, received_ms: int | None = None) -> None:
        """Decode the complete lines in ``data`` (plus what came before); ``received_ms``: when it was read
        (default: the batch's receive time)."""
        now = out.received_ms if received_ms is None else received_ms
        buf = self._buf
        buf += data
        limit = self._settings.max_line_bytes
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > limit:
                self._stats.messages += 1
                self._reject(
                    out, now, "too large", f"{len(line)} bytes, more than max_line_bytes = {limit}", line
                )
                continue
            self._line(line.strip(), out, now)
        del buf[:start]
        if len(buf) > limit:
            self._stats.messages += 1
            detail = f"more than max_line_bytes = {limit} without a newline"
            self._reject(out, now, "too large", detail, bytes(buf[:limit]))
            buf.clear()
            self._skipping = True

    def _reject(self, out: SourceBatch, now: int, reason: str, detail: str, line: bytes) -> None:
        self._log.warn(reason, "%s: %s", reason, detail)
        out.reject(Rejected(self._settings.port, now, reason, detail, line))

    def _line(self, line: bytes, out: SourceBatch, now: int) -> None:
        if not line:
            return
        st = self._stats
        st.messages += 1
        try:
            frame = parse_line(line, self._settings.limits, self._settings.checksum_required)
        except Exception as exc:  # whatever a line raises is that line's error, never the session's
            reason, detail = reason_of(exc)
            if reason in _CORRUPT:
                st.corrupt += 1
            self._reject(out, now, reason, detail, line)
            return
        dev, seq = frame.dev, frame.seq
        last = st.last_seq.get(dev)
        if frame.kind == "boot":
            st.boots += 1
            st.restarts += last is not None  # a restart the board announced: its seq starts again, no loss
            info = frame.info
            st.boards[dev] = BoardInfo(fw=str(info.get("fw", "")), reset=str(info.get("reset", "")))
            _log.info(
                "%s: device %s booted (firmware %s, reset: %s)",
                self._settings.common.name,
                dev,
                info.get("fw"),
                info.get("reset"),
            )
        elif last is not None:
            delta = (seq - last) % SEQ_MOD
            if delta == 0:
                st.duplicates += 1
                return
            if delta < SEQ_MOD // 2:
                st.lost += delta - 1
            else:
                st.restarts += 1
                _log.info(
                    "%s: device %s restarted (seq %d after %d)", self._settings.common.name, dev, seq, last
                )
        st.last_seq[dev] = seq
        if frame.kind != "reading":
            self._board_line(frame)
        if frame.readings:
            self._emit(dev, frame.ts if frame.ts is not None else now, frame.readings, out)

    def _board_line(self, frame: Frame) -> None:
        st, info = self._stats, frame.info
        if frame.kind == "heartbeat":
            st.heartbeats += 1
            board = st.boards.setdefault(frame.dev, BoardInfo())
            up, skipped, errors = info.get("up_s"), info.get("skipped"), info.get("errors")
            if type(skipped) is int and skipped >= board.skipped:
                st.skipped += skipped - board.skipped  # the board's count is since its boot
                board.skipped = skipped
            if type(up) is int:
                board.up_s = up
            if type(errors) is int:
                board.errors = errors
        elif frame.kind == "ack":
            st.acks += 1
            cfg = info.get("cfg")
            detail = f"config {cfg}" if isinstance(cfg, dict) else "acknowledged"
            self._reply(info["id"], WriteOutcome(WriteStatus.ACKNOWLEDGED, detail))
        elif frame.kind == "error":
            st.device_errors += 1
            why = info["why"]
            self._log.warn("device error", "device %s refused a command: %s", frame.dev, why)
            if info["id"] is not None:
                self._reply(info["id"], WriteOutcome(WriteStatus.REJECTED, f"the board says: {why}"))

    def _reply(self, command_id: str, outcome: WriteOutcome) -> None:
        if self._on_reply is not None:
            self._on_reply(command_id, outcome)

    def _emit(self, dev: str, ts: int, readings: dict[str, Any], out: SourceBatch) -> None:
        twin = self._settings.devices.get(dev, dev)
        for name, raw in readings.items():
            try:
                value, quality = value_of(raw)
            except PayloadError as exc:
                self._stats.malformed += 1
                self._log.warn(exc.reason, "device %s field %s: %s", dev, name, exc)
                continue
            out.add(twin, name, value, ts, quality)  # null arrives as NaN with quality BAD

    def redecode(self, line: bytes, received_ms: int) -> SourceBatch:
        """A dead letter decoded again with the current settings (replay: no sequence accounting; a corrupt
        line stays corrupt)."""
        out = SourceBatch(received_ms)
        if len(line) > self._settings.max_line_bytes:
            raise PayloadError("too large", f"more than max_line_bytes = {self._settings.max_line_bytes}")
        frame = parse_line(line.strip(), self._settings.limits, self._settings.checksum_required)
        self._emit(frame.dev, frame.ts if frame.ts is not None else received_ms, frame.readings, out)
        return out


class SerialAdapter(SharedSettings):
    kind = "serial"

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self._stats = SerialStats()
        self._reader: _PortReader | None = None  # while a session holds the port

    @property
    def stats(self) -> SerialStats:
        return self._stats

    def redecode(self, source: str, payload: bytes, received_ms: int) -> SourceBatch:
        """A dead letter decoded again with the current settings; raises its error if it still fails."""
        return LineDecoder(self.settings, SerialStats()).redecode(payload, received_ms)

    def write_target(self, raw: Mapping[str, Any], key: str) -> SerialWriteTarget:
        t = Table(raw, key)
        target = SerialWriteTarget(self.settings.port, t.choice("op", OPS))
        t.done()
        return target

    async def write(self, target: WriteTarget, request: WriteRequest) -> WriteOutcome:
        assert isinstance(target, SerialWriteTarget)
        try:
            line = command_line(request.command, target.op, request.value)
        except ValueError as exc:
            return WriteOutcome(WriteStatus.REJECTED, str(exc))
        reader = self._reader
        if reader is None:
            raise AdapterError(f"{self.name}: {self.settings.port} is not open")

        def line_for(wire: str) -> bytes:  # valid: a tag is shorter hex
            return line if wire == request.command else command_line(wire, target.op, request.value)

        return await reader.command(request.command, line_for, request.timeout_s)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncIterator[SourceBatch]]:
        import serial

        s = self.settings
        try:
            port = serial.Serial(
                s.port,
                s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise AdapterError(f"{self.name}: cannot open {s.port}: {exc}") from exc
        reader = _PortReader(port.fileno(), s, self._stats, self.name)
        try:
            reader.start()
            self._reader = reader
            _log.info("%s: reading %s at %d baud", self.name, s.port, s.baudrate)
            yield reader.batches()
        finally:
            self._reader = None
            reader.stop()
            reader.abandon(AdapterError(f"{self.name}: {s.port} closed before the board answered"))
            port.close()


class _PortReader:
    """Reads the port from the event loop's selector (pausing while the pipeline is behind) and writes
    command lines on it, matching the board's answers to them by command id."""

    def __init__(self, fd: int, settings: SerialSettings, stats: SerialStats, name: str) -> None:
        self._fd = fd
        self._name = name
        self._decoder = LineDecoder(settings, stats, self._on_reply)
        self._loop = asyncio.get_running_loop()
        self._pending = SourceBatch(wall_ms())
        self._wake = asyncio.Event()
        self._error: OSError | None = None
        self._reading = False
        self._answers: dict[str, asyncio.Future[WriteOutcome]] = {}  # by the id on the line
        self._write_lock = asyncio.Lock()
        # The last command written in this session and the id it went by: the id the board remembers.
        self._last: tuple[str, str] | None = None
        self._queued = 0  # commands waiting for the write lock (bounded with the answers awaited)

    def start(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def stop(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the device went away (USB unplugged, pty closed)
            self._fail(exc)
            return
        if not data:
            self._fail(OSError("end of file"))
            return
        now = wall_ms()
        pending = self._pending
        if not len(pending) and not pending.rejects:
            pending.received_ms = now
        self._decoder.feed(data, pending, now)
        if len(pending) or pending.rejects:
            self._wake.set()
            if len(self._pending) >= _PAUSE_READINGS:
                self.stop()  # backpressure: the kernel buffer fills; the firmware's seq shows the loss

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        self.stop()
        self._wake.set()
        self.abandon(AdapterError(f"{self._name}: serial port failed: {exc}"))

    def _on_reply(self, command_id: str, outcome: WriteOutcome) -> None:
        answer = self._answers.get(command_id)
        if answer is not None and not answer.done():
            answer.set_result(outcome)  # an answer nobody waits for (a late ack) is only counted

    def abandon(self, exc: Exception) -> None:
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(exc)

    def wire_id(self, command_id: str) -> str:
        """The id ``command_id`` goes by on the line now: its tag, unless the board could take the tag for
        the last id it read (see the module doc); a retry keeps the id its last attempt went by."""
        last = self._last
        if last is not None and last[0] == command_id:
            return last[1]
        tag = wire_tag(command_id)
        if last is None or tag == last[1] or tag in self._answers:
            return command_id
        return tag

    async def command(
        self, command_id: str, line_for: Callable[[str], bytes], timeout_s: float
    ) -> WriteOutcome:
        """Writes the line of one command (``line_for`` its id on the line: :meth:`wire_id`, chosen as the
        line is written) and waits for the board's ack or error line naming that id."""
        if self._error is not None:
            raise AdapterError(f"{self._name}: serial port failed: {self._error}")
        if len(self._answers) + self._queued >= _MAX_PENDING:
            raise AdapterError(f"{self._name}: {len(self._answers)} commands already await the board")
        wire: str | None = None
        try:
            async with asyncio.timeout(timeout_s):
                self._queued += 1
                try:
                    async with self._write_lock:  # one line at a time: the board reads them one by one
                        on_line = self.wire_id(command_id)
                        if on_line in self._answers:
                            raise AdapterError(f"{self._name}: command {command_id} already awaits the board")
                        answer: asyncio.Future[WriteOutcome] = self._loop.create_future()
                        self._answers[wire := on_line] = answer
                        self._last = (command_id, wire)  # before the write: a part of a line may reach it
                        await self._write_all(line_for(wire))
                finally:
                    self._queued -= 1
                return await answer
        finally:
            if wire is not None:
                self._answers.pop(wire, None)

    async def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                raise AdapterError(f"{self._name}: write failed: {exc}") from exc
            await self._writable()

    async def _writable(self) -> None:
        writable: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not writable.done():
                writable.set_result(None)

        self._loop.add_writer(self._fd, ready)
        try:
            await writable
        finally:
            self._loop.remove_writer(self._fd)

    async def batches(self) -> AsyncIterator[SourceBatch]:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._pending) or self._pending.rejects:
                batch, self._pending = self._pending, SourceBatch(wall_ms())
                if self._error is None:
                    self.start()
                yield batch
            if self._error is not None:
                raise AdapterError(f"{self._name}: serial port failed: {self._error}")
