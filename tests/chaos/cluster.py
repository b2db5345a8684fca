"""Real ``drsdtp run`` processes for the chaos check, one shared mosquitto, and the network they run on.

Every node ingests its own MQTT topics (QoS 1, a persistent session) and replicates to every other node;
every node runs with the clock offset hook enabled (``DRSDTP_TEST_CLOCK_OFFSET_FILE``, offset 0 until a
jump), and a restart may give it a slow, lossy link (``DRSDTP_TEST_LINK``). State is read through the gRPC
API the CLI uses, peer figures from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc

from drsdtp.client import connect, field_to_python
from drsdtp.clock_offset_hook import ENV as CLOCK_ENV
from drsdtp.config import parse_address
from drsdtp.gossip.link_hook import ENV as LINK_ENV
from drsdtp.wire.v1 import api_pb2
from tests.ingest.support import Mosquitto

from .net import NamespaceNet, Net, ProxyNet

ROOT = Path(__file__).resolve().parents[2]
_SETPRIV = shutil.which("setpriv")
MAX_OFFSET_MS = 500  # clock.max_offset_ms (the default), spelled out: the clock jumps are sized by it


class ChaosNode:
    def __init__(
        self, name: str, root: Path, net: Net, broker: Mosquitto, run_id: str, *, wal: bool = True
    ) -> None:
        self.name = name
        self.node_id = f"chaos-{name}"
        self.net = net
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "node.log"
        self.clock_file = self.dir / "clock-offset"
        self.clock_file.write_text("0")
        self.link: str | None = None  # DRSDTP_TEST_LINK of the running process
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        ends = net.endpoints(name)
        self.api = parse_address(ends.api, "api")
        self.metrics_url = f"http://{ends.metrics}/metrics"
        peers = "".join(
            f'[[peers]]\nname = "chaos-{p}"\naddress = "{net.peer_address(name, p)}"\n'
            for p in net.nodes
            if p != name
        )
        self.config = self.dir / "node.toml"
        self.config.write_text(f"""
node_id = "{self.node_id}"
data_dir = "{self.dir / "data"}"
shutdown_timeout_s = 5.0
[listen]
peer = "{ends.listen_peer}"
api = "{ends.listen_api}"
metrics = "{ends.listen_metrics}"
[api]
allow_plaintext_remote = true  # the API listens in a test network namespace
[clock]
max_offset_ms = {MAX_OFFSET_MS}
[history]
enabled = false
[wal]
enabled = {"true" if wal else "false"}
[[adapters]]
type = "mqtt"
name = "chaos"
host = "{ends.broker_host}"
port = {broker.port}
client_id = "{run_id}-{name}"
persistent_session = true
[adapters.reconnect]
initial_s = 0.05
max_s = 0.5
[[adapters.topics]]
template = "chaos/{name}/{{twin}}/{{field}}"
qos = 1
payload = "number"
{peers}""")

    # --- the process ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, link: str | None = None) -> None:
        assert not self.running
        self.link = link
        env = {**os.environ, "PYTHONPATH": str(ROOT), CLOCK_ENV: str(self.clock_file)}
        env.pop(LINK_ENV, None)
        if link:
            env[LINK_ENV] = link
        argv = self.net.command(
            self.name, [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config)]
        )
        if _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]  # no orphan node if the run itself dies
        with self.log_path.open("ab") as log:
            log.write(f"--- start (link: {link}) ---\n".encode())
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log, env=env)
        self.paused = False

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def set_clock(self, offset_ms: int) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(str(offset_ms))
        tmp.replace(self.clock_file)  # the node never reads a half-written number

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 20)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    # --- reading it -------------------------------------------------------------------------------------

    async def status(self) -> api_pb2.StatusReply | None:
        channel, stub = connect(self.api)
        async with channel:
            try:
                reply: api_pb2.StatusReply = await stub.Status(api_pb2.StatusRequest(), timeout=3)
            except grpc.aio.AioRpcError:
                return None
            return reply

    async def twins(self, prefix: str = "") -> dict[str, dict[str, object]]:
        """Every twin whose id starts with ``prefix``, with its fields."""
        channel, stub = connect(self.api)
        async with channel:
            listing = await stub.ListTwins(api_pb2.ListTwinsRequest(prefix=prefix), timeout=10)
            out = {}
            for t in listing.twins:
                twin = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=t.twin_id), timeout=10)
                out[t.twin_id] = {f.name: field_to_python(f) for f in twin.fields}
            return out

    async def metrics(self) -> dict[str, float]:
        """The node's /metrics as {series with labels: value}."""

        def fetch() -> str:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
                return str(reply.read().decode())

        out: dict[str, float] = {}
        for line in (await asyncio.to_thread(fetch)).splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[series] = float(value)
        return out

    async def subscribed(self) -> None:
        """Until the node's MQTT adapter is connected and subscribed."""
        while (await self.metrics()).get('drsdtp_adapter_connected{source="chaos"}') != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """The broker, the network and the nodes, torn down on exit whatever happened."""

    def __init__(
        self, root: Path, names: list[str], *, namespaces: bool, wal_off: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.broker = Mosquitto(root)
        self.net: Net = (NamespaceNet if namespaces else ProxyNet)(names, self.broker.port)
        self.broker.extra_conf = self.net.broker_listeners()
        self.nodes: dict[str, ChaosNode] = {}
        self._names = names
        self._wal_off = wal_off
        self._run_id = f"chaos{os.getpid()}-{root.name}"[-40:]

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self.net.setup)
            await self.net.start()
            self.broker.start()
            self.nodes = {
                n: ChaosNode(n, self.root, self.net, self.broker, self._run_id, wal=n not in self._wal_off)
                for n in self._names
            }
            for node in self.nodes.values():
                node.start()
            await self.wait_ready(list(self.nodes))
            # The broker keeps messages only for subscriptions it knows: nothing may be published before
            # each node's first subscription (later restarts resume their persistent sessions).
            async with asyncio.timeout(60):
                for node in self.nodes.values():
                    await node.subscribed()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes.values()), return_exceptions=True)
        self.broker.stop()
        await self.net.close()

    async def wait_ready(self, names: list[str], timeout_s: float = 60) -> None:
        """Until every named node answers on its API (a liveness cap, not a speed check)."""
        async with asyncio.timeout(timeout_s):
            for name in names:
                node = self.nodes[name]
                while await node.status() is None:
                    if not node.running:
                        raise AssertionError(f"{name} exited at startup:\n{node.log_tail()}")
                    await asyncio.sleep(0.1)
