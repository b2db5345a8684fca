"""Prometheus metrics of one node, read from plain stats objects at scrape time, and the HTTP endpoint.

Each :class:`NodeMetrics` has its own ``CollectorRegistry`` (never the global one), so several nodes can
run in one process. Components never import prometheus_client: they update objects from
:mod:`drsdtp.stats` and the node registers those objects (or callbacks) here. Rates are left to PromQL,
e.g. the ingest rate is ``rate(drsdtp_ingest_received_total[1m])``.

Exported (``source`` is an ingestion source, ``peer`` a peer name):

* ``drsdtp_node_info{node_id,version}`` gauge, always 1
* ``drsdtp_ingest_{received,invalid,dropped,late}_total{source}``
* ``drsdtp_adapter_reconnects_total{source}``, ``drsdtp_adapter_connected{source}`` 0/1
* ``drsdtp_apply_latency_seconds`` histogram (source timestamp to durable apply, fresh readings)
* ``drsdtp_wal_fsync_latency_seconds`` histogram (one group-commit fsync)
* ``drsdtp_wal_{records,snapshots,failed_snapshots,failed_commits}_total`` (registered by the node)
* ``drsdtp_recovery_*`` (registered by the node, :mod:`drsdtp.node.recovery`): this start's recovery
  (``records``, ``records_skipped``, ``records_after_damage``, ``bytes_quarantined``, ``truncated_bytes``,
  ``snapshots_rejected``, ``seconds``), ``unaccepted`` and ``loss_suspected`` (what keeps ``/readyz`` at
  503), ``quarantine_dropped_total``
* ``drsdtp_peer_up{peer}`` 0/1, ``drsdtp_peers_up`` (how many are up)
* ``drsdtp_replication_lag_seconds{peer}`` (only while known)
* ``drsdtp_peer_clock_offset_seconds{peer}``, ``drsdtp_peer_digest_equal_age_seconds{peer}`` (replication
  probes: only once measured)
* ``drsdtp_peer_messages_{sent,received}_total{peer}``, ``drsdtp_peer_catchups_total{peer}``
* ``drsdtp_clock_offset_seconds`` (absent while unknown), ``drsdtp_clock_offset_known`` 0/1
* ``drsdtp_twins``, ``drsdtp_fields`` (store size)
* ``drsdtp_peer_refused_total{peer,reason}`` (clock_skew, malformed, oversized, protocol),
  ``drsdtp_peer_throttled_seconds_total{peer}`` (reading paused by ``limits.peer_receive_bytes_per_s``)
* ``drsdtp_api_watchers`` (Watch streams open), ``drsdtp_api_watchers_refused_total{reason}`` (node, caller),
  ``drsdtp_api_watchers_cut_off_total`` (a client that did not read; registered by the node)
* labelled counters the node registers: ``drsdtp_api_requests_total{method,code}`` (``code`` is the gRPC
  status, e.g. NOT_FOUND), ``drsdtp_peer_handshakes_refused_total{reason}``,
  ``drsdtp_adapter_events_total{source,event}`` (malformed, unknown, lost, bad_reads, qos0_lost ...),
  ``drsdtp_ingest_rejected_total{source,reason}`` (whole messages, dead letters),
  ``drsdtp_ingest_invalid_by_reason_total{source,reason}`` (key caps included),
  ``drsdtp_adapter_session_failures_total{source}``, ``drsdtp_deadletters_total{source,reason,outcome}``,
  ``drsdtp_deadletters_held``, ``drsdtp_deadletters_bytes``
* ``drsdtp_process_resident_memory_bytes`` (VmRSS)
* ``drsdtp_gc_collections_total{generation}``, ``drsdtp_gc_frozen_objects`` (the cyclic collector; registered
  by ``drsdtp run``, :mod:`drsdtp.node.gc_settle`)
* ``drsdtp_metrics_collect_errors_total`` (callbacks that raised during a scrape)
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from drsdtp import __version__
from drsdtp.clock import ClockOffset
from drsdtp.config import Address
from drsdtp.stats import (
    ConnectionState,
    HistogramSource,
    IngestCounters,
    LatencyHistogram,
    PeerState,
    StoreSize,
)

__all__ = ["MetricsServer", "NodeMetrics", "read_rss_bytes"]

log = logging.getLogger(__name__)

_NAME_RE: Final = re.compile(r"drsdtp_[a-z0-9_]+")
_STATUS_FILE: Final = Path("/proc/self/status")


class NodeMetrics:
    """The metrics of one node. Register stats objects and callbacks; scrape with :meth:`render`."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=False)
        # Replace either with another HistogramSource (e.g. one the engine fills) if the data lives elsewhere.
        self.apply_latency: HistogramSource = LatencyHistogram()
        self.wal_fsync_latency: HistogramSource = LatencyHistogram()
        self.collect_errors = 0
        self._ingest: dict[str, IngestCounters] = {}
        self._connections: dict[str, ConnectionState] = {}
        self._peers: dict[str, PeerState] = {}
        self._store: Callable[[], StoreSize] | None = None
        self._labelled: dict[
            str, tuple[str, tuple[str, ...], Callable[[], Mapping[tuple[str, ...], float]]]
        ] = {}
        self._labelled_gauges: dict[
            str, tuple[str, tuple[str, ...], Callable[[], Mapping[tuple[str, ...], float]]]
        ] = {}
        self._clock: Callable[[], ClockOffset] | None = None
        self._extra: dict[str, tuple[str, str, Callable[[], float]]] = {}
        self.registry.register(_NodeCollector(self))

    def add_ingest(
        self, source: str, counters: IngestCounters, connection: ConnectionState | None = None
    ) -> None:
        """E.g. ``add_ingest(adapter.name, pipeline.stats, supervisor.stats)``."""
        self._ingest[source] = counters
        if connection is not None:
            self._connections[source] = connection

    def remove_ingest(self, source: str) -> None:
        self._ingest.pop(source, None)
        self._connections.pop(source, None)

    def add_peer(self, peer: str, stats: PeerState) -> None:
        self._peers[peer] = stats

    def remove_peer(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def add_labelled_counter(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        """A counter family: ``read`` returns running totals by label values (in ``labels`` order)."""
        if not _NAME_RE.fullmatch(name) or name.endswith("_total") or name in self._labelled:
            raise ValueError(f"metric {name!r} is already registered or not a drsdtp_ name without _total")
        self._labelled[name] = (documentation, labels, read)

    def add_labelled_gauge(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        """A gauge family: ``read`` returns current values by label values (in ``labels`` order)."""
        if not _NAME_RE.fullmatch(name) or name in self._labelled_gauges:
            raise ValueError(f"metric {name!r} is already registered or not a drsdtp_ name")
        self._labelled_gauges[name] = (documentation, labels, read)

    def watch_store(self, read: Callable[[], StoreSize]) -> None:
        self._store = read

    def watch_clock(self, read: Callable[[], ClockOffset]) -> None:
        """E.g. ``metrics.watch_clock(lambda: monitor.latest)`` with a :class:`drsdtp.clock.ClockMonitor`."""
        self._clock = read

    def add_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._add_extra("gauge", name, documentation, read)

    def add_counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """``name`` without the ``_total`` suffix (added on export); ``read`` returns the running total."""
        self._add_extra("counter", name, documentation, read)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from an HTTP Accept header."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def _add_extra(self, kind: str, name: str, documentation: str, read: Callable[[], float]) -> None:
        if not _NAME_RE.fullmatch(name) or name.endswith("_total"):
            raise ValueError(f"metric name {name!r} must match drsdtp_[a-z0-9_]+ and not end in _total")
        if name in self._extra:
            raise ValueError(f"metric {name!r} is already registered")
        self._extra[name] = (kind, documentation, read)


class _NodeCollector:
    """Reads the node's registered objects at scrape time; a failing callback loses its metric only."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        parts: tuple[Callable[[], Iterator[Metric]], ...] = (
            self._info, self._ingest, self._latency, self._peers, self._clock, self._store, self._process,
            self._labelled, self._extra,
        )  # fmt: skip
        for part in parts:
            try:
                yield from list(part())
            except Exception:
                self.m.collect_errors += 1
                log.warning("metrics: %s failed during a scrape", part.__name__, exc_info=True)
        errors = CounterMetricFamily(
            "drsdtp_metrics_collect_errors", "Metric callbacks that raised during a scrape."
        )
        errors.add_metric([], self.m.collect_errors)
        yield errors

    def _info(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("drsdtp_node_info", "Node identity.", labels=["node_id", "version"])
        info.add_metric([self.m.node_id, __version__], 1)
        yield info

    def _ingest(self) -> Iterator[Metric]:
        families = {
            attr: CounterMetricFamily(f"drsdtp_ingest_{attr}", doc, labels=["source"])
            for attr, doc in (
                ("received", "Readings accepted from the source."),
                ("invalid", "Readings rejected by validation."),
                ("dropped", "Readings lost to a full buffer."),
                ("late", "Readings older than the stored value."),
            )
        }
        for source, counters in sorted(self.m._ingest.items()):
            for attr, family in families.items():
                family.add_metric([source], getattr(counters, attr))
        yield from families.values()
        reconnects = CounterMetricFamily(
            "drsdtp_adapter_reconnects", "Adapter reconnections.", labels=["source"]
        )
        connected = GaugeMetricFamily(
            "drsdtp_adapter_connected", "1 while the adapter is connected.", labels=["source"]
        )
        for source, state in sorted(self.m._connections.items()):
            reconnects.add_metric([source], state.reconnects)
            connected.add_metric([source], 1 if state.connected else 0)
        yield from (reconnects, connected)

    def _latency(self) -> Iterator[Metric]:
        for name, doc, source in (
            ("drsdtp_apply_latency_seconds", "Source timestamp to durable apply.", self.m.apply_latency),
            (
                "drsdtp_wal_fsync_latency_seconds",
                "Duration of one write-ahead-log fsync.",
                self.m.wal_fsync_latency,
            ),
        ):
            snap = source.snapshot()
            family = HistogramMetricFamily(name, doc)
            buckets = [(_le(bound), count) for bound, count in snap.buckets]
            family.add_metric([], buckets, snap.sum)
            yield family

    def _peers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("drsdtp_peer_up", "1 while the peer is reachable.", labels=["peer"])
        lag = GaugeMetricFamily(
            "drsdtp_replication_lag_seconds", "Age of the oldest unacknowledged delta.", labels=["peer"]
        )
        sent = CounterMetricFamily("drsdtp_peer_messages_sent", "Messages sent to the peer.", labels=["peer"])
        received = CounterMetricFamily(
            "drsdtp_peer_messages_received", "Messages received from the peer.", labels=["peer"]
        )
        catchups = CounterMetricFamily(
            "drsdtp_peer_catchups", "Full-state catch-ups with the peer.", labels=["peer"]
        )
        throttled = CounterMetricFamily(
            "drsdtp_peer_throttled_seconds",
            "Time reading from the peer paused (receive limit).",
            labels=["peer"],
        )
        refused = CounterMetricFamily(
            "drsdtp_peer_refused",
            "What the peer sent and this node refused: far-future stamps, malformed or oversized messages, "
            "protocol violations.",
            labels=["peer", "reason"],
        )
        offset = GaugeMetricFamily(
            "drsdtp_peer_clock_offset_seconds",
            "The peer's clock minus this node's, measured by replication probes (NTP-style).",
            labels=["peer"],
        )
        digest_age = GaugeMetricFamily(
            "drsdtp_peer_digest_equal_age_seconds",
            "Seconds since the peer's state digest last equalled this node's (of the twins both replicate).",
            labels=["peer"],
        )
        now = time.monotonic()
        count = 0
        for peer, stats in sorted(self.m._peers.items()):
            measured = getattr(stats, "peer_offset_s", None)  # kept by the gossip layer's stats
            if measured is not None:
                offset.add_metric([peer], measured)
            equal_at = getattr(stats, "digest_equal_at", None)
            if equal_at is not None:
                digest_age.add_metric([peer], max(0.0, now - equal_at))
            up.add_metric([peer], 1 if stats.up else 0)
            count += bool(stats.up)
            if stats.lag_s is not None:
                lag.add_metric([peer], stats.lag_s)
            sent.add_metric([peer], stats.sent)
            received.add_metric([peer], stats.received)
            catchups.add_metric([peer], stats.catchups)
            paused = getattr(stats, "throttled_s", None)
            if paused is not None:
                throttled.add_metric([peer], paused)
            for reason in ("clock_skew", "malformed", "oversized", "protocol"):
                times = getattr(stats, f"refused_{reason}", None)  # kept by the gossip layer's stats
                if times is not None:
                    refused.add_metric([peer, reason], times)
        total = GaugeMetricFamily("drsdtp_peers_up", "Number of peers up.", value=count)
        yield from (up, total, lag, sent, received, catchups, refused, throttled, offset, digest_age)

    def _clock(self) -> Iterator[Metric]:
        offset = self.m._clock() if self.m._clock is not None else None
        known = offset is not None and offset.offset_s is not None
        yield GaugeMetricFamily(
            "drsdtp_clock_offset_known", "1 when the NTP offset is known.", value=int(known)
        )
        # Declared even while unknown (no sample then), so dashboards querying it find the series.
        family = GaugeMetricFamily("drsdtp_clock_offset_seconds", "NTP server time minus local time.")
        if offset is not None and offset.offset_s is not None:
            family.add_metric([], offset.offset_s)
        yield family

    def _store(self) -> Iterator[Metric]:
        if self.m._store is None:
            return
        size = self.m._store()
        yield GaugeMetricFamily("drsdtp_twins", "Twins in the store.", value=size.twins)
        yield GaugeMetricFamily("drsdtp_fields", "Fields across all twins.", value=size.fields)

    def _labelled(self) -> Iterator[Metric]:
        for name, (doc, labels, read) in sorted(self.m._labelled.items()):
            family = CounterMetricFamily(name, doc, labels=list(labels))
            for values, count in sorted(read().items()):
                family.add_metric(list(values), count)
            yield family
        for name, (doc, labels, read) in sorted(self.m._labelled_gauges.items()):
            gauge = GaugeMetricFamily(name, doc, labels=list(labels))
            for values, value in sorted(read().items()):
                gauge.add_metric(list(values), value)
            yield gauge

    def _process(self) -> Iterator[Metric]:
        rss = read_rss_bytes()
        if rss is not None:
            yield GaugeMetricFamily("drsdtp_process_resident_memory_bytes", "Resident set size.", value=rss)

    def _extra(self) -> Iterator[Metric]:
        for name, (kind, doc, read) in sorted(self.m._extra.items()):
            try:
                value = read()
            except Exception:
                self.m.collect_errors += 1
                log.warning("metrics: callback for %s failed during a scrape", name, exc_info=True)
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=value)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def read_rss_bytes(status_file: Path = _STATUS_FILE) -> int | None:
    """Current resident set size from ``/proc/self/status`` (VmRSS); None where there is no procfs."""
    try:
        text = status_file.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            return int(value) * 1024 if unit == "kB" else int(value)
    return None


class MetricsServer:
    """Serves ``GET /metrics``, ``/healthz`` (alive) and ``/readyz`` (``ready()``); an async context manager.

    A deliberately small HTTP/1.1 server on asyncio: scrapes run on the event loop, the thread that also
    updates the stats objects, so reads are consistent and need no locks. One request per connection.
    """

    name = "metrics"
    _HEAD_LIMIT: Final = 8192
    _READ_TIMEOUT_S: Final = 10.0

    def __init__(
        self,
        metrics: NodeMetrics,
        address: Address,
        *,
        ready: Callable[[], bool] = lambda: True,
        not_ready: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.metrics = metrics
        self.address = address
        self.ready = ready
        # A reason to answer 503 with (None: ready as far as it knows), checked after ``ready``.
        self.not_ready = not_ready
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the metrics server is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> MetricsServer:
        self._server = await asyncio.start_server(
            self._handle, self.address.host, self.address.port, limit=self._HEAD_LIMIT
        )
        log.info("metrics on http://%s/metrics", Address(self.address.host, self.port))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(self._READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            try:
                status, content_type, body, head_only = self._respond(head)
            except Exception:
                log.exception("metrics endpoint: request failed")
                status, content_type, body, head_only = (
                    "500 Internal Server Error",
                    "text/plain",
                    b"error\n",
                    False,
                )
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if not head_only:
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a slow, truncated or oversized request: just close
        except asyncio.CancelledError:
            # Shutdown cancels open connections. Ending quietly (this is the connection's own task) also
            # avoids Python 3.11's streams callback logging the cancelled task as an error.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, str, bytes, bool]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n", False
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n", False
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path == "/metrics":
            body, content_type = self.metrics.render(headers.get("accept", ""))
            return "200 OK", content_type, body, head_only
        if path == "/healthz":
            return "200 OK", "text/plain", b"ok\n", head_only
        if path == "/readyz":
            reason = None if self.ready() else ""
            reason = self.not_ready() if reason is None else reason
            if reason is None:
                return "200 OK", "text/plain", b"ready\n", head_only
            text = f"not ready: {reason}\n" if reason else "not ready\n"
            return "503 Service Unavailable", "text/plain; charset=utf-8", text.encode(), head_only
        return "404 Not Found", "text/plain", b"not found\n", head_only
