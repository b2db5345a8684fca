"""Free TCP ports for the test servers, which no other test process on the machine is handed at the same time.

A test asks for a port, writes it into a server's config and starts the server, which binds it later (a
broker, a node process, a PostgreSQL). Between the two, another process must not be handed the same port:
another xdist worker of this run, or another suite run at the same time (two engineers' ``pytest -n 2``).

- **A claim per port, across processes.** Before a port is handed out, it is claimed by binding an abstract
  Unix socket named after it (``\\0drsdtp-test-port-N``). At most one process holds that name in the network
  namespace, so a claimed port is handed to no other test process; the kernel drops the claim when its holder
  exits, killed or not, so a crashed run leaves nothing stale. A claim lasts until the end of the test
  module (a server restarted on its port within the module keeps it): ``tests/conftest.py`` releases it
  then. A session-scoped fixture's ports, claimed before any module's scope opens, last the process.
- **Below the ephemeral range.** Ports come from 23000 up to the start of Linux's ephemeral range (32768+,
  read from ``ip_local_port_range``), so the kernel never gives one out for an outgoing connection meanwhile.
- **TIME_WAIT.** A server that has just exited leaves its port in TIME_WAIT. A port is handed out only if a
  plain bind of it succeeds (no ``SO_REUSEADDR``), which TIME_WAIT refuses; and each process walks the range
  from a random start, so it comes back to a port only after every other port of the range.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

# Above 20000-22999, the blocks the suite's earlier scheme gave two xdist workers (20000 + worker x 1500),
# which a checkout from before this one, run at the same time, still binds without a claim.
FIRST_PORT = 23000
_CLAIM_PREFIX = b"\0drsdtp-test-port-"


def _ephemeral_start() -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


END_PORT = max(_ephemeral_start(), FIRST_PORT + 1000)  # exclusive
_claims: dict[int, socket.socket] = {}  # port -> the abstract socket that claims it, held by this process
_scoped: list[list[int]] = []  # claims to release at the end of each open claim_scope(), innermost last
_next = [random.randrange(FIRST_PORT, END_PORT)]


def _claim(port: int) -> socket.socket | None:
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(_CLAIM_PREFIX + str(port).encode())
    except OSError:
        claim.close()
        return None  # another test process holds it
    return claim


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False  # a server listens on it, or it is in TIME_WAIT
    return True


def free_port(first: int | None = None) -> int:
    """A port nothing is bound to, claimed for this process until the current claim scope ends (the test
    module; for ports claimed outside any scope, the process). ``first`` is where to start looking."""
    span = END_PORT - FIRST_PORT
    start = _next[0] if first is None else first
    for i in range(span):
        port = FIRST_PORT + (start - FIRST_PORT + i) % span
        if port in _claims:
            continue
        claim = _claim(port)
        if claim is None:
            continue
        if not _bindable(port):
            claim.close()
            continue
        _claims[port] = claim
        if _scoped:
            _scoped[-1].append(port)
        _next[0] = FIRST_PORT + (port + 1 - FIRST_PORT) % span
        return port
    raise RuntimeError(f"no free, unclaimed port in {FIRST_PORT}..{END_PORT} (pid {os.getpid()})")


def release(port: int) -> None:
    claim = _claims.pop(port, None)
    if claim is not None:
        claim.close()


@contextlib.contextmanager
def claim_scope() -> Iterator[None]:
    """Ports claimed inside are released when it ends."""
    ports: list[int] = []
    _scoped.append(ports)
    try:
        yield
    finally:
        popped = _scoped.pop()
        assert popped is ports, "claim scopes end in the order they began"
        for port in ports:
            release(port)
