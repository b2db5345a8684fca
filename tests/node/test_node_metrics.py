"""Metrics: per-node registries read from plain stats objects, and the HTTP endpoint over real sockets."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drsdtp.clock import ClockOffset
from drsdtp.config import Address
from drsdtp.gossip.stats import GossipPeerStats
from drsdtp.metrics import MetricsServer, NodeMetrics, read_rss_bytes
from drsdtp.stats import IngestStats, LatencyHistogram, PeerStats, StoreSize


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: NodeMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def test_ingest_counters_are_read_at_scrape_time() -> None:
    metrics = NodeMetrics("edge-01")
    mqtt = IngestStats()
    metrics.add_ingest("mqtt", mqtt, mqtt)
    mqtt.received += 5
    mqtt.invalid += 2
    mqtt.dropped += 1
    mqtt.late += 3
    mqtt.reconnects += 4
    mqtt.connected = True
    assert value(metrics, "drsdtp_ingest_received_total", source="mqtt") == 5
    assert value(metrics, "drsdtp_ingest_invalid_total", source="mqtt") == 2
    assert value(metrics, "drsdtp_ingest_dropped_total", source="mqtt") == 1
    assert value(metrics, "drsdtp_ingest_late_total", source="mqtt") == 3
    assert value(metrics, "drsdtp_adapter_reconnects_total", source="mqtt") == 4
    assert value(metrics, "drsdtp_adapter_connected", source="mqtt") == 1
    mqtt.received += 1  # no re-registration needed: the object is read again
    assert value(metrics, "drsdtp_ingest_received_total", source="mqtt") == 6
    metrics.remove_ingest("mqtt")
    got = samples(metrics)
    assert ("drsdtp_ingest_received_total", (("source", "mqtt"),)) not in got
    assert ("drsdtp_adapter_connected", (("source", "mqtt"),)) not in got


def test_pipeline_and_supervisor_stats_of_other_modules_fit_the_protocols() -> None:
    # The ingest pipeline and the supervisor keep their own plain stats; they are registered as they are.
    from drsdtp.ingest.pipeline import PipelineStats
    from drsdtp.supervisor import SupervisorStats

    metrics = NodeMetrics("edge-01")
    pipeline, supervisor = PipelineStats(), SupervisorStats()
    metrics.add_ingest("opcua", pipeline, supervisor)
    pipeline.received, pipeline.late, supervisor.reconnects = 8, 2, 1
    assert value(metrics, "drsdtp_ingest_received_total", source="opcua") == 8
    assert value(metrics, "drsdtp_ingest_late_total", source="opcua") == 2
    assert value(metrics, "drsdtp_adapter_reconnects_total", source="opcua") == 1
    assert value(metrics, "drsdtp_adapter_connected", source="opcua") == 0


def test_observe_many_matches_observe() -> None:
    one, many = LatencyHistogram(), LatencyHistogram()
    batch = [0.00005, 0.0003, 0.002, 0.002, 10.0, 0.0]
    for seconds in batch:
        one.observe(seconds)
    many.observe_many(batch)
    many.observe_many([])
    assert many.snapshot().buckets == one.snapshot().buckets
    assert many.snapshot().count == 6
    assert many.snapshot().sum == pytest.approx(one.snapshot().sum)


def test_peers_lag_and_up_count() -> None:
    metrics = NodeMetrics("edge-01")
    a, b = PeerStats(up=True, lag_s=0.25, sent=10, received=7, catchups=1), PeerStats()
    metrics.add_peer("edge-02", a)
    metrics.add_peer("edge-03", b)
    got = samples(metrics)
    assert got[("drsdtp_peers_up", ())] == 1
    assert got[("drsdtp_peer_up", (("peer", "edge-02"),))] == 1
    assert got[("drsdtp_peer_up", (("peer", "edge-03"),))] == 0
    assert got[("drsdtp_replication_lag_seconds", (("peer", "edge-02"),))] == 0.25
    assert ("drsdtp_replication_lag_seconds", (("peer", "edge-03"),)) not in got  # unknown lag: no sample
    assert got[("drsdtp_peer_messages_sent_total", (("peer", "edge-02"),))] == 10
    assert got[("drsdtp_peer_messages_received_total", (("peer", "edge-02"),))] == 7
    assert got[("drsdtp_peer_catchups_total", (("peer", "edge-02"),))] == 1
    b.up = True
    assert value(metrics, "drsdtp_peers_up") == 2


def test_peers_measured_clock_offset_and_digest_age() -> None:
    metrics = NodeMetrics("edge-01")
    probed = GossipPeerStats(up=True, peer_offset_s=-0.012, digest_equal_at=time.monotonic() - 30)
    metrics.add_peer("edge-02", probed)
    metrics.add_peer("edge-03", GossipPeerStats(up=True))  # not probed yet: no samples
    got = samples(metrics)
    assert got[("drsdtp_peer_clock_offset_seconds", (("peer", "edge-02"),))] == -0.012
    assert 30 <= got[("drsdtp_peer_digest_equal_age_seconds", (("peer", "edge-02"),))] < 60
    assert ("drsdtp_peer_clock_offset_seconds", (("peer", "edge-03"),)) not in got
    assert ("drsdtp_peer_digest_equal_age_seconds", (("peer", "edge-03"),)) not in got


def test_latency_histograms() -> None:
    metrics = NodeMetrics("edge-01")
    apply = metrics.apply_latency
    assert isinstance(apply, LatencyHistogram)
    for seconds in (0.00005, 0.0003, 0.002, 10.0):
        apply.observe(seconds)
    got = samples(metrics)
    bucket = "drsdtp_apply_latency_seconds_bucket"
    assert got[(bucket, (("le", "5e-05"),))] == 1  # a value equal to a bound falls in that bucket
    assert got[(bucket, (("le", "0.0005"),))] == 2
    assert got[(bucket, (("le", "2.5"),))] == 3
    assert got[(bucket, (("le", "+Inf"),))] == 4
    assert got[("drsdtp_apply_latency_seconds_count", ())] == 4
    assert got[("drsdtp_apply_latency_seconds_sum", ())] == pytest.approx(10.00235)
    assert got[("drsdtp_wal_fsync_latency_seconds_count", ())] == 0


def test_histogram_source_can_be_replaced() -> None:
    metrics = NodeMetrics("edge-01")
    engine_fsyncs = LatencyHistogram(bounds=(0.001, 0.01))
    engine_fsyncs.observe(0.005)
    metrics.wal_fsync_latency = engine_fsyncs
    assert value(metrics, "drsdtp_wal_fsync_latency_seconds_bucket", le="0.01") == 1
    assert value(metrics, "drsdtp_wal_fsync_latency_seconds_bucket", le="0.001") == 0


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        LatencyHistogram(bounds=(0.1, 0.01))


def test_clock_store_info_and_rss() -> None:
    metrics = NodeMetrics("edge-01")
    got = samples(metrics)
    assert got[("drsdtp_clock_offset_known", ())] == 0
    assert ("drsdtp_clock_offset_seconds", ()) not in got
    assert ("drsdtp_twins", ()) not in got  # no store registered yet
    assert got[("drsdtp_node_info", (("node_id", "edge-01"), ("version", "0.1.0")))] == 1
    assert got[("drsdtp_process_resident_memory_bytes", ())] > 1_000_000

    offset = ClockOffset(offset_s=-0.012, server="ntp", measured_at=0.0)
    metrics.watch_clock(lambda: offset)
    metrics.watch_store(lambda: StoreSize(twins=3, fields=40))
    got = samples(metrics)
    assert got[("drsdtp_clock_offset_known", ())] == 1
    assert got[("drsdtp_clock_offset_seconds", ())] == -0.012
    assert got[("drsdtp_twins", ())] == 3
    assert got[("drsdtp_fields", ())] == 40

    offset = ClockOffset.unknown("ntp", "timeout")
    got = samples(metrics)
    assert got[("drsdtp_clock_offset_known", ())] == 0
    assert ("drsdtp_clock_offset_seconds", ()) not in got


def test_a_failing_callback_loses_only_its_metric() -> None:
    metrics = NodeMetrics("edge-01")

    def broken() -> StoreSize:
        raise RuntimeError("store closed")

    metrics.watch_store(broken)
    metrics.add_ingest("mqtt", IngestStats(received=9))
    metrics.add_gauge("drsdtp_queue_depth", "Readings waiting.", lambda: 1 / 0)
    got = samples(metrics)
    assert ("drsdtp_twins", ()) not in got
    assert got[("drsdtp_ingest_received_total", (("source", "mqtt"),))] == 9
    assert got[("drsdtp_metrics_collect_errors_total", ())] == 2


def test_extra_gauges_and_counters() -> None:
    metrics = NodeMetrics("edge-01")
    depth = 3.0
    metrics.add_gauge("drsdtp_queue_depth", "Readings waiting.", lambda: depth)
    metrics.add_counter("drsdtp_clock_skew_rejected", "Remote stamps too far ahead.", lambda: 7)
    assert value(metrics, "drsdtp_queue_depth") == 3
    assert value(metrics, "drsdtp_clock_skew_rejected_total") == 7
    with pytest.raises(ValueError, match="already registered"):
        metrics.add_gauge("drsdtp_queue_depth", "again", lambda: 0)
    for bad in ("queue_depth", "drsdtp_Bad", "drsdtp_x_total"):
        with pytest.raises(ValueError, match="must match"):
            metrics.add_counter(bad, "doc", lambda: 0)


def test_labelled_counters_and_peer_refusals() -> None:
    metrics = NodeMetrics("edge-01")
    counts: dict[tuple[str, ...], float] = {("Status", "OK"): 3, ("GetTwin", "NOT_FOUND"): 1}
    metrics.add_labelled_counter("drsdtp_api_requests", "Requests.", ("method", "code"), lambda: counts)
    peer = GossipPeerStats(up=True, refused_clock_skew=4, refused_malformed=1)
    metrics.add_peer("edge-02", peer)
    counts[("GetTwin", "OK")] = 2  # read at scrape time
    assert value(metrics, "drsdtp_api_requests_total", method="GetTwin", code="NOT_FOUND") == 1
    assert value(metrics, "drsdtp_api_requests_total", method="GetTwin", code="OK") == 2
    assert value(metrics, "drsdtp_peer_refused_total", peer="edge-02", reason="clock_skew") == 4
    assert value(metrics, "drsdtp_peer_refused_total", peer="edge-02", reason="malformed") == 1
    assert value(metrics, "drsdtp_peer_refused_total", peer="edge-02", reason="oversized") == 0
    with pytest.raises(ValueError, match="already registered"):
        metrics.add_labelled_counter("drsdtp_api_requests", "again", ("method",), dict)


def test_nodes_have_separate_registries_and_leave_the_global_one_alone() -> None:
    a, b = NodeMetrics("edge-01"), NodeMetrics("edge-02")
    a.add_ingest("mqtt", IngestStats(received=1))
    b.add_ingest("mqtt", IngestStats(received=2))
    assert value(a, "drsdtp_ingest_received_total", source="mqtt") == 1
    assert value(b, "drsdtp_ingest_received_total", source="mqtt") == 2
    assert b"drsdtp_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_read_rss_bytes(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  9000 kB\nVmRSS:\t   51234 kB\nThreads:\t1\n")
    assert read_rss_bytes(status) == 51234 * 1024
    status.write_text("Name:\tpython\n")
    assert read_rss_bytes(status) is None
    assert read_rss_bytes(tmp_path / "absent") is None


# --- the HTTP endpoint ------------------------------------------------------------------------------------


def http_get(url: str, accept: str | None = None, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


async def get(url: str, accept: str | None = None, method: str = "GET") -> tuple[int, str, bytes]:
    return await asyncio.to_thread(http_get, url, accept, method)


async def test_scrape_over_http() -> None:
    metrics = NodeMetrics("edge-01")
    metrics.add_ingest("modbus", IngestStats(received=12, invalid=1))
    ready = False
    async with MetricsServer(metrics, Address("127.0.0.1", 0), ready=lambda: ready) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, content_type, body = await get(f"{base}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["drsdtp_ingest_received"].samples[0].value == 12
        assert families["drsdtp_ingest_invalid"].samples[0].labels == {"source": "modbus"}

        status, content_type, body = await get(f"{base}/metrics", accept="application/openmetrics-text")
        assert status == 200
        assert content_type.startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

        assert (await get(f"{base}/healthz"))[0] == 200
        assert (await get(f"{base}/readyz"))[0] == 503
        ready = True
        assert (await get(f"{base}/readyz"))[0] == 200
        assert (await get(f"{base}/metrics?debug=1"))[0] == 200
        assert (await get(f"{base}/nope"))[0] == 404
        assert (await get(f"{base}/metrics", method="POST"))[0] == 405
        status, _, body = await get(f"{base}/metrics", method="HEAD")
        assert (status, body) == (200, b"")
        port = server.port
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", None, 5)


async def test_a_failing_ready_check_answers_500() -> None:
    def ready() -> bool:
        raise RuntimeError("boom")

    async with MetricsServer(NodeMetrics("n"), Address("127.0.0.1", 0), ready=ready) as server:
        assert (await get(f"http://127.0.0.1:{server.port}/readyz"))[0] == 500
        assert (await get(f"http://127.0.0.1:{server.port}/healthz"))[0] == 200  # still serving


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection without answering (EOF, or a reset for unread input)."""
    try:
        async with asyncio.timeout(10):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_an_idle_client_does_not_hold_up_shutdown() -> None:
    server = MetricsServer(NodeMetrics("n"), Address("127.0.0.1", 0))
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # an unfinished request
        await writer.drain()
    assert await closed_by_server(reader)
    writer.close()


