"""The Prometheus side of :class:`drsdtp.metrics.NodeMetrics`: the collector that reads the node's registered
objects at scrape time. Imported at the first scrape, with prometheus_client."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from drsdtp import __version__
from drsdtp.metrics import read_rss_bytes

if TYPE_CHECKING:
    from drsdtp.metrics import NodeMetrics

__all__ = ["NodeCollector"]

log = logging.getLogger("drsdtp.metrics")


class NodeCollector:
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
            *((name, doc, source) for name, (doc, source) in sorted(self.m._histograms.items())),
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
