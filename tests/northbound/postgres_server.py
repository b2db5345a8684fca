"""A real PostgreSQL server for tests: a throwaway cluster in a temp dir, run as a non-root user.

Debian's ``postgresql`` package (installed by ``make setup``) puts its binaries under
``/usr/lib/postgresql/<version>/bin``. As root the cluster is owned by the ``postgres`` user, since the server
refuses to run as root. fsync is off: the tests kill the server's processes, not the machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ingest.support import free_port

__all__ = ["PostgresServer", "bin_dir", "postgres_server"]


def bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        binaries = bin_dir()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (make setup installs Debian's postgresql)")
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="drsdtp-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "drsdtp"
        self.proc: subprocess.Popen[bytes] | None = None
        self._run_as: tuple[int, int] | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._run_as = (pw.pw_uid, pw.pw_gid)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._call(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8"]
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    @property
    def sink_config(self) -> str:
        """A node's ``[postgres]`` table for this server, with a fast outbox flush and a short reconnect."""
        return f'[postgres]\ndsn = "{self.dsn}"\nflush_interval_s = 0.05\nmax_backoff_s = 0.5\n'

    def _preexec(self) -> None:
        if self._run_as is not None:
            os.setgid(self._run_as[1])
            os.setuid(self._run_as[0])

    def _call(self, argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, preexec_fn=self._preexec, cwd=self.root)

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D", str(self.data),
                "-p", str(self.port),
                "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
                "-c", "full_page_writes=off",
                "-c", "shared_buffers=32MB",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "ab"),  # noqa: SIM115 (the child owns it)
            preexec_fn=self._preexec,
            cwd=self.root,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            assert self.proc is not None and self.proc.poll() is None, self.log()
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not come up: {self.log()}")

    def kill(self) -> None:
        """SIGKILL the postmaster, then wait for its orphaned backends to notice and exit (they hold the
        shared memory a restart needs)."""
        assert self.proc is not None
        children = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text()[-2000:]
        return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
