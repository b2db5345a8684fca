"""An idle node loads only what its config uses (issue 13: idle RSS). A real ``drsdtp run`` process with no
adapters, no northbound and no KubeEdge mapper writes the modules it imported when it exits; the protocol
libraries, the SDK and the optional integrations must not be among them. Module names, not RSS: what is
imported is exact, a resident set is not."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

from tests.daemon.floods import ROOT, Daemon

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
    "drsdtp.northbound.postgres",
    "drsdtp.northbound.sparkplug",
    "drsdtp.kubeedge.mapper",
    "drsdtp.adapters.mqtt",
    "drsdtp.adapters.opcua",
    "drsdtp.adapters.modbus",
    "drsdtp.adapters.serial",
    "drsdtp.adapters.sparkplug",
    "drsdtp.sim",
    "drsdtp.dashboard",
    "drsdtp.api.http",
)


@dataclass
class ListingDaemon(Daemon):
    """A node process that lists its imported modules in ``modules.txt`` when it exits."""

    @property
    def listing(self) -> pathlib.Path:
        return self.workdir / "modules.txt"

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
    assert node.proc is not None and node.proc.returncode == 0, (tmp_path / "node.log").read_text()
    modules = set(node.listing.read_text().split())
    assert {"drsdtp.node.node", "drsdtp.api.server", "grpc"} <= modules  # the listing is the node's
    loaded = sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in NOT_WHEN_IDLE))
    assert loaded == []


def test_the_cli_finds_every_node_command_without_the_sdk() -> None:
    from drsdtp.node.commands import NodeCommands
    from drsdtp.node_commands import _NODE_COMMANDS

    assert {n for n in vars(NodeCommands) if not n.startswith("_")} == _NODE_COMMANDS
