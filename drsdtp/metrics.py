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
* ``drsdtp_gc_collections_total{generation}``, ``drsdtp_gc_frozen_objects``, ``drsdtp_gc_pause_seconds``
  histogram (the cyclic collector; registered by ``drsdtp run``, :mod:`drsdtp.node.gc_settle`)
* ``drsdtp_event_loop_lag_seconds`` histogram (how late the event loop runs a timer; registered by ``drsdtp
  run``, :mod:`drsdtp.node.loop_lag`)
* ``drsdtp_metrics_collect_errors_total`` (callbacks that raised during a scrape)
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

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

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["MetricsServer", "NodeMetrics", "read_rss_bytes"]

log = logging.getLogger(__name__)

_NAME_RE: Final = re.compile(r"drsdtp_[a-z0-9_]+")
_STATUS_FILE: Final = Path("/proc/self/status")


class NodeMetrics:
    """The metrics of one node. Register stats objects and callbacks; scrape with :meth:`render`."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._registry: CollectorRegistry | None = None
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
        self._histograms: dict[str, tuple[str, HistogramSource]] = {}

    @property
    def registry(self) -> CollectorRegistry:
        """This node's registry, made at the first scrape: prometheus_client (with http.server, email and
        urllib, which its package imports) is about 3 MB of an idle node's RSS that nothing scraped yet
        needs (issue 13)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            from drsdtp.metrics_export import NodeCollector

            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(NodeCollector(self))
        return self._registry

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

    def add_histogram(self, name: str, documentation: str, source: HistogramSource) -> None:
        """A histogram read from ``source`` at scrape time; ``name`` ends in its unit (``_seconds``)."""
        if not _NAME_RE.fullmatch(name) or name in self._histograms:
            raise ValueError(f"histogram name {name!r} must match drsdtp_[a-z0-9_]+ and be new")
        self._histograms[name] = (documentation, source)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from an HTTP Accept header."""
        registry = self.registry
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type

    def _add_extra(self, kind: str, name: str, documentation: str, read: Callable[[], float]) -> None:
        if not _NAME_RE.fullmatch(name) or name.endswith("_total"):
            raise ValueError(f"metric name {name!r} must match drsdtp_[a-z0-9_]+ and not end in _total")
        if name in self._extra:
            raise ValueError(f"metric {name!r} is already registered")
        self._extra[name] = (kind, documentation, read)


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
