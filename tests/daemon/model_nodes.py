"""Real ``drsdtp run`` processes for the model tests, and a third-party kernel plug-in installed for them.

The plug-in is a package generated in a temporary directory with a ``.dist-info`` whose entry_points.txt
advertises its kernel in the ``drsdtp.kernels`` group; a node process finds it because that directory is on
its ``PYTHONPATH`` (the way an installed wheel is found on ``site-packages``). Removing the directory
uninstalls it: no other process ever sees it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from drsdtp.client import connect, field_to_python
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.ingest.support import free_port

ROOT = pathlib.Path(__file__).parents[2]
PLUGIN_KERNEL = "acme.flow_ratio"

PLUGIN_SOURCE = '''
"""A third-party kernel: flow proportional to speed, the ratio learnt per twin (drsdtp's kernel protocol)."""
from types import MappingProxyType
import numpy as np
from drsdtp.kernels import Prediction, TrackerStep


class FlowRatioKernel:
    name = "acme.flow_ratio"
    variables = ("flow",)
    inputs = ("speed",)
    safe_params = ("ratio",)
    default_params = MappingProxyType({"ratio": 100.0 / 2900.0})

    def tracker(self, prior):
        unknown = set(prior) - {"ratio"}
        if unknown:
            from drsdtp.errors import ConfigError
            raise ConfigError(f"params.{sorted(unknown)[0]}", "unknown parameter; expected ratio")
        return RatioTracker(prior.get("ratio", self.default_params["ratio"]))

    def simulate(self, state, scenario, horizon_s):
        speed = scenario.inputs.get("speed", state.values.get("speed", 0.0))
        ratio = state.params.get("ratio", self.default_params["ratio"])
        offsets = np.linspace(0.0, horizon_s, 5)
        mean = {"flow": np.full(5, ratio * speed), "speed": np.full(5, speed)}
        return Prediction(self.name, state.t_s, offsets, mean, mean, mean)


class RatioTracker:
    def __init__(self, ratio):
        self.ratio = ratio
        self.speed = np.zeros(0)
        self.flow = np.zeros(0)

    def resize(self, slots):
        extra = slots - self.speed.shape[0]
        if extra > 0:
            self.speed = np.r_[self.speed, np.full(extra, np.nan)]
            self.flow = np.r_[self.flow, np.full(extra, np.nan)]

    def step(self, slots, dt_s, observations):
        idx = np.asarray(slots, dtype=np.intp)
        self.resize(int(idx.max()) + 1 if idx.size else 0)
        for name, store in (("speed", self.speed), ("flow", self.flow)):
            obs = observations.get(name)
            if obs is not None:
                value, ok, _, _ = obs.fused()
                store[idx] = np.where(ok, value, store[idx])
        prior = self.ratio * self.speed[idx]
        spread = 0.05 * np.abs(prior)
        return TrackerStep(MappingProxyType({"flow": prior}), MappingProxyType({"flow": spread}))

    def state(self, slot):
        return {"speed": float(self.speed[slot]), "flow": float(self.flow[slot])}, {}

    def params(self, slot):
        return {"ratio": self.ratio}, {"ratio": 0.0}

    def candidate_params(self, slot):
        return {"ratio": self.ratio}

    def commit(self, slot, *, relaxed=False):
        return ()

    def reopen(self, slots):
        pass
'''


def stuck_rooms_toml(speed: float, intelligence: str = "", extra: str = "") -> str:
    """Two simulated rooms (``a/room-1``, ``a/room-2``) under the room model, at plant speed ``speed``, whose
    ``room-1`` ``temp_2`` sticks at step 40: the node config the daemon tests of the intelligence share.
    ``intelligence`` adds keys to ``[intelligence]``; ``extra`` is appended (more tables)."""
    return f"""
[intelligence]
time_scale = {speed}
{intelligence}
[[twins]]
match = "a/room-*"
model = "room"
[[adapters]]
type = "simulated"
name = "plant-a"
twin_prefix = "a/"
rooms = 2
seed = 3
dt_s = 10.0
speedup = {speed}
[[adapters.faults]]
kind = "stuck"
twin = "room-1"
field = "temp_2"
onset_step = 40
{extra}"""


def install_plugin(root: pathlib.Path) -> pathlib.Path:
    """Generate the plug-in under ``root``; returns the directory to put on ``PYTHONPATH``."""
    site = root / "site"
    (site / "acme_kernels").mkdir(parents=True)
    (site / "acme_kernels" / "__init__.py").write_text(PLUGIN_SOURCE)
    info = site / "acme_kernels-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-kernels\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[drsdtp.kernels]\n{PLUGIN_KERNEL} = acme_kernels:FlowRatioKernel\n"
    )
    return site


def drsdtp(
    *args: str, pythonpath: pathlib.Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRSDTP_")}
    path = os.pathsep.join(str(p) for p in (ROOT, pythonpath) if p is not None)
    return subprocess.run(
        [sys.executable, "-m", "drsdtp", *args],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class NodeProcess:
    """One ``drsdtp run`` with a generated config (``body``: everything but node id, dirs, ports)."""

    def __init__(
        self, root: pathlib.Path, name: str, body: str, *, pythonpath: pathlib.Path | None = None
    ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.api_port, self.peer_port, self.metrics_port = free_port(), free_port(), free_port()
        self.config = self.dir / "node.toml"
        self.pythonpath = pythonpath
        self.write(body)
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self, body: str) -> None:
        self.config.write_text(
            f'node_id = "{self.name}"\ndata_dir = "{self.dir / "data"}"\nlog_level = "info"\n'
            f'[listen]\napi = "127.0.0.1:{self.api_port}"\nmetrics = "127.0.0.1:{self.metrics_port}"\n'
            f'peer = "127.0.0.1:{self.peer_port}"\n{body}'
        )

    def start(self) -> None:
        log = (self.dir / "node.log").open("ab")
        path = os.pathsep.join(str(p) for p in (ROOT, self.pythonpath) if p is not None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": path},
        )
        log.close()

    def log(self) -> str:
        return (self.dir / "node.log").read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def call(self, method: str, request: object) -> Any:
        channel, stub = connect(Address("127.0.0.1", self.api_port))
        async with channel:
            return await getattr(stub, method)(request, timeout=10)

    async def insight(self, twin: str, kind: str = "health", **params: object) -> dict[str, Any] | None:
        """The insight document, or None while the node cannot answer yet (starting, no pass yet)."""
        request = api_pb2.InsightRequest(twin_id=twin, kind=kind, params_json=json.dumps(params))
        try:
            reply = await self.call("Insight", request)
        except grpc.aio.AioRpcError as exc:
            waiting = "no intelligence pass" in (exc.details() or "")  # the first pass is a few seconds away
            if waiting or exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                return None
            raise
        doc: dict[str, Any] = json.loads(reply.json)
        return doc

    async def fields(self, twin: str) -> dict[str, object]:
        try:
            twin_msg = await self.call("GetTwin", api_pb2.GetTwinRequest(twin_id=twin))
        except grpc.aio.AioRpcError:
            return {}
        return {f.name: field_to_python(f) for f in twin_msg.fields}


async def eventually(check: Callable[[], Awaitable[Any]], limit_s: float, what: str) -> Any:
    """Poll an async check until it returns something truthy (a liveness cap, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {limit_s} s waiting until {what}"
        await asyncio.sleep(0.5)
