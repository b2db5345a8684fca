"""Real node processes (``tests/gossip/node_proc.py``) and cuttable TCP proxies between them.

Every node reaches every peer through its own proxy, so a test can block one node's traffic (existing
connections are reset, new ones refused) and restore it, without root or network namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class Proxy:
    """Forwards connections on a free loopback port to ``target_port``; :meth:`block` cuts them."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blocked = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def block(self) -> None:
        self.blocked = True
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a failed link or a firewall reject

    def unblock(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.block()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.blocked:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.transport.abort()
                return
            self._writers |= {writer, up_writer}
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._writers -= {writer, up_writer}
                for w in (writer, up_writer):
                    w.transport.abort()
        except asyncio.CancelledError:
            pass  # closing the proxy; the connections were aborted
        finally:
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


class NodeProcess:
    """One node process, driven through its JSON-lines control interface."""

    def __init__(self, name: str, data_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_path = log_dir / f"{name}.log"
        self.port = 0
        self.replayed = 0  # deltas replayed from the durable log at the last start
        self.process: asyncio.subprocess.Process | None = None
        self.acked: set[int] = set()  # writes the node acknowledged (durable)
        self._lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, peers: dict[str, int], port: int = 0) -> None:
        args = [
            sys.executable,
            "-m",
            "tests.gossip.node_proc",
            "--name",
            self.name,
            "--data",
            str(self.data_dir),
        ]
        args += ["--port", str(port)]
        for peer, peer_port in sorted(peers.items()):
            args += ["--peer", f"{peer}=127.0.0.1:{peer_port}"]
        log_file = self.log_path.open("a")
        self.process = await asyncio.create_subprocess_exec(
            *args, cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        log_file.close()
        self._lines = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_lines(self.process))
        ready = await self.expect("ready", timeout_s=60)
        self.port = ready["port"]
        self.replayed = ready["replayed"]

    async def _read_lines(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            message = json.loads(line)
            if "acked" in message:
                self.acked.add(message["acked"])
            await self._lines.put(message)
        await self._lines.put({"eof": True})

    async def expect(self, key: str, timeout_s: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self._lines.get()
                if key in message:
                    return message
                if "eof" in message:
                    raise AssertionError(f"{self.name} exited; see {self.log_path}")

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()

    async def write(self, first: int, count: int) -> None:
        await self.send({"cmd": "write", "first": first, "count": count})
        await self.expect("done")

    async def state(self) -> dict[str, Any]:
        await self.send({"cmd": "state"})
        return await self.expect("digest")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, AssertionError):
            await self.send({"cmd": "stop"})
        try:
            async with asyncio.timeout(20):
                await self.wait()
        except TimeoutError:
            self.kill()
            await self.wait()
