"""Serial adapter (pyserial) for our sensor firmware's line protocol.

Line protocol: one JSON object per line (UTF-8, ``\\n`` terminated, at most ``max_line_bytes``)::

    {"dev": "node-7", "seq": 1234, "r": {"temp": 21.5, "hum": 40.2, "co2": null}}
    {"dev": "node-7", "seq": 1235, "ts": 1767225600123, "r": {"temp": 21.6}}

``dev``: device id (the twin name, or mapped by ``devices``); ``seq``: uint32 counter, +1 per line, wrapping
at 2**32; ``ts``: optional epoch milliseconds (boards without a clock omit it and the receive time is used);
``r``: field -> number, boolean or null (null: the sensor failed this sample; sent as BAD without value).

Loss accounting per device: a jump of ``seq`` by ``k > 1`` counts ``k - 1`` lost lines; the same ``seq`` again
is a duplicate (dropped); a jump backwards is a device restart (counted in ``restarts``, no loss assumed).

A line that cannot be decoded (too long, not JSON within the limits, not a frame, a timestamp outside int64
milliseconds) is a dead letter (:class:`~drsdtp.adapters.base.Rejected`, source = the port); a wrongly typed
field inside a good frame is counted in ``malformed`` and the frame's other fields are kept.

Settings::

    [[adapters]]
    type = "serial"
    name = "bench"
    port = "/dev/ttyUSB0"      # a stable udev symlink is best: /dev/serial/by-id/...
    baudrate = 115200
    devices = { "node-7" = "room-1" }   # optional device id -> twin
    max_line_bytes = 4096      # the payload size limit of a line
    max_depth = 32             # JSON limits, as for MQTT payloads (drsdtp.adapters.payloads)
    max_number_digits = 64
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from drsdtp.adapters.base import AdapterStats, Rejected, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common, require_module
from drsdtp.adapters.payloads import (
    DEFAULT_LIMITS,
    PayloadError,
    PayloadLimits,
    load_json,
    parse_payload_limits,
    reason_of,
    value_of,
)
from drsdtp.adapters.settings import Table
from drsdtp.errors import AdapterError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.ingest.ratelog import RateLimitedLog

__all__ = ["LineDecoder", "SerialAdapter", "SerialSettings", "SerialStats", "build"]

_log = logging.getLogger(__name__)
_SEQ_MOD = 1 << 32
_MAX_TS = 1 << 62  # epoch ms a timestamp may have (inside int64 whatever the device claims)
_PAUSE_READINGS = 20_000  # stop reading the port while this many readings wait for the pipeline


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


@dataclass(slots=True)
class SerialStats(AdapterStats):
    duplicates: int = 0
    restarts: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)


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
    )
    if settings.stopbits not in (1.0, 1.5, 2.0):
        raise t.error("stopbits", "must be 1, 1.5 or 2")
    t.done()
    return settings


def build(raw: Mapping[str, Any], key: str) -> SerialAdapter:
    return SerialAdapter(parse_settings(raw, key))


class Frame(NamedTuple):
    dev: str
    seq: int
    ts: int | None
    readings: dict[str, Any]


def parse_line(line: bytes, limits: PayloadLimits) -> Frame:
    """One line -> its frame; a PayloadError for anything that is not one."""
    msg = load_json(line, limits)
    if type(msg) is not dict:
        raise PayloadError("not an object", repr(line[:60]))
    dev, seq, readings = msg.get("dev"), msg.get("seq"), msg.get("r")
    if (
        type(dev) is not str
        or not dev
        or type(seq) is not int
        or not 0 <= seq < _SEQ_MOD
        or type(readings) is not dict
    ):
        raise PayloadError("bad frame", "needs dev (string), seq (uint32) and r (object)")
    ts = msg.get("ts")
    if ts is not None and (type(ts) is not int or not -_MAX_TS < ts < _MAX_TS):
        raise PayloadError("bad timestamp", f"ts must be integer epoch ms, got {str(ts)[:40]}")
    return Frame(dev, seq, ts, readings)


class LineDecoder:
    """Bytes in, readings out: framing, JSON, sequence accounting. Pure, so it is tested without a port."""

    def __init__(self, settings: SerialSettings, stats: SerialStats) -> None:
        self._settings = settings
        self._stats = stats
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
            dev, seq, ts, readings = parse_line(line, self._settings.limits)
        except Exception as exc:  # whatever a line raises is that line's error, never the session's
            reason, detail = reason_of(exc)
            self._reject(out, now, reason, detail, line)
            return
        last = st.last_seq.get(dev)
        if last is not None:
            delta = (seq - last) % _SEQ_MOD
            if delta == 0:
                st.duplicates += 1
                return
            if delta < _SEQ_MOD // 2:
                st.lost += delta - 1
            else:
                st.restarts += 1
                _log.info(
                    "%s: device %s restarted (seq %d after %d)", self._settings.common.name, dev, seq, last
                )
        st.last_seq[dev] = seq
        self._emit(dev, ts if ts is not None else now, readings, out)

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
        """A dead letter decoded again with the current settings (replay: no sequence accounting)."""
        out = SourceBatch(received_ms)
        if len(line) > self._settings.max_line_bytes:
            raise PayloadError("too large", f"more than max_line_bytes = {self._settings.max_line_bytes}")
        dev, _, ts, readings = parse_line(line.strip(), self._settings.limits)
        self._emit(dev, ts if ts is not None else received_ms, readings, out)
        return out


class SerialAdapter(SharedSettings):
    kind = "serial"

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self._stats = SerialStats()

    @property
    def stats(self) -> SerialStats:
        return self._stats

    def redecode(self, source: str, payload: bytes, received_ms: int) -> SourceBatch:
        """A dead letter decoded again with the current settings; raises its error if it still fails."""
        return LineDecoder(self.settings, SerialStats()).redecode(payload, received_ms)

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
        reader = _PortReader(port.fileno(), LineDecoder(s, self._stats))
        try:
            reader.start()
            _log.info("%s: reading %s at %d baud", self.name, s.port, s.baudrate)
            yield reader.batches(self.name)
        finally:
            reader.stop()
            port.close()


class _PortReader:
    """Reads the port from the event loop's selector; pauses reading while the pipeline is behind."""

    def __init__(self, fd: int, decoder: LineDecoder) -> None:
        self._fd = fd
        self._decoder = decoder
        self._loop = asyncio.get_running_loop()
        self._pending = SourceBatch(wall_ms())
        self._wake = asyncio.Event()
        self._error: OSError | None = None
        self._reading = False

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

    async def batches(self, name: str) -> AsyncIterator[SourceBatch]:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._pending) or self._pending.rejects:
                batch, self._pending = self._pending, SourceBatch(wall_ms())
                if self._error is None:
                    self.start()
                yield batch
            if self._error is not None:
                raise AdapterError(f"{name}: serial port failed: {self._error}")
