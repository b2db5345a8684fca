"""An idle node loads only what its config uses (issue 13: idle RSS). A real ``drsdtp run`` process with no
adapters, no northbound and no KubeEdge mapper writes the modules it imported when it exits; the protocol
libraries, the SDK, the optional integrations and numpy (arrays are for readings: history and intelligence
build theirs on the first one) must not be among them. Module names, not RSS: what is imported is exact, a
resident set is not."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import os
import pathlib
import subprocess
import sys
import types
import urllib.request
from dataclasses import dataclass

import pytest

from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.daemon.floods import ROOT, Daemon
from tests.ingest.support import Mosquitto, free_port, running, wait_port

# The node's own CLI entry, with the module list written at a clean exit (SIGTERM is one).
_RUN = """
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
from drsdtp.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Each only when configured: adapters' protocol stacks, the SDK, northbound and KubeEdge integrations.
NOT_WHEN_IDLE = (
    "asyncua",
    "pymodbus",
    "paho",
    "aiomqtt",
    "serial",
    "asyncpg",
    "drsdtp.client",
    "drsdtp.northbound",
    "drsdtp.kubeedge.mapper",
    "drsdtp.adapters.mqtt",
    "drsdtp.adapters.opcua",
    "drsdtp.adapters.modbus",
    "drsdtp.adapters.serial",
    "drsdtp.adapters.sparkplug",
    "drsdtp.adapters.sparkplug_write",
    "drsdtp.wire.sparkplug",
    "drsdtp.sim",
    "drsdtp.dashboard",
    "drsdtp.api.http",
    "numpy",
    # The intelligence engine and its health monitor: built with the first modelled twin. The results, spec
    # and status enums the API names are their own modules; no package __init__ imports its whole package.
    "drsdtp.intelligence.engine",
    "drsdtp.intelligence.health",
    "drsdtp.intelligence.detect",
    "drsdtp.intelligence.windows",
    # The built-in kernels: with the first model read (a config without models reads none at start).
    "drsdtp.kernels.thermal",
    "drsdtp.kernels.pump",
    "drsdtp.kernels.motor",
    "drsdtp.kernels.meter",
    "drsdtp.kernels.kalman",
    "drsdtp.kernels.linear",
    # Plug-in scans (entry points): only for a kernel or adapter type no built-in has.
    "importlib.metadata",
    "importlib.resources",
    # The metrics' exposition (with http.server, email, urllib): at the first scrape. E-mail: for a target.
    "prometheus_client",
    "smtplib",
    "email",
    # A Watch stream that asked for JSON.
    "google.protobuf.json_format",
    # NTP: only with clock.ntp_server.
    "ntplib",
    # Only for a refused name's did-you-mean, and a CSV history export.
    "difflib",
    "csv",
    # The rule engine, its expressions and the notification outbox: only with [[rules]] or [[notify]].
    "drsdtp.rules.service",
    "drsdtp.rules.engine",
    "drsdtp.rules.expr",
    "drsdtp.rules.spec",
    "drsdtp.notify",
    # getpass (with termios) for the CLI's default --actor: the node parses its arguments too.
    "getpass",
    "termios",
)


# An MQTT adapter whose topic rules are not Sparkplug B, with no reading yet.
NOT_WHEN_MQTT_IDLE = (
    "numpy",
    "drsdtp.adapters.sparkplug",
    "drsdtp.adapters.sparkplug_write",
    "drsdtp.wire.sparkplug",
    "drsdtp.northbound",
    "google.protobuf.json_format",
)


def loaded(modules: set[str], excluded: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that are, or are under, one of ``excluded``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in excluded))


@dataclass
class ListingDaemon(Daemon):
    """A node process that lists its imported modules in ``modules.txt`` when it exits."""

    @property
    def listing(self) -> pathlib.Path:
        return self.workdir / "modules.txt"

    def modules(self) -> set[str]:
        assert self.proc is not None and self.proc.returncode == 0, (self.workdir / "node.log").read_text()
        return set(self.listing.read_text().split())

    def spawn(self) -> subprocess.Popen[bytes]:
        self.write_config()
        command = [sys.executable, "-c", _RUN, str(self.listing), "run", "--config", str(self.config_path)]
        with (self.workdir / "node.log").open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)}
            )
        return self.proc


async def test_an_idle_node_imports_no_adapter_sdk_or_integration(tmp_path: pathlib.Path) -> None:
    node = ListingDaemon(tmp_path, "", node_id="idle")
    await node.start()
    await node.status()  # serving: every service the config enables has started
    node.stop()
    modules = node.modules()
    assert {"drsdtp.node.node", "drsdtp.api.server", "grpc"} <= modules  # the listing is the node's
    assert loaded(modules, NOT_WHEN_IDLE) == []


async def test_an_idle_node_with_history_imports_no_numpy(tmp_path: pathlib.Path) -> None:
    """History on (as the memory bench's node has it): its store makes its arrays at the first batch."""
    node = ListingDaemon(tmp_path, "[history]\nenabled = true\n", node_id="idle-history")
    await node.start()
    await node.status()
    node.stop()
    modules = node.modules()
    assert "drsdtp.history.store" in modules  # history ran
    assert "numpy" not in modules


