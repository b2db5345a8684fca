"""limits.max_twins holds across restarts: a real node process (``drsdtp run``) fed by a real mosquitto is
filled to its cap, restarted, and offered many new twins again: none is created, the ones it holds keep
updating, and every refusal is counted."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsdtp.client import connect, field_to_python
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2

from .support import Mosquitto, free_port, terminate, wait_until

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).parents[2]
CAP = 21  # the node's own membership twin (_members) and 20 twins from ingestion


class NodeProcess:
    def __init__(self, root: pathlib.Path, broker: Mosquitto) -> None:
        self.api, self.metrics = free_port(), free_port()
        self.config = root / "node.toml"
        self.log = root / "node.log"
        self.config.write_text(f"""
node_id = "caps-1"
data_dir = "{root / "data"}"
[listen]
api = "127.0.0.1:{self.api}"
metrics = "127.0.0.1:{self.metrics}"
peer = "127.0.0.1:0"
[limits]
max_twins = {CAP}
[history]
enabled = false
[[adapters]]
type = "mqtt"
name = "site"
host = "127.0.0.1"
port = {broker.port}
client_id = "drsdtp-caps-test"
[adapters.ingest]
max_keys = 8  # the adapter's key table is far smaller than the fleet: it must not matter
[[adapters.topics]]
template = "site/{{twin}}/{{field}}"
qos = 1
payload = "number"
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drsdtp", "run", "--config", str(self.config)],
                cwd=ROOT,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def acked(self) -> float:
        return self.metric("drsdtp_adapter_events_total", source="site", event="acked")

    async def twins(self) -> dict[str, dict[str, object]]:
        channel, stub = connect(Address("127.0.0.1", self.api))
        async with channel:
            listing = await stub.ListTwins(api_pb2.ListTwinsRequest(), timeout=5)
            out = {}
            for t in listing.twins:
                twin = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=t.twin_id), timeout=5)
                out[t.twin_id] = {f.name: field_to_python(f) for f in twin.fields}
            return out


@pytest.fixture
def node(tmp_path: pathlib.Path, broker: Mosquitto) -> Iterator[NodeProcess]:
    n = NodeProcess(tmp_path, broker)
    try:
        yield n
    finally:
        n.stop()
        if os.environ.get("DRSDTP_SHOW_NODE_LOG"):
            print(n.log.read_text())


async def publish(port: int, messages: list[tuple[str, str]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as pub:
        for topic, payload in messages:
            await pub.publish(topic, payload, qos=1)


async def started(node: NodeProcess) -> None:
    node.start()
    await wait_until(
        lambda: node.metric("drsdtp_adapter_connected", source="site") == 1, 30, "the node connected"
    )


async def test_the_twin_cap_holds_across_a_restart(node: NodeProcess, broker: Mosquitto) -> None:
    await started(node)
    await publish(broker.port, [(f"site/first-{i}/v", str(i)) for i in range(60)])
    await wait_until(lambda: node.acked() == 60, 30, "the first 60 readings acknowledged")
    held = await node.twins()
    assert len(held) == CAP - 1  # the twins ListTwins shows exclude the node's own _members
    refused = node.metric("drsdtp_ingest_invalid_by_reason_total", source="site", reason="twin cap reached")
    assert refused == 40
    node.stop()

    await started(node)  # a new process: empty key table, caps counted from what the store recovered
    updates = [(f"site/{twin}/v", "99") for twin in held]
    fresh = [(f"site/second-{i}/v", str(i)) for i in range(60)]
    mixed = [m for i, new in enumerate(fresh) for m in ([new, updates[i]] if i < len(updates) else [new])]
    await publish(broker.port, mixed)
    await wait_until(lambda: node.acked() == 80, 30, "the second round acknowledged")
    after = await node.twins()
    assert sorted(after) == sorted(held)  # no new twin past the cap ...
    assert all(fields["v"] == 99.0 for fields in after.values())  # ... and the held ones keep updating
    refused = node.metric("drsdtp_ingest_invalid_by_reason_total", source="site", reason="twin cap reached")
    assert refused == 60  # counters restart with the process: every new twin of this run
    assert node.metric("drsdtp_twins") == CAP
