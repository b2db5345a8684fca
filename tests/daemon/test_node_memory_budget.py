"""The memory budget holds: a real node process (``drsdtp run``) with every external input pushed to its
configured limit at once stays under the budget computed from its config (``drsdtp.node.budget``), its RSS
sampled throughout from /proc, and keeps serving.

At once: MQTT at QoS 0 and 1 through a real mosquitto, new keys up to (and past) the adapter's key cap,
garbage and oversized payloads; a peer flooding deltas and never acknowledging; Watch streams from frozen
client processes, far more than the node's cap; garbage and oversized API requests on every method plus
real listings. A memory bound is not a timed assertion; the floods run for a fixed time only so the test
ends (under a minute on two cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsdtp.config import load_config
from drsdtp.node.budget import memory_budget
from tests.daemon.floods import Daemon, RssSampler, api_abuse, frozen_watchers, mqtt_flood, peer_flood
from tests.ingest.support import Mosquitto, running

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

KEYS = 20_000  # the twin cap (one field and its _scope per twin: the most twins ingestion may create)
PEER_TWINS, PEER_FIELDS = 200, 20
WATCH_CLIENTS, STREAMS_PER_CLIENT = 3, 100  # 300 streams against a cap of 32
FLOOD_S = 20.0


def node_body(broker_port: int) -> str:
    return f"""
# History on, with the example config's segment size: its queue and live segment are bounded and sealed
# segments are folded into blocks within a flush.
[history]
enabled = true

[limits]
max_twins = {KEYS}
max_fields = {2 * KEYS}
max_message_bytes = 131072
peer_buffer = 200
api_max_watchers = 32
api_max_watchers_per_caller = 32
api_watch_stall_s = 2.0
api_max_requests = 16

[[adapters]]
type = "mqtt"
name = "broker"
host = "127.0.0.1"
port = {broker_port}
client_id = "budget-node"
max_queued_qos0 = 2000
max_unacked = 2000
max_payload_bytes = 4096

[adapters.ingest]
max_keys = {KEYS}
buffer_readings = 20000
max_batch = 2000

[[adapters.topics]]
template = "q0/{{twin}}/{{field}}"
qos = 0
payload = "number"

[[adapters.topics]]
template = "q1/{{twin}}/{{field}}"
qos = 1
payload = "number"
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def test_a_node_under_every_flood_at_once_stays_within_its_memory_budget(
    tmp_path: pathlib.Path,
) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    with running(Mosquitto(broker_dir)) as broker:
        node = Daemon(tmp_path, node_body(broker.port))
        node.write_config()
        budget = memory_budget(
            load_config(node.config_path, {}), peer_twins=PEER_TWINS, peer_fields=PEER_TWINS * PEER_FIELDS
        )
        # Set on the way out too: a flood thread still running would hang the event loop's shutdown
        # (it waits for its executor's threads) if the test failed before it stopped them.
        stop_threads, stop = threading.Event(), asyncio.Event()
        try:
            started = time.monotonic()
            await node.start()
            idle = (await node.status()).twins
            with RssSampler(node.pid) as rss:
                mqtt = asyncio.create_task(
                    asyncio.to_thread(
                        mqtt_flood, broker.port, stop_threads, keys=KEYS, oversized_bytes=16_384
                    )
                )
                peer = asyncio.create_task(
                    peer_flood(node.peer_port, stop, twins=PEER_TWINS, fields=PEER_FIELDS, batch=32)
                )
                api = asyncio.create_task(api_abuse(node.api_port, stop))
                # Watchers once thousands of twins are there, so every snapshot is large (and keeps
                # growing, with changes streaming in).
                for _ in range(600):
                    if (await node.status()).twins >= KEYS // 4:
                        break
                    await asyncio.sleep(0.1)
                print(f"twins {(await node.status()).twins} after {time.monotonic() - started:.1f} s")
                async with contextlib.AsyncExitStack() as clients:
                    await asyncio.gather(
                        *(
                            clients.enter_async_context(frozen_watchers(node.api_port, STREAMS_PER_CLIENT))
                            for _ in range(WATCH_CLIENTS)
                        )
                    )
                    print(f"watchers open after {time.monotonic() - started:.1f} s")
                    open_streams: list[float] = []  # the node's gauge, sampled through the floods
                    for _ in range(int(FLOOD_S)):
                        await asyncio.sleep(1)
                        gauges = await asyncio.to_thread(scrape, node.metrics_port)
                        open_streams.append(gauges[("drsdtp_api_watchers", ())])
                    stop.set()
                    stop_threads.set()
                    sent_deltas = await peer
                    codes = await api
                    await mqtt
                    status = await node.status()  # the node serves on
                    metrics = await asyncio.to_thread(scrape, node.metrics_port)
        finally:
            stop.set()
            stop_threads.set()
            node.stop()
    report = f"peak RSS {rss.peak / 2**20:.1f} MiB; budget:\n{budget.describe()}"
    print(report)
    assert rss.peak < budget.total, report
    # Every flood reached the node and hit its limit (otherwise the bound proves nothing).
    assert idle + KEYS // 2 < status.twins <= KEYS + PEER_TWINS, status.twins  # flooded, and capped
    assert sent_deltas > 1000
    refused = metrics[("drsdtp_api_watchers_refused_total", (("reason", "node"),))]
    cut_off = metrics[("drsdtp_api_watchers_cut_off_total", ())]
    assert 0 < max(open_streams) <= 32, open_streams
    # Whether a frozen stream is also cut off here depends on how much the socket buffers absorbed first
    # (tests/daemon/test_node_watch.py proves the cut-off); the cap must hold either way.
    assert refused >= WATCH_CLIENTS * STREAMS_PER_CLIENT // 2, (refused, cut_off)
    assert codes.get("INVALID_ARGUMENT", 0) > 0 and codes.get("RESOURCE_EXHAUSTED", 0) > 0
    assert "UNKNOWN" not in codes and "INTERNAL" not in codes, codes
    assert status.received > KEYS // 2  # QoS 0 past the client queue is dropped (counted), not received
