"""The networks the chaos check runs nodes on: network namespaces (root), or loopback with TCP proxies.

Both give each node a peer address per peer that a partition can cut, an address the driver reaches its
API and metrics on, and an address of the shared MQTT broker (in the root namespace, never cut).

* :class:`NamespaceNet`: each node in its own namespace, a veth pair per pair of nodes (a partition takes
  both ends down: new connections fail at once, established ones hang until keepalive gives up, as on a
  real cut), and a control veth to the root namespace for the broker and the driver. Addresses are private
  to these links (nothing is routed or forwarded). Names carry this process's id, so concurrent runs never
  collide and a later run removes namespaces whose owner died.
* :class:`ProxyNet`: every node on loopback, reaching each peer through its own proxy
  (:class:`tests.gossip.procs.Proxy`); a partition blocks the two proxies of a pair (connections reset,
  new ones refused). Runs anywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
from dataclasses import dataclass

from tests.gossip.procs import Proxy
from tests.ingest.support import free_port

PEER_PORT = 7400
API_PORT = 7401
METRICS_PORT = 9464


@dataclass(frozen=True)
class Endpoints:
    """What one node listens on and how the others and the driver reach it."""

    listen_peer: str
    listen_api: str
    listen_metrics: str
    api: str  # host:port for the driver
    metrics: str
    broker_host: str  # where the node finds the broker


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"dcprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "x0", "type", "veth", "peer", "name", "x1")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns does not work here: {exc}"
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _ip("netns", "del", probe)
    return None


def remove_orphans() -> list[str]:
    """Deletes chaos namespaces left by runs whose process is gone (a crashed or killed test run)."""
    removed = []
    for line in _ip("netns", "list").splitlines():
        match = re.match(r"^(dc(\d+)[a-z]+)\b", line)
        if match and not os.path.exists(f"/proc/{match.group(2)}"):
            with contextlib.suppress(OSError):
                _ip("netns", "del", match.group(1))
                removed.append(match.group(1))
    return removed


class NamespaceNet:
    kind = "namespaces"

    def __init__(self, nodes: list[str], broker_port: int) -> None:
        self.nodes = nodes
        self.broker_port = broker_port
        self.tag = f"dc{os.getpid()}"
        self.prefix = self._free_prefix()
        self.ns = {n: f"{self.tag}{n}" for n in nodes}
        self._index = {n: i + 1 for i, n in enumerate(nodes)}
        self._created: list[str] = []

    @staticmethod
    def _free_prefix() -> str:
        used = _ip("-o", "addr") + _ip("route")
        for second in itertools.chain(range(200 + os.getpid() % 50, 250), range(100, 250)):
            if f"10.{second}." not in used:
                return f"10.{second}"
        raise OSError("no free 10.x.0.0/16 for the chaos links")

    def control(self, node: str) -> tuple[str, str]:
        """(root side, node side) addresses of the node's control link."""
        k = self._index[node]
        return f"{self.prefix}.{k}.1", f"{self.prefix}.{k}.2"

    def _pair(self, a: str, b: str) -> tuple[str, str]:
        """Addresses of a and b on their own link."""
        i, j = sorted((self._index[a], self._index[b]))
        subnet = f"{self.prefix}.{100 + 10 * i + j}"
        return (
            (f"{subnet}.1", f"{subnet}.2")
            if self._index[a] < self._index[b]
            else (f"{subnet}.2", f"{subnet}.1")
        )

    def broker_listeners(self) -> str:
        """Extra mosquitto listeners: one on the root side of every control link."""
        return "".join(f"listener {self.broker_port} {self.control(n)[0]}\n" for n in self.nodes)

    def setup(self) -> None:
        remove_orphans()
        for n in self.nodes:
            ns = self.ns[n]
            _ip("netns", "add", ns)
            self._created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            root_side, node_side = self.control(n)
            _ip("link", "add", ns, "type", "veth", "peer", "name", "ctl", "netns", ns)
            _ip("addr", "add", f"{root_side}/24", "dev", ns)
            _ip("link", "set", ns, "up")
            _ip("-n", ns, "addr", "add", f"{node_side}/24", "dev", "ctl")
            _ip("-n", ns, "link", "set", "ctl", "up")
        for a, b in itertools.combinations(self.nodes, 2):
            addr_a, addr_b = self._pair(a, b)
            _ip(
                "-n",
                self.ns[a],
                "link",
                "add",
                f"p-{b}",
                "type",
                "veth",
                "peer",
                "name",
                f"p-{a}",
                "netns",
                self.ns[b],
            )
            _ip("-n", self.ns[a], "addr", "add", f"{addr_a}/24", "dev", f"p-{b}")
            _ip("-n", self.ns[b], "addr", "add", f"{addr_b}/24", "dev", f"p-{a}")
        self.heal_all()

    def endpoints(self, node: str) -> Endpoints:
        root_side, node_side = self.control(node)
        return Endpoints(
            listen_peer=f"0.0.0.0:{PEER_PORT}",
            listen_api=f"0.0.0.0:{API_PORT}",
            listen_metrics=f"0.0.0.0:{METRICS_PORT}",
            api=f"{node_side}:{API_PORT}",
            metrics=f"{node_side}:{METRICS_PORT}",
            broker_host=root_side,
        )

    def peer_address(self, node: str, peer: str) -> str:
        return f"{self._pair(peer, node)[0]}:{PEER_PORT}"

    def command(self, node: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[node], *argv]

    async def start(self) -> None:
        pass

    def _link(self, a: str, b: str, state: str) -> None:
        _ip("-n", self.ns[a], "link", "set", f"p-{b}", state)
        _ip("-n", self.ns[b], "link", "set", f"p-{a}", state)

    def cut(self, a: str, b: str) -> None:
        self._link(a, b, "down")

    def heal(self, a: str, b: str) -> None:
        self._link(a, b, "up")

    def heal_all(self) -> None:
        for a, b in itertools.combinations(self.nodes, 2):
            self.heal(a, b)

    async def close(self) -> None:
        for ns in self._created:
            with contextlib.suppress(OSError):
                _ip("netns", "del", ns)  # its veths (and the control link's root side) go with it
        self._created.clear()


