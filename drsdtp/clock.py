"""Clock health: the NTP offset of the local clock, and the persisted HLC high-water mark.

The engine's hybrid logical clock must never go backwards, even after a reboot on a board without a real-time
clock. The engine hands out its high-water mark; this module writes it to a small file atomically and reads it
back at startup. A missing or corrupt file is not fatal: the clock then starts from the wall clock (logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from drsdtp.config import parse_address
from drsdtp.errors import ConfigError, StorageError
from drsdtp.lifecycle import BackgroundService

__all__ = [
    "HLC_FILE_NAME",
    "ClockMonitor",
    "ClockOffset",
    "HighWaterKeeper",
    "measure_offset",
    "read_high_water",
    "restore_high_water",
    "write_high_water",
]

log = logging.getLogger(__name__)

HLC_FILE_NAME: Final = "hlc.hwm"
_MAGIC: Final = "drsdtp-hlc"
_FORMAT_VERSION: Final = 1
_MAX_FILE_BYTES: Final = 256
_U64_MAX: Final = (1 << 64) - 1
_NOT_MEASURED: Final = "not measured yet"


# --- NTP offset -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """One measurement. ``offset_s`` is None when it is unknown (no server configured or none answered)."""

    offset_s: float | None  # server time minus local time: positive when the local clock is behind
    server: str | None
    measured_at: float  # unix time of the measurement
    error: str | None = None
    delay_s: float | None = None  # round-trip delay; the offset is accurate to about half of it

    @property
    def known(self) -> bool:
        return self.offset_s is not None

    @classmethod
    def unknown(cls, server: str | None, reason: str) -> ClockOffset:
        return cls(offset_s=None, server=server, measured_at=time.time(), error=reason)


async def measure_offset(server: str, *, timeout_s: float = 2.0, version: int = 3) -> ClockOffset:
    """Ask ``server`` (``host`` or ``host:port``) for the local clock's offset, in a worker thread.

    An unreachable, silent or unsynchronized server gives an unknown offset, never an exception: clock
    health is something to report, not a reason to stop the node.
    """
    try:
        address = parse_address(server, "clock.ntp_server", default_port=123, allow_port_zero=False)
    except ConfigError as exc:
        return ClockOffset.unknown(server, exc.reason)
    import ntplib  # only for a configured server: a node without one never asks (idle RSS)

    client = ntplib.NTPClient()
    try:
        stats = await asyncio.to_thread(
            client.request, address.host, version=version, port=address.port, timeout=timeout_s
        )
    except (ntplib.NTPException, OSError) as exc:
        log.debug("NTP query to %s failed: %s", server, exc)
        return ClockOffset.unknown(server, str(exc) or type(exc).__name__)
    # Stratum 0 is a kiss-of-death reply, leap indicator 3 an unsynchronized server: their time means nothing.
    if stats.stratum == 0 or stats.leap == 3:
        return ClockOffset.unknown(
            server, f"server not synchronized (stratum {stats.stratum}, leap {stats.leap})"
        )
    return ClockOffset(
        offset_s=float(stats.offset), server=server, measured_at=time.time(), delay_s=float(stats.delay)
    )


# --- HLC high-water mark ----------------------------------------------------------------------------------


def write_high_water(path: Path, value: int) -> None:
    """Atomically replace ``path`` with ``value``: write a temp file, fsync it, rename, fsync the directory.

    A crash leaves either the old or the new file, never a torn one. Not for concurrent writers of one path
    (they share the temp file); :class:`HighWaterKeeper` serializes its writes.
    """
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"HLC high-water mark out of the 64-bit range: {value}")
    body = f"{_MAGIC} v{_FORMAT_VERSION} {value}"
    data = f"{body} {zlib.crc32(body.encode()):08x}\n".encode()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write the HLC high-water mark to {path}: {exc}") from exc


def read_high_water(path: Path) -> int | None:
    """The stored mark, or None when the file does not exist. A damaged file raises StorageError."""
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the HLC high-water mark {path}: {exc}") from exc
    try:
        return _decode(data)
    except ValueError as exc:
        raise StorageError(f"corrupt HLC high-water mark {path}: {exc}") from None


def restore_high_water(path: Path) -> int | None:
    """The mark to seed the engine's clock with; None means start from the wall clock.

    A corrupt file is logged and ignored rather than fatal: refusing to start would take the node down for
    good, while the wall clock is right on any board with a working RTC or NTP.
    """
    try:
        value = read_high_water(path)
    except StorageError as exc:
        log.error("%s; the hybrid logical clock starts from the wall clock", exc)
        return None
    if value is None:
        log.info("no HLC high-water mark at %s (first start); the clock starts from the wall clock", path)
    return value


def _decode(data: bytes) -> int:
    if len(data) > _MAX_FILE_BYTES:
        raise ValueError("file too large")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not ASCII text") from None
    if not text.endswith("\n"):
        raise ValueError("truncated (no final newline)")
    parts = text[:-1].split(" ")
    if len(parts) != 4 or parts[0] != _MAGIC:
        raise ValueError("unrecognized format")
    magic, version, value_text, crc_text = parts
    if version != f"v{_FORMAT_VERSION}":
        raise ValueError(f"unsupported format version {version!r}")
    body = f"{magic} {version} {value_text}"
    if f"{zlib.crc32(body.encode()):08x}" != crc_text:
        raise ValueError("checksum mismatch")
    if not (value_text.isascii() and value_text.isdigit()) or int(value_text) > _U64_MAX:
        raise ValueError(f"value {value_text!r} is not a 64-bit unsigned integer")
    return int(value_text)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable (POSIX: the directory entry lives in the directory's data).
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the periodic parts, as services ----------------------------------------------------------------------


class ClockMonitor(BackgroundService):
    """Measures the NTP offset every ``interval_s``; :attr:`latest` is what metrics and health read."""

    name = "clock-monitor"

    def __init__(
        self, server: str | None, *, interval_s: float, timeout_s: float, max_offset_s: float | None = None
    ) -> None:
        self.server = server
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_offset_s = max_offset_s
        self.latest = ClockOffset.unknown(server, _NOT_MEASURED if server else "no NTP server configured")

    async def measure_once(self) -> ClockOffset:
        if self.server is None:
            return self.latest
        result = await measure_offset(self.server, timeout_s=self.timeout_s)
        if result.known != self.latest.known or self.latest.error == _NOT_MEASURED:
            if result.known:
                log.info("clock offset to %s is %+.3f s", self.server, result.offset_s)
            else:
                log.warning("clock offset to %s unknown: %s", self.server, result.error)
        limit = self.max_offset_s
        if result.offset_s is not None and limit is not None and abs(result.offset_s) > limit:
            log.warning(
                "clock offset to %s is %+.3f s, beyond the %.3f s maximum",
                self.server,
                result.offset_s,
                limit,
            )
        self.latest = result
        return result

    async def run(self) -> None:
        while self.server is not None:
            await self.measure_once()
            await asyncio.sleep(self.interval_s)


class HighWaterKeeper(BackgroundService):
    """Writes the engine's HLC high-water mark every ``interval_s`` when it changed, and once on exit."""

    name = "hlc-high-water"

    def __init__(self, path: Path, read_mark: Callable[[], int], *, interval_s: float) -> None:
        self.path = path
        self.read_mark = read_mark
        self.interval_s = interval_s
        self.written: int | None = None
        self._pending: asyncio.Future[None] | None = None

    async def persist(self) -> None:
        """Write the current mark if it changed.

        Writes never overlap (they share one temp file, and an older value must not land last): a write whose
        caller was cancelled still finishes in its thread, and the next call waits for it first.
        """
        if self._pending is not None:
            await asyncio.wait([self._pending])
            if not self._pending.cancelled():
                self._pending.exception()  # already logged or raised by the caller it belonged to
            self._pending = None
        value = self.read_mark()
        if value == self.written:
            return
        self._pending = asyncio.ensure_future(asyncio.to_thread(write_high_water, self.path, value))
        await asyncio.shield(self._pending)
        self._pending = None
        self.written = value

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.persist()
            except StorageError as exc:
                # Keep going: the next tick may succeed (a full disk is often transient); the node stays up.
                log.error("%s", exc)

    async def stopped(self) -> None:
        await self.persist()
