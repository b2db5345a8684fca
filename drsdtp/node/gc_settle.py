"""The collector's view of a started ``drsdtp run`` node: start-up objects frozen once every service is up,
and each collection's pause timed (``drsdtp_gc_pause_seconds``: the loop waits it out, so a long one would sit
in every latency tail; the replication bench reads it beside the loop's lag).

A node's start-up leaves ~55k long-lived container objects (modules, classes, functions, config, services);
each full collection would traverse them all again. Measured on the replication bench (receiver node, 2M
updates, each collection timed): while receiving, the collector ran 267 young and 25 middle collections and
no full one, about 2 % of the node's CPU, so it is not what the hot path pays for. Freezing keeps full
collections cheap for the long run: they only walk what was allocated after start-up. The collector stays
enabled with the interpreter's thresholds (cycles made while serving are still freed).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from drsdtp.stats import LatencyHistogram

if TYPE_CHECKING:
    from drsdtp.metrics import NodeMetrics

log = logging.getLogger(__name__)


class GcSettle:
    """The last service of ``drsdtp run``: on entry (every other service started) collect once, then freeze
    what survives; on exit unfreeze, so a node run in-process (tests) leaves nothing pinned behind."""

    name = "gc"

    def __init__(self, metrics: NodeMetrics | None = None) -> None:
        self.frozen = 0
        self.pauses = LatencyHistogram()
        self._started = 0.0
        if metrics is not None:  # what the bench reads to show where collections fall
            metrics.add_labelled_counter(
                "drsdtp_gc_collections", "Cyclic collector runs by generation.", ("generation",), _collections
            )
            metrics.add_gauge(
                "drsdtp_gc_frozen_objects", "Start-up objects the collector skips.", gc.get_freeze_count
            )
            metrics.add_histogram(
                "drsdtp_gc_pause_seconds", "Duration of one cyclic collection (any generation).", self.pauses
            )

    async def __aenter__(self) -> GcSettle:
        gc.collect()  # start-up's garbage goes now, not pinned in the permanent generation
        gc.freeze()
        gc.callbacks.append(self._timed)
        self.frozen = gc.get_freeze_count()
        log.info("gc: froze %d start-up objects; collector enabled=%s, thresholds %s",
                 self.frozen, gc.isenabled(), gc.get_threshold())  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)
        gc.unfreeze()

    def _timed(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self.pauses.observe(time.perf_counter() - self._started)


def _collections() -> Mapping[tuple[str, ...], float]:
    return {(str(g),): float(stats["collections"]) for g, stats in enumerate(gc.get_stats())}
