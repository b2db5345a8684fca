"""Anomaly events with a real ``drsdtp run``: the log over the API (list and stream) and the CLI, kept across
a restart; twin health and anomaly counters in /metrics; the health-only Health RPC with each field's verdict
(sensor, process or model) through the SDK and the HTTP face."""

from __future__ import annotations

import asyncio
import json
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from drsdtp.client import AsyncClient, FieldHealth
from drsdtp.wire.v1 import api_pb2
from tests.daemon.model_nodes import NodeProcess, drsdtp, eventually, stuck_rooms_toml
from tests.ingest.support import free_port

SPEED = 20


def rooms(http_port: int) -> str:
    return stuck_rooms_toml(
        SPEED,
        intelligence="anomalies_per_twin = 50",
        extra=f'[api.http]\nlisten = "127.0.0.1:{http_port}"\n',
    )


@pytest.fixture
def http_port() -> int:
    return free_port()


@pytest.fixture
def node(tmp_path: pathlib.Path, http_port: int) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path, "edge-a", rooms(http_port))
    try:
        yield proc
    finally:
        proc.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body: bytes = reply.read()
    return body.decode()


def post_json(port: int, path: str, body: object) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        out: dict[str, Any] = json.loads(reply.read())
    return out


async def stuck_events(node: NodeProcess) -> list[api_pb2.AnomalyRecord]:
    try:
        reply = await node.call("ListAnomalies", api_pb2.ListAnomaliesRequest(twin_id="a/room-1"))
    except Exception:
        return []
    return [r for r in reply.anomalies if r.field == "temp_2" and r.kind == "stuck"]


@pytest.mark.integration
async def test_anomalies_are_listed_streamed_counted_and_kept_across_a_restart(
    node: NodeProcess, http_port: int
) -> None:
    node.start()
    found = await eventually(lambda: stuck_events(node), 120, "the stuck sensor is logged as an anomaly")
    event = found[0]
    assert event.model == "room" and event.twin_id == "a/room-1" and event.severity in ("HIGH", "CRITICAL")
    assert event.seq >= 1 and event.logged_ms > 0 and event.detail

    # the stream sends what was logged after a cursor, then goes on with new events
    channel_events: list[api_pb2.AnomalyRecord] = []

    async def first_streamed() -> None:
        from drsdtp.client import connect
        from drsdtp.config import Address

        channel, stub = connect(Address("127.0.0.1", node.api_port))
        async with channel:
            request = api_pb2.WatchAnomaliesRequest(twin_id="a/room-1", after_seq=event.seq - 1)
            async for record in stub.WatchAnomalies(request):
                channel_events.append(record)
                return

    await asyncio.wait_for(first_streamed(), 30)
    assert channel_events[0].seq == event.seq and channel_events[0].kind == "stuck"

    # health only: the stuck room is not healthy, the other is judged too
    health = await node.call("Health", api_pb2.HealthRequest(model="room"))
    by_twin = {t.twin_id: t for t in health.twins}
    assert set(by_twin) == {"a/room-1", "a/room-2"}
    assert by_twin["a/room-1"].status != "HEALTHY"
    assert "temp_2" in {f.field for f in by_twin["a/room-1"].fields}

    # the verdict: a sensor stuck while the room moves is the sensor's fault, on its own data
    async def sensor_verdict() -> FieldHealth | None:
        async with AsyncClient(f"127.0.0.1:{node.api_port}") as client:
            report = await client.health(["a/room-1"])
        fields = {f.field: f for t in report.twins for f in t.fields}
        found = fields.get("temp_2")
        return found if found is not None and found.cause == "sensor" else None

    verdict = await eventually(sensor_verdict, 60, "the stuck sensor is called a sensor fault")
    assert verdict.status != "HEALTHY" and "STUCK" in verdict.cause_detail, verdict
    http = await asyncio.to_thread(post_json, http_port, "/api/v2/Health", {"twinIds": ["a/room-1"]})
    (twin,) = http["twins"]
    temp_2 = next(f for f in twin["fields"] if f["field"] == "temp_2")
    assert temp_2["cause"] == "sensor" and "STUCK" in temp_2["causeDetail"], temp_2

    # /metrics: per model, never per twin
    body = await asyncio.to_thread(scrape, node.metrics_port)
    assert 'drsdtp_anomalies_total{kind="stuck",model="room"}' in body
    assert 'drsdtp_twin_health{model="room",status="HEALTHY"}' in body
    assert "a/room-1" not in body

    # the CLI
    cli = await asyncio.to_thread(
        drsdtp, "anomalies", "a/room-1", "--json", "--api", f"127.0.0.1:{node.api_port}"
    )
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert any(d["seq"] == event.seq and d["kind"] == "stuck" for d in listed)
    table = await asyncio.to_thread(drsdtp, "anomalies", "--api", f"127.0.0.1:{node.api_port}")
    assert table.returncode == 0 and "a/room-1" in table.stdout and "anomaly events held" in table.stdout

    # a restart keeps the log: the same event, with the same sequence number
    node.stop()
    node.start()

    async def kept() -> list[api_pb2.AnomalyRecord]:
        return [r for r in await stuck_events(node) if r.seq == event.seq]

    again = await eventually(kept, 60, "the restarted node lists the event it logged before")
    assert again[0].detail == event.detail and again[0].t_s == event.t_s
    assert node.alive()


@pytest.mark.integration
def test_the_cli_reports_an_unreachable_node_clearly(tmp_path: pathlib.Path) -> None:
    from tests.ingest.support import free_port

    result = drsdtp("anomalies", "--api", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert result.returncode == 1
    assert "anomalies on 127.0.0.1" in result.stderr and "UNAVAILABLE" in result.stderr