class ProxyNet:
    kind = "proxies"

    def __init__(self, nodes: list[str], broker_port: int) -> None:
        self.nodes = nodes
        self.broker_port = broker_port
        self.ports = {n: (free_port(), free_port(), free_port()) for n in nodes}  # peer, api, metrics
        self.proxies: dict[tuple[str, str], Proxy] = {}

    def broker_listeners(self) -> str:
        return ""

    def setup(self) -> None:
        pass

    async def start(self) -> None:
        for a, b in itertools.permutations(self.nodes, 2):
            proxy = Proxy(self.ports[b][0])
            await proxy.start()
            self.proxies[(a, b)] = proxy

    def endpoints(self, node: str) -> Endpoints:
        peer, api, metrics = self.ports[node]
        return Endpoints(
            listen_peer=f"127.0.0.1:{peer}",
            listen_api=f"127.0.0.1:{api}",
            listen_metrics=f"127.0.0.1:{metrics}",
            api=f"127.0.0.1:{api}",
            metrics=f"127.0.0.1:{metrics}",
            broker_host="127.0.0.1",
        )

    def peer_address(self, node: str, peer: str) -> str:
        return f"127.0.0.1:{self.proxies[(node, peer)].port}"

    def command(self, node: str, argv: list[str]) -> list[str]:
        return argv

    def cut(self, a: str, b: str) -> None:
        self.proxies[(a, b)].block()
        self.proxies[(b, a)].block()

    def heal(self, a: str, b: str) -> None:
        self.proxies[(a, b)].unblock()
        self.proxies[(b, a)].unblock()

    def heal_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.unblock()

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
        self.proxies.clear()


Net = NamespaceNet | ProxyNet
