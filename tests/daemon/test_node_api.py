"""A real node fed by the simulated plant, read over its real gRPC API and by the CLI in a subprocess."""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsdtp.api.convert import twin_message, value_message
from drsdtp.client import connect, field_to_python
from drsdtp.config import Address, NodeConfig, parse_config
from drsdtp.core import Store
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2

ROOT = pathlib.Path(__file__).parents[2]


def node_config(tmp: pathlib.Path, **extra: object) -> NodeConfig:
    raw: dict[str, object] = {
        "node_id": "api-1",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{"type": "simulated", "name": "plant", "rooms": 2, "dt_s": 1.0, "speedup": 50.0}],
        "twins": [{"match": "room-*", "model": "room"}],
        **extra,
    }
    return parse_config(raw)


async def wait_for(predicate: Callable[[], bool], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_api_lists_gets_watches_and_reads_history(tmp_path: pathlib.Path) -> None:
    async with Node(node_config(tmp_path)) as node:
        await wait_for(lambda: node.store.get("room-2", "temp_1") is not None)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            listing = await stub.ListTwins(api_pb2.ListTwinsRequest(model="room"))
            assert [t.twin_id for t in listing.twins] == ["room-1", "room-2"]
            assert listing.twins[0].model == "room" and listing.twins[0].scope == "default"
            twin = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="room-1", fields=["temp_1", "fan"]))
            got = {f.name: field_to_python(f) for f in twin.fields}
            assert set(got) == {"temp_1", "fan"} and isinstance(got["temp_1"], float)
            assert twin.fields[1].writer == node.store.replica_id
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            # Watch: the snapshot first, then live changes from ingestion.
            stream = stub.Watch(api_pb2.WatchRequest(twin_ids=["room-2"]))
            first = await stream.read()
            assert first.origin == "snapshot" and first.twin.twin_id == "room-2"
            live = await asyncio.wait_for(stream.read(), 10)
            assert live.origin == "ingest" and live.twin.twin_id == "room-2"
            stream.cancel()
            history = await stub.ReadHistory(api_pb2.HistoryRequest(twin_id="room-1", field="temp_1"))
            assert history.resolution == "raw" and len(history.values) >= 2
            assert list(history.ts_ms) == sorted(history.ts_ms)
            status = await stub.Status(api_pb2.StatusRequest())
            assert status.node_id == "api-1" and status.received > 0 and status.twins == 2


def test_a_desired_conflict_reads_as_every_intent_with_its_writer() -> None:
    a, b = Store(11), Store(22)
    a.set_manual_time(1_700_000_000_100)
    b.set_manual_time(1_700_000_000_000)
    a.merge(b.desire("hvac", "setpoint", 23.5))
    a.merge(b.desire("hvac", "mode", "eco"))
    a.desire("hvac", "setpoint", 21.0)  # saw b's 23.5: replaces it
    b.desire("hvac", "setpoint", 24.0)
    a.merge(b.encode_state())  # b's 24.0 did not see a's 21.0: a conflict
    a.clear_desired("hvac", "mode")
    fields = {f.name: f for f in twin_message(a, "hvac").fields}
    assert field_to_python(fields["setpoint"]) == (24.0, 21.0)  # in write order
    assert [v.writer for v in fields["setpoint"].desired.values] == [22, 11]
    assert all(v.stamp > 0 for v in fields["setpoint"].desired.values)
    assert fields["mode"].WhichOneof("value") == "desired" and field_to_python(fields["mode"]) == ()
    assert field_to_python(value_message("setpoint", (1, "x"))) == (1, "x")


