"""The systemd notification protocol (sd_notify(3)), without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an AF_UNIX datagram socket (a leading ``@`` means the
abstract namespace). We send ``READY=1`` once the node serves, ``STOPPING=1`` when shutdown starts,
``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, and ``STATUS=...`` lines for ``systemctl status``. Outside
systemd every call is a cheap no-op. A failed send is logged, never raised: notification must not take the
node down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["SystemdNotifier", "watchdog_pinger"]

log = logging.getLogger(__name__)

_MAX_STATUS_CHARS: Final = 1024


class SystemdNotifier:
    """Sends state changes to systemd. Construct with :meth:`from_env`; close when done (or use ``with``)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address:
            # Abstract-namespace sockets are spelled with '@' in the environment and a NUL byte on the wire.
            target = "\0" + address[1:] if address.startswith("@") else address
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(target)
                sock.setblocking(False)  # a full queue drops one message rather than stalling the event loop
            except OSError as exc:
                sock.close()
                log.warning(
                    "cannot connect to NOTIFY_SOCKET %s: %s; systemd notifications are off", address, exc
                )
            else:
                self._sock = sock

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, pid: int | None = None) -> SystemdNotifier:
        """Read ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (honoring ``$WATCHDOG_PID`` as systemd intends)."""
        env = os.environ if env is None else env
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        target_pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not target_pid or target_pid == str(pid or os.getpid())):
            watchdog = int(usec)
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the systemd watchdog timeout (systemd's own advice), or None when off."""
        if self._sock is None or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True when it was sent."""
        if self._sock is None:
            return False
        try:
            self._sock.send("\n".join(assignments).encode())
        except OSError as exc:
            log.warning("systemd notification %s failed: %s", assignments, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start (or stop) time, e.g. while replaying a long write-ahead log."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _status(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return (f"STATUS={text.replace(chr(10), ' ')[:_MAX_STATUS_CHARS]}",)


async def watchdog_pinger(notifier: SystemdNotifier, *, healthy: Callable[[], bool] = lambda: True) -> None:
    """Ping the watchdog at half its interval for as long as it runs (cancel it to stop).

    That this coroutine runs at all shows the event loop is alive; ``healthy`` can add a deeper check. An
    unhealthy node skips pings, so systemd restarts it once the watchdog timeout passes.
    """
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    while True:
        if healthy():
            notifier.watchdog()
        else:
            log.warning("node unhealthy: skipping the systemd watchdog ping")
        await asyncio.sleep(interval)