async def test_a_node_with_an_idle_mqtt_adapter_imports_no_numpy_or_sparkplug(tmp_path: pathlib.Path) -> None:
    """Connected and subscribed to a real broker, no message yet: the adapter's key table, latency window and
    wire decoder allocate their arrays at the first batch, so numpy stays out until a reading arrives; its
    topic rules are plain numbers, so Sparkplug's decoder, commands and protobuf stay out too."""
    broker = Mosquitto(tmp_path, extra_conf="log_type subscribe\n")  # the log shows the node's SUBSCRIBE
    adapter = (
        f'[[adapters]]\ntype = "mqtt"\nname = "broker"\nhost = "127.0.0.1"\nport = {broker.port}\n'
        'client_id = "drsdtp-idle"\n[[adapters.topics]]\ntemplate = "site/{twin}/{field}"\n'
    )
    with running(broker):
        node = ListingDaemon(tmp_path, adapter, node_id="idle-mqtt")
        await node.start()
        for _ in range(600):  # until subscribed (a liveness cap, not a timing assertion)
            if "drsdtp-idle 1 site/+/+" in broker.log.read_text():  # client, QoS, filter
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the node never subscribed: {broker.log.read_text()}")
        await node.status()
        node.stop()
    modules = node.modules()
    assert {"drsdtp.adapters.mqtt", "aiomqtt"} <= modules  # the adapter ran
    assert loaded(modules, NOT_WHEN_MQTT_IDLE) == []


async def test_a_node_with_an_idle_modbus_adapter_imports_no_numpy(tmp_path: pathlib.Path) -> None:
    """A Modbus adapter whose device does not answer yet (nothing listens on its port): pymodbus and the
    adapter are loaded, the block decoder's plan is struct formats, so numpy waits for a reading."""
    adapter = (
        f'[[adapters]]\ntype = "modbus"\nname = "plc"\nhost = "127.0.0.1"\nport = {free_port()}\n'
        'twin = "meter"\n[[adapters.registers]]\nfield = "v"\naddress = 0\ndata_type = "float32"\n'
    )
    node = ListingDaemon(tmp_path, adapter, node_id="idle-modbus")
    await node.start()
    for _ in range(600):  # until its first session failed (a liveness cap, not a timing assertion)
        if "cannot connect to 127.0.0.1" in (node.workdir / "node.log").read_text():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError((node.workdir / "node.log").read_text())
    status = await node.status()
    node.stop()
    modules = node.modules()
    assert [a.name for a in status.adapters] == ["plc"]  # configured and running
    assert {"drsdtp.adapters.modbus", "pymodbus"} <= modules
    assert "numpy" not in modules


async def test_the_first_reading_brings_numpy_in(tmp_path: pathlib.Path) -> None:
    """The other side of the idle test: the same node given one reading imports numpy (for its history and
    intelligence), so a listing that never holds numpy cannot pass the idle test by accident."""
    node = ListingDaemon(tmp_path, "", node_id="fed")
    await node.start()
    op = api_pb2.FieldOp(field="temp", report=api_pb2.FieldValue(f64=21.5))
    channel, stub = connect(Address("127.0.0.1", node.api_port))
    async with channel:
        twin = api_pb2.TwinWrite(twin_id="room-1", ops=[op], create=api_pb2.CreateTwin())
        await stub.Write(api_pb2.WriteRequest(twins=[twin]), timeout=10)
        reply = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="room-1"), timeout=10)
    node.stop()
    assert "temp" in str(reply)
    assert "numpy" in node.modules()


LAZY_PACKAGES = ("drsdtp.actions", "drsdtp.history", "drsdtp.intelligence", "drsdtp.kernels")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_a_lazy_package_resolves_every_name_it_exports(package: str) -> None:
    """The package __init__s import their names on first read (drsdtp.lazy.exports): each name in __all__
    must come from the submodule the mapping says, and an unknown name is an AttributeError."""
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None and getattr(module, name) is value
        owner = getattr(value, "__module__", None)
        assert owner is None or owner.startswith(("drsdtp.", "builtins", "typing")), (name, owner)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def _type_checking_imports(module: types.ModuleType) -> set[str]:
    """The names a package __init__ imports under ``if TYPE_CHECKING:`` (what mypy sees it export)."""
    names: set[str] = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    names |= {alias.asname or alias.name for alias in stmt.names}
    return names


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_a_lazy_package_exports_at_run_time_what_mypy_sees(package: str) -> None:
    """Each lazy package lists its names three times (the TYPE_CHECKING imports, the lazy map, __all__):
    a name mypy sees but the map lacks fails only at its first read, in production. __all__ must match the
    TYPE_CHECKING imports, and every one of them must resolve at run time."""
    module = importlib.import_module(package)
    seen_by_mypy = _type_checking_imports(module)
    assert seen_by_mypy, package
    assert set(module.__all__) == seen_by_mypy
    for name in seen_by_mypy:
        getattr(module, name)


def test_the_cli_finds_every_node_command_without_the_sdk() -> None:
    from drsdtp.node.commands import NodeCommands
    from drsdtp.node_commands import _NODE_COMMANDS

    assert {n for n in vars(NodeCommands) if not n.startswith("_")} == _NODE_COMMANDS


async def test_the_first_scrape_brings_prometheus_client_in(tmp_path: pathlib.Path) -> None:
    """The other side of the idle test for metrics: a scrape answers with the node's metrics."""
    node = ListingDaemon(tmp_path, "", node_id="scraped")
    await node.start()
    # start() waits for the API; the metrics server is a sibling service that may bind a moment later.
    await asyncio.to_thread(
        wait_port, node.metrics_port, 30.0, lambda: node.proc is not None and node.proc.poll() is None
    )
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read().decode())
    node.stop()
    assert 'drsdtp_node_info{node_id="scraped"' in body
    assert "prometheus_client" in node.modules()