@pytest.mark.integration
async def test_metrics_endpoint_reports_durability_and_latency(tmp_path: pathlib.Path) -> None:
    async with Node(node_config(tmp_path)) as node:
        await wait_for(lambda: node.durable.stats.records > 20)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            await stub.Status(api_pb2.StatusRequest())
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="nope"))
            garbage = channel.unary_unary("/drsdtp.wire.v1.TwinApi/GetTwin")
            with pytest.raises(grpc.aio.AioRpcError):
                await garbage(b"\xff\xff\xff")  # not a protobuf message
            await stub.Status(api_pb2.StatusRequest())  # the node serves on
        url = f"http://127.0.0.1:{node.metrics_server.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    got = {
        s.name: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if not s.labels
    }
    assert got["drsdtp_wal_records_total"] > 20
    assert got["drsdtp_wal_failed_commits_total"] == 0
    # Both histograms are fed by the node: one fsync per group commit, one sample per fresh reading applied.
    assert got["drsdtp_wal_fsync_latency_seconds_count"] >= 1
    assert got["drsdtp_apply_latency_seconds_count"] > 20
    assert got["drsdtp_apply_latency_seconds_sum"] > 0
    requests = {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "drsdtp_api_requests_total"
    }
    assert requests == {("Status", "OK"): 2, ("GetTwin", "NOT_FOUND"): 1, ("GetTwin", "INVALID_ARGUMENT"): 1}
    events = {
        s.labels["event"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "drsdtp_adapter_events_total" and s.labels["source"] == "plant"
    }
    assert events["messages"] > 0 and events["malformed"] == 0


@pytest.mark.integration
async def test_cli_reads_a_running_node(tmp_path: pathlib.Path) -> None:
    # No asset model on the rooms: what the CLI reads needs no intelligence, and the detector's per-reading
    # work on the node's loop (here the test's own process) is most of a node's CPU with a fast plant; at
    # load 30 the node with it left the CLI's 'status' unanswered for 60 s.
    async with Node(node_config(tmp_path, twins=[])) as node:
        await wait_for(lambda: node.store.get("room-1", "humidity") is not None)
        api = f"127.0.0.1:{node.api.port}"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                # A deadline a loaded machine meets (the CLI's default is 5 s per request): the node runs in
                # this process, which shares two cores with the other tests and the CLI processes.
                [sys.executable, "-m", "drsdtp", *args, "--api", api, "--timeout", "60"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,  # a cap on a hang: the CLI's own deadline is 60 s a request
                check=False,
            )

        status, twins, get = await asyncio.gather(
            asyncio.to_thread(cli, "status", "--json"),
            asyncio.to_thread(cli, "twins"),
            asyncio.to_thread(cli, "get", "room-1", "--json"),
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["node"] == "api-1"
        assert "room-1" in twins.stdout and "room-2" in twins.stdout
        assert "humidity" in json.loads(get.stdout)
        missing = await asyncio.to_thread(cli, "get", "nope")
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
        # Export with history: the latest state plus every raw reading, as CSV.
        await wait_for(lambda: node.history is not None and node.history.store.stats.appended > 0)
        exported = await asyncio.to_thread(cli, "export", "--format", "csv", "--history")
        assert exported.returncode == 0, exported.stderr
        rows = [line.split(",") for line in exported.stdout.splitlines()[1:]]
        temp_rows = [r for r in rows if r[0] == "room-1" and r[1] == "temp_1"]
        assert len(temp_rows) >= 3  # the latest value and at least two history readings
        history_ts = [int(r[3]) for r in temp_rows[1:]]
        assert history_ts == sorted(set(history_ts))  # readings in time order, each once


@pytest.mark.integration
async def test_insight_serves_health_forecast_and_what_if_and_writes_quality(tmp_path: pathlib.Path) -> None:
    cfg = node_config(tmp_path, kernels=[{"type": "room", "expected_period_s": 0.25}])
    async with Node(cfg) as node:
        await wait_for(
            lambda: node.intelligence.passes > 0 and node.store.get("room-1", "temp_1.q") is not None
        )
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            health = json.loads(
                (await stub.Insight(api_pb2.InsightRequest(twin_id="room-1", kind="health"))).json
            )
            assert health["twin"] == "room-1" and {f["field"] for f in health["fields"]} >= {
                "temp_1",
                "humidity",
            }
            forecast = json.loads(
                (
                    await stub.Insight(
                        api_pb2.InsightRequest(
                            twin_id="room-1", kind="forecast", params_json='{"fields": ["temp_1"]}'
                        )
                    )
                ).json
            )
            assert forecast["forecasts"][0]["field"] == "temp_1"
            whatif = json.loads(
                (
                    await stub.Insight(
                        api_pb2.InsightRequest(
                            twin_id="room-1",
                            kind="whatif",
                            params_json='{"scenario": "heater fails", "horizon_min": 30}',
                        )
                    )
                ).json
            )
            assert whatif["refused"] is None and whatif["crossings"]
            assert len(whatif["trajectories"]["temp"]) == len(whatif["offsets_min"]) > 1
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Insight(api_pb2.InsightRequest(twin_id="room-1", kind="horoscope"))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The quality score is a replicated register next to the value.
        q = node.store.get("room-1", "temp_1.q")
        assert isinstance(q, float) and 0.0 <= q <= 1.0
