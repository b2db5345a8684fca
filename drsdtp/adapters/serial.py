"""Serial adapter (pyserial) for our sensor firmware's line protocol.

Line protocol: one JSON object per line (UTF-8, ``\\n`` terminated, at most ``max_line_bytes``)::

    {"dev": "node-7", "seq": 1234, "r": {"temp": 21.5, "hum": 40.2, "co2": null}}
    {"dev": "node-7", "seq": 1235, "ts": 1767225600123, "r": {"temp": 21.6}}

``dev``: device id (the twin name, or mapped by ``devices``); ``seq``: uint32 counter, +1 per line, wrapping
at 2**32; ``ts``: optional epoch milliseconds (boards without a clock omit it and the receive time is used);
``r``: field -> number, boolean or null (null: the sensor failed this sample; sent as BAD without value).

Loss accounting per device: a jump of ``seq`` by ``k > 1`` counts ``k - 1`` lost lines; the same ``seq`` again
is a duplicate (dropped); a jump backwards is a device restart (counted in ``restarts``, no loss assumed).

Settings::

    [[adapters]]
    type = "serial"
    name = "bench"
    port = "/dev/ttyUSB0"      # a stable udev symlink is best: /dev/serial/by-id/...
    baudrate = 115200
    devices = { "node-7" = "room-1" }   # optional device id -> twin
    max_line_bytes = 4096
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from drsdtp.adapters.base import AdapterStats, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common, require_module
from drsdtp.adapters.payloads import PayloadError, value_of
from drsdtp.adapters.settings import Table
from drsdtp.errors import AdapterError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.ingest.ratelog import RateLimitedLog

__all__ = ["LineDecoder", "SerialAdapter", "SerialSettings", "SerialStats", "build"]

_log = logging.getLogger(__name__)
_SEQ_MOD = 1 << 32
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


@dataclass(slots=True)
class SerialStats(AdapterStats):
    duplicates: int = 0
    restarts: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)


def parse_settings(raw: Mapping[str, Any], key: str) -> SerialSettings:
    t = Table(raw, key)
    require_module(t, "serial", "serial")
    common = parse_common(t)
    settings = SerialSettings(
        common=common,
        port=t.get_str("port"),
        baudrate=t.get_int("baudrate", 115200, lo=50, hi=4_000_000),
        bytesize=t.get_int("bytesize", 8, lo=5, hi=8),
        parity=t.choice("parity", ("N", "E", "O"), "N"),
        stopbits=t.get_float("stopbits", 1.0, lo=1.0, hi=2.0),
        devices=t.str_map("devices", {}),
        max_line_bytes=t.get_int("max_line_bytes", 4096, lo=64, hi=1 << 20),
    )
    if settings.stopbits not in (1.0, 1.5, 2.0):
        raise t.error("stopbits", "must be 1, 1.5 or 2")
    t.done()
    return settings


def build(raw: Mapping[str, Any], key: str) -> SerialAdapter:
    return SerialAdapter(parse_settings(raw, key))


class LineDecoder:
    """Bytes in, readings out: framing, JSON, sequence accounting. Pure, so it is tested without a port."""

    def __init__(self, settings: SerialSettings, stats: SerialStats) -> None:
        self._settings = settings
        self._stats = stats
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to the next newline
        self._log = RateLimitedLog(_log, f"{settings.common.name}: bad lines")

    def feed(self, data: bytes, out: SourceBatch) -> None:
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
                self._bad("too long", f"{len(line)} bytes")
                continue
            self._line(line.strip(), out)
        del buf[:start]
        if len(buf) > limit:
            self._bad("too long", f"more than {limit} bytes without a newline")
            buf.clear()
            self._skipping = True

    def _bad(self, reason: str, detail: str) -> None:
        self._stats.malformed += 1
        self._log.warn(reason, "%s: %s", reason, detail)

    def _line(self, line: bytes, out: SourceBatch) -> None:
        if not line:
            return
        st = self._stats
        st.messages += 1
        try:
            msg = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self._bad("not JSON", repr(line[:60]))
            return
        if type(msg) is not dict:
            self._bad("not an object", repr(line[:60]))
            return
        dev, seq, readings = msg.get("dev"), msg.get("seq"), msg.get("r")
        if (
            type(dev) is not str
            or not dev
            or type(seq) is not int
            or not 0 <= seq < _SEQ_MOD
            or type(readings) is not dict
        ):
            self._bad("bad frame", "needs dev (string), seq (uint32) and r (object)")
            return
        now = out.received_ms
        ts = msg.get("ts", now)
        if type(ts) is not int:
            self._bad("bad timestamp", f"ts must be integer epoch ms, got {ts!r}")
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
        twin = self._settings.devices.get(dev, dev)
        for name, raw in readings.items():
            try:
                value, quality = value_of(raw)
            except PayloadError as exc:
                self._bad(exc.reason, f"device {dev} field {name}: {exc}")
                continue
            out.add(twin, name, value, ts, quality)  # null arrives as NaN with quality BAD


class SerialAdapter(SharedSettings):
    kind = "serial"

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self._stats = SerialStats()

    @property
    def stats(self) -> SerialStats:
        return self._stats

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
        if not len(self._pending):
            self._pending.received_ms = wall_ms()
        self._decoder.feed(data, self._pending)
        if len(self._pending):
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
            if len(self._pending):
                batch, self._pending = self._pending, SourceBatch(wall_ms())
                if self._error is None:
                    self.start()
                yield batch
            if self._error is not None:
                raise AdapterError(f"{name}: serial port failed: {self._error}")
