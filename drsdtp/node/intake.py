"""Intake: the node's adapters and pipelines, ending in one store call per batch that returns only once the
batch is durable (so an MQTT QoS 1 PUBACK, for one, is sent only after the WAL commit that carries it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import ReadingBatch
from drsdtp.ingest.caps import KeyCaps
from drsdtp.ingest.runner import IngestService
from drsdtp.ingest.same_ids import SameIds
from drsdtp.lifecycle import BackgroundService
from drsdtp.stats import LatencyHistogram

if TYPE_CHECKING:
    from drsdtp.node.node import Node

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np

log = logging.getLogger(__name__)

BatchObserver = Callable[[ReadingBatch, list[str]], None]


class NodeSink:
    """The pipelines' :class:`drsdtp.adapters.base.BatchSink`: write, make durable, announce."""

    def __init__(self, node: Node) -> None:
        self.node = node
        # Called with every applied batch (history, twin intelligence) before it is acknowledged.
        self.observers: list[BatchObserver] = []
        # Source timestamp to durable, per fresh reading (stale ones would only measure how stale they were).
        self.apply_latency = LatencyHistogram()
        self._twin_ids = SameIds()
        self._twin_names: tuple[object, list[str]] = (None, [])  # (unique ids, their names)

    async def apply(self, batch: ReadingBatch) -> None:
        keep = batch.has_value()
        if not keep.all():
            batch = batch.select(keep)
        if len(batch) == 0:
            return
        store = self.node.store
        unique = self._twin_ids.unique(batch.twin_ids)
        if self._twin_names[0] is not unique:  # names of interned ids never change: kept with the ids
            self._twin_names = (unique, [store.twin_name(int(t)) or "" for t in unique.tolist()])
        twins = list(self._twin_names[1])  # a copy: observers and the feed may keep it
        await self.node.ensure_twins(twins)
        delta = store.write_batch(batch.twin_ids, batch.field_ids, batch.values, batch.source_ms)
        for observe in self.observers:
            observe(batch, twins)
        await self.node.commit(delta, twins, "ingest")
        # A source clock running ahead would give negative ages: count those as immediate.
        ages_ms = np.maximum(time.time() * 1000.0 - batch.source_ms[~batch.stale], 0.0)
        self.apply_latency.observe_many(ages_ms / 1000.0)


class Intake(BackgroundService):
    """Every configured adapter, supervised, feeding the node."""

    name = "intake"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sink = NodeSink(node)
        adapters = [build_adapter(raw, f"adapters[{i}]") for i, raw in enumerate(node.config.adapters)]
        limits = node.config.limits
        self.caps = KeyCaps(
            node.store, limits.max_twins, limits.max_fields, meta_fields=lambda t: len(node.twin_meta(t))
        )
        self.service = IngestService(
            adapters, self.sink, node.store, dead_letters=node.dead_letters, caps=self.caps
        )
        for name, runner in self.service.runners.items():
            node.metrics.add_ingest(name, runner.pipeline.stats, runner.supervisor.stats)
        self._register_metrics(node)

    def _register_metrics(self, node: Node) -> None:
        m = node.metrics
        letters = node.dead_letters
        m.add_labelled_counter(
            "drsdtp_deadletters",
            "Dead letters by source, reason and outcome: stored, duplicate (a redelivery of one held), "
            "dropped (the oldest, past the bound; or not writable), replayed, purged.",
            ("source", "reason", "outcome"),
            letters.counts,
        )
        m.add_gauge("drsdtp_deadletters_held", "Dead letters held now.", lambda: float(len(letters)))
        m.add_gauge("drsdtp_deadletters_bytes", "Bytes of dead letters held now.", lambda: letters.size_bytes)
        if not self.service.runners:
            return
        m.add_labelled_counter(
            "drsdtp_adapter_events",
            "What adapters saw at the protocol level: messages, malformed items, unknown ones, dropped, "
            "lost (sequence gaps, QoS 0 messages queued when a session ended), bad reads, acks, filtered.",
            ("source", "event"),
            self._adapter_events,
        )
        m.add_labelled_counter(
            "drsdtp_ingest_rejected",
            "Whole messages an adapter could not decode (dead letters), each counted once, by reason.",
            ("source", "reason"),
            lambda: self._by_reason("rejected_by_reason"),
        )
        m.add_labelled_counter(
            "drsdtp_ingest_invalid_by_reason",
            "Readings refused by validation, by reason (bad name, caps, range, timestamps ...).",
            ("source", "reason"),
            lambda: self._by_reason("invalid_by_reason"),
        )
        m.add_labelled_counter(
            "drsdtp_adapter_session_failures",
            "Adapter sessions that ended in an error (connect failures included).",
            ("source",),
            lambda: {(n,): float(r.supervisor.stats.failures) for n, r in self.service.runners.items()},
        )

    def _by_reason(self, attr: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for name, runner in self.service.runners.items():
            for reason, n in getattr(runner.pipeline.stats, attr).items():
                out[(name, reason)] = n
        return out

    def _adapter_events(self) -> dict[tuple[str, ...], float]:
        events: dict[tuple[str, ...], float] = {}
        for name, runner in self.service.runners.items():
            stats = runner.adapter.stats
            for event in dataclasses.fields(stats):
                value = getattr(stats, event.name)
                # Counters only: an adapter's stats may hold other state too (serial: last_seq).
                if isinstance(value, int | float) and not isinstance(value, bool):
                    events[(name, event.name)] = value
        return events

    async def run(self) -> None:
        if self.service.runners:
            await self.service.run()

    def per_adapter(self) -> tuple[tuple[str, dict[str, int]], ...]:
        """Each adapter's ingest counters, by name (for the status reply: the dashboard's rates)."""
        return tuple(
            (name, {k: int(getattr(s, k)) for k in ("received", "invalid", "dropped", "late")})
            for name, s in sorted(self.service.snapshot().items())
        )

    def totals(self) -> dict[str, int]:
        """Ingest counters summed over adapters (for the status reply)."""
        snaps = self.service.snapshot().values()
        return {k: sum(getattr(s, k) for s in snaps) for k in ("received", "invalid", "dropped", "late")}
