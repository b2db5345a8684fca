"""The collector's view of a started ``drsdtp run`` node: start-up objects frozen once every service is up.

A node's start-up leaves ~55k long-lived container objects (modules, classes, functions, config, services);
each full collection would traverse them all again. Measured on the replication bench (receiver node, 2M
updates): the receive path allocates no net container objects, so all but about one collection happen
during start-up, and none of the collector's work is on the hot path. Freezing keeps that true for the
long run: a full collection only walks what was allocated after start-up. The collector stays enabled with
the interpreter's thresholds (cycles made while serving are still freed).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


class GcSettle:
    """The last service of ``drsdtp run``: on entry (every other service started) collect once, then freeze
    what survives; on exit unfreeze, so a node run in-process (tests) leaves nothing pinned behind."""

    name = "gc"

    def __init__(self) -> None:
        self.frozen = 0

    async def __aenter__(self) -> GcSettle:
        gc.collect()  # start-up's garbage goes now, not pinned in the permanent generation
        gc.freeze()
        self.frozen = gc.get_freeze_count()
        log.info("gc: froze %d start-up objects; collector enabled=%s, thresholds %s",
                 self.frozen, gc.isenabled(), gc.get_threshold())  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        gc.unfreeze()
