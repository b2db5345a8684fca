"""Clock: NTP offset against a real UDP responder, and the persisted HLC high-water mark."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import ntplib
import pytest

from drsdtp.clock import (
    HLC_FILE_NAME,
    ClockMonitor,
    HighWaterKeeper,
    measure_offset,
    read_high_water,
    restore_high_water,
    write_high_water,
)
from drsdtp.errors import StorageError

U64_MAX = (1 << 64) - 1

# --- HLC high-water mark ----------------------------------------------------------------------------------


def test_high_water_round_trip(tmp_path: Path) -> None:
    path = tmp_path / HLC_FILE_NAME
    for value in (0, 1, 7_234_567_890_123_456_789, U64_MAX):
        write_high_water(path, value)
        assert read_high_water(path) == value
    assert [p.name for p in tmp_path.iterdir()] == [HLC_FILE_NAME]  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # not world-readable


def test_high_water_rejects_values_outside_u64(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        write_high_water(tmp_path / HLC_FILE_NAME, U64_MAX + 1)
    with pytest.raises(ValueError, match="64-bit"):
        write_high_water(tmp_path / HLC_FILE_NAME, -1)


def test_high_water_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot write"):
        write_high_water(tmp_path / "missing-dir" / HLC_FILE_NAME, 5)


def test_missing_high_water_means_first_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / HLC_FILE_NAME
    assert read_high_water(path) is None
    with caplog.at_level(logging.INFO, logger="drsdtp.clock"):
        assert restore_high_water(path) is None
    assert "first start" in caplog.text


def _valid_bytes(tmp_path: Path, value: int) -> bytes:
    path = tmp_path / "valid"
    write_high_water(path, value)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b.replace(b"12345", b"12346"), "checksum mismatch"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b"", "truncated"),
        (lambda b: b.replace(b" v1 ", b" v9 "), "unsupported format version"),
        (lambda b: b"garbage\n", "unrecognized format"),
        (lambda b: b"\xff\xfe" + b, "not ASCII"),
        (lambda b: b * 20, "too large"),
    ],
    ids=["flipped digit", "no newline", "torn", "empty", "future version", "garbage", "binary", "oversized"],
)
def test_corrupt_high_water_is_reported_and_falls_back_to_the_wall_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    path = tmp_path / HLC_FILE_NAME
    path.write_bytes(damage(_valid_bytes(tmp_path, 12345)))  # type: ignore[operator]
    with pytest.raises(StorageError) as info:
        read_high_water(path)
    assert reason in str(info.value)
    assert str(path) in str(info.value)
    with caplog.at_level(logging.ERROR, logger="drsdtp.clock"):
        assert restore_high_water(path) is None
    assert "starts from the wall clock" in caplog.text
    assert reason in caplog.text


def test_value_beyond_u64_in_file_is_corrupt(tmp_path: Path) -> None:
    import zlib

    body = f"drsdtp-hlc v1 {U64_MAX + 1}"
    path = tmp_path / HLC_FILE_NAME
    path.write_text(f"{body} {zlib.crc32(body.encode()):08x}\n")
    with pytest.raises(StorageError, match="not a 64-bit unsigned integer"):
        read_high_water(path)


async def test_keeper_writes_the_final_mark_on_exit(tmp_path: Path) -> None:
    path = tmp_path / HLC_FILE_NAME
    mark = 100
    # A long interval: only the exit can have written the file.
    async with HighWaterKeeper(path, lambda: mark, interval_s=3600) as keeper:
        mark = 250
    assert read_high_water(path) == 250
    assert keeper.written == 250


async def test_keeper_writes_periodically_when_the_mark_changes(tmp_path: Path) -> None:
    path = tmp_path / HLC_FILE_NAME
    reads = 0
    third_tick = asyncio.Event()

    def mark() -> int:
        nonlocal reads
        reads += 1
        if reads == 3:
            third_tick.set()
        return 1000 + reads

    async with HighWaterKeeper(path, mark, interval_s=0.01):
        async with asyncio.timeout(10):
            await third_tick.wait()
        # Ticks run one after another, so the first two reads were written before the third was taken.
        written = read_high_water(path)
        assert written is not None
        assert written >= 1002
    assert read_high_water(path) == 1000 + reads  # the exit wrote the last value read


# --- NTP offset -------------------------------------------------------------------------------------------


class _FakeNtp(asyncio.DatagramProtocol):
    """Answers NTP client queries as a server whose clock is ``skew_s`` ahead of ours."""

    def __init__(self, skew_s: float, *, stratum: int = 2, leap: int = 0) -> None:
        self.skew_s = skew_s
        self.stratum = stratum
        self.leap = leap
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0
        self.second_query = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport, though it is one.
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        if self.queries == 2:
            self.second_query.set()
        query = ntplib.NTPPacket()
        query.from_data(data)
        now = ntplib.system_to_ntp_time(time.time() + self.skew_s)
        reply = ntplib.NTPPacket(version=3, mode=4, tx_timestamp=now)
        reply.stratum, reply.leap = self.stratum, self.leap
        reply.orig_timestamp = query.tx_timestamp
        reply.recv_timestamp = now
        assert self.transport is not None
        self.transport.sendto(reply.to_data(), addr)


@asynccontextmanager
async def fake_ntp(skew_s: float, **kw: int) -> AsyncIterator[tuple[str, _FakeNtp]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _FakeNtp(skew_s, **kw), local_addr=("127.0.0.1", 0)
    )
    try:
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}", protocol
    finally:
        transport.close()


async def test_offset_from_a_server_ahead_of_us() -> None:
    async with fake_ntp(1000.0) as (server, _):
        result = await measure_offset(server, timeout_s=5)
    assert result.known
    assert result.error is None
    assert result.server == server
    # The reply's own delay bounds the error; a second is far beyond any loopback delay.
    assert result.offset_s is not None
    assert abs(result.offset_s - 1000.0) < 1.0
    assert result.delay_s is not None
    assert result.delay_s >= 0


async def test_offset_from_a_server_behind_us_is_negative() -> None:
    async with fake_ntp(-500.0) as (server, _):
        result = await measure_offset(server, timeout_s=5)
    assert result.offset_s is not None
    assert abs(result.offset_s + 500.0) < 1.0


@pytest.mark.parametrize(("stratum", "leap"), [(0, 0), (2, 3)], ids=["kiss-of-death", "unsynchronized"])
async def test_an_unsynchronized_server_gives_an_unknown_offset(stratum: int, leap: int) -> None:
    async with fake_ntp(1000.0, stratum=stratum, leap=leap) as (server, protocol):
        result = await measure_offset(server, timeout_s=5)
    assert protocol.queries == 1
    assert result.offset_s is None
    assert result.error is not None
    assert "not synchronized" in result.error


async def test_a_silent_server_gives_an_unknown_offset_not_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = await measure_offset(f"127.0.0.1:{port}", timeout_s=0.2)
    assert not result.known
    assert result.error is not None
    assert "No response" in result.error


async def test_an_unparsable_server_gives_an_unknown_offset() -> None:
    result = await measure_offset("ntp:notaport")
    assert result.offset_s is None
    assert result.error is not None
    assert "not a number" in result.error


async def test_monitor_measures_in_the_background_and_keeps_the_latest() -> None:
    async with fake_ntp(42.0) as (server, protocol):
        monitor = ClockMonitor(server, interval_s=0.01, timeout_s=5, max_offset_s=0.5)
        assert not monitor.latest.known
        async with monitor:
            async with asyncio.timeout(10):
                await protocol.second_query.wait()  # measurements are sequential: the first one is done
        assert monitor.latest.offset_s is not None
        assert abs(monitor.latest.offset_s - 42.0) < 1.0


async def test_monitor_without_a_server_reports_unknown() -> None:
    monitor = ClockMonitor(None, interval_s=1, timeout_s=1)
    async with monitor:
        result = await monitor.measure_once()
    assert result.offset_s is None
    assert result.error == "no NTP server configured"


def test_fake_server_port_is_free_per_test() -> None:
    # Guard for the helper itself: binding port 0 twice gives two ports.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        assert a.getsockname()[1] != b.getsockname()[1]
    assert os.getpid() > 0