async def test_garbage_requests_get_400_and_oversized_heads_are_dropped() -> None:
    async with MetricsServer(NodeMetrics("n"), Address("127.0.0.1", 0)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"HELLO\r\n\r\n")
        async with asyncio.timeout(10):
            assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        assert await closed_by_server(reader)
        writer.close()


async def test_port_property_before_start() -> None:
    with pytest.raises(RuntimeError, match="not listening"):
        _ = MetricsServer(NodeMetrics("n"), Address("127.0.0.1", 0)).port


async def test_a_node_with_a_serial_adapter_exports_its_counters(tmp_path: Path) -> None:
    # SerialStats carries a dict (last sequence per device) beside its counters: only counters are exported.
    from drsdtp.config import parse_config
    from drsdtp.node.node import Node

    config = parse_config(
        {
            "node_id": "n1",
            "data_dir": str(tmp_path),
            "adapters": [{"type": "serial", "name": "fw", "port": "/dev/null"}],
        }
    )
    node = Node(config)
    got = samples(node.metrics)
    assert got[("drsdtp_adapter_events_total", (("event", "lost"), ("source", "fw")))] == 0
    assert ("drsdtp_adapter_events_total", (("event", "last_seq"), ("source", "fw"))) not in got


async def test_readyz_says_why_it_is_not_ready() -> None:
    reason: str | None = "write-ahead log recovery needs an operator: see `drsdtp recover`"
    async with MetricsServer(NodeMetrics("n"), Address("127.0.0.1", 0), not_ready=lambda: reason) as server:
        status, content_type, body = await get(f"http://127.0.0.1:{server.port}/readyz")
        assert (status, body.decode()) == (503, f"not ready: {reason}\n")
        assert content_type.startswith("text/plain")
        reason = None
        assert (await get(f"http://127.0.0.1:{server.port}/readyz"))[:3:2] == (200, b"ready\n")
