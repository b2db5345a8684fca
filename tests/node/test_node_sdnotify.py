"""sd_notify against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsdtp.sdnotify import SystemdNotifier, watchdog_pinger


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket; yields it and its $NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_status_stopping_reach_the_socket(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, address = systemd_socket
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.enabled
        assert notifier.ready("serving 3 services")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 services"
        assert notifier.status("line one\nline two")
        assert sock.recv(4096) == b"STATUS=line one line two"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.extend_timeout(90)
        assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=90000000"
    assert not notifier.enabled  # closed by the with block
    assert not notifier.ready()


def test_abstract_namespace_socket() -> None:
    name = f"drsdtp-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        with SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    notifier.close()


def test_an_unreachable_socket_disables_notifications(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="drsdtp.sdnotify"):
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "systemd notifications are off" in caplog.text


def test_a_vanished_receiver_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(path)})
    receiver.close()
    with caplog.at_level(logging.WARNING, logger="drsdtp.sdnotify"):
        assert notifier.ready() is False
    assert "failed" in caplog.text
    notifier.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
    ids=["ours", "ours by pid", "other pid", "zero", "garbage", "unset"],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    systemd_socket: tuple[socket.socket, str], env: dict[str, str], interval: float | None
) -> None:
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": systemd_socket[1], **env}) as notifier:
        assert notifier.watchdog_interval_s == interval


async def test_pinger_pings_at_half_the_interval(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, address = systemd_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"}) as notifier:
        assert notifier.watchdog_interval_s == 0.01
        pinger = asyncio.create_task(watchdog_pinger(notifier))
        try:
            async with asyncio.timeout(10):
                pings = [await loop.sock_recv(sock, 4096) for _ in range(3)]
        finally:
            pinger.cancel()
    assert pings == [b"WATCHDOG=1"] * 3


async def test_pinger_skips_pings_while_unhealthy(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, address = systemd_socket
    sock.setblocking(False)
    checks = 0
    checked_three_times = asyncio.Event()

    def healthy() -> bool:
        nonlocal checks
        checks += 1
        if checks == 3:
            checked_three_times.set()
        return False

    with SystemdNotifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"}) as notifier:
        pinger = asyncio.create_task(watchdog_pinger(notifier, healthy=healthy))
        try:
            async with asyncio.timeout(10):
                await checked_three_times.wait()
        finally:
            pinger.cancel()
    # The pinger sends right after a healthy check, so three checks without a datagram mean no pings.
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


async def test_pinger_returns_at_once_without_a_watchdog(systemd_socket: tuple[socket.socket, str]) -> None:
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": systemd_socket[1]}) as notifier:
        async with asyncio.timeout(10):
            await watchdog_pinger(notifier)
