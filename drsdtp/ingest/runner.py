"""Run adapters: one supervisor + one pipeline per adapter, all under one TaskGroup.

The node does::

    adapters = [build_adapter(t, f"adapters[{i}]") for i, t in enumerate(config_tables)]
    service = IngestService(adapters, sink, store)  # store: the Interner; sink: the store-backed BatchSink
    for name, runner in service.runners.items():
        metrics.add_ingest(name, runner.pipeline.stats, runner.supervisor.stats)  # live counters
    async with asyncio.TaskGroup() as tg:
        tg.create_task(service.run())
        ...
    service.snapshot()  # {adapter name: IngestSnapshot} for status pages and tests
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from drsdtp.adapters.base import Adapter, BatchSink, Interner, SourceBatch
from drsdtp.errors import ConfigError
from drsdtp.ingest.caps import KeyCaps
from drsdtp.ingest.pipeline import DeadLetterSink, Pipeline, wall_ms
from drsdtp.supervisor import Backoff, Supervisor

__all__ = ["AdapterRunner", "IngestService", "IngestSnapshot"]


@dataclass(frozen=True, slots=True)
class IngestSnapshot:
    """One adapter's headline figures (a snapshot; the live counters are on the stats objects)."""

    received: int
    invalid: int  # readings refused by validation + messages that could not be decoded or routed
    rejected: int  # of which whole messages (dead letters)
    dropped: int  # lost on our side: client queue overflow, refused by the core
    late: int
    reconnects: int
    lost: int  # reported missing by the source itself (sequence gaps)
    applied: int
    suppressed: int
    connected: bool
    latency_p50_ms: float
    latency_p99_ms: float


class AdapterRunner:
    def __init__(
        self,
        adapter: Adapter,
        sink: BatchSink,
        interner: Interner,
        backoff: Backoff | None = None,
        *,
        dead_letters: DeadLetterSink | None = None,
        caps: KeyCaps | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.adapter = adapter
        self.pipeline = Pipeline(
            adapter.name,
            adapter.ingest,
            sink,
            interner,
            dead_letters=dead_letters,
            caps=caps,
            clock_ms=clock_ms,
        )
        self.supervisor: Supervisor[AsyncIterator[SourceBatch]] = Supervisor(
            f"adapter {adapter.name!r}", adapter.session, self.pipeline.feed, backoff or adapter.backoff
        )

    async def run(self) -> None:
        """Until cancelled, or until a finite source is exhausted and everything it gave is applied."""
        async with asyncio.TaskGroup() as tg:
            applier = tg.create_task(self.pipeline.run_apply(), name=f"apply {self.adapter.name}")
            await self.supervisor.run()
            await self.pipeline.drain()
            applier.cancel()

    # Live counters (drsdtp.stats.IngestCounters) summed over adapter, pipeline and supervisor.
    @property
    def received(self) -> int:
        return self.pipeline.stats.received

    @property
    def invalid(self) -> int:
        p, a = self.pipeline.stats, self.adapter.stats
        return p.invalid + p.rejected + a.malformed + a.unknown

    @property
    def dropped(self) -> int:
        return self.pipeline.stats.dropped + self.adapter.stats.dropped

    @property
    def late(self) -> int:
        return self.pipeline.stats.late

    @property
    def reconnects(self) -> int:
        return self.supervisor.stats.reconnects

    def snapshot(self) -> IngestSnapshot:
        p = self.pipeline.stats
        pct = p.latency.percentiles((50.0, 99.0))
        return IngestSnapshot(
            received=self.received,
            invalid=self.invalid,
            rejected=p.rejected,
            dropped=self.dropped,
            late=self.late,
            reconnects=self.reconnects,
            lost=self.adapter.stats.lost,
            applied=p.applied,
            suppressed=p.suppressed,
            connected=self.supervisor.stats.connected,
            latency_p50_ms=pct[50.0],
            latency_p99_ms=pct[99.0],
        )


class IngestService:
    def __init__(
        self,
        adapters: Sequence[Adapter],
        sink: BatchSink,
        interner: Interner,
        backoff: Backoff | None = None,
        *,
        dead_letters: DeadLetterSink | None = None,
        caps: KeyCaps | None = None,
    ) -> None:
        """``backoff`` overrides every adapter's own ``[adapters.reconnect]`` settings (tests use it);
        ``caps`` (shared by every adapter) bound the twins and fields ingestion may create."""
        seen: set[str] = set()
        for i, a in enumerate(adapters):
            if a.name in seen:
                raise ConfigError(f"adapters[{i}].name", f"duplicate adapter name {a.name!r}")
            seen.add(a.name)
        self.runners = {
            a.name: AdapterRunner(a, sink, interner, backoff, dead_letters=dead_letters, caps=caps)
            for a in adapters
        }

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for name, runner in self.runners.items():
                tg.create_task(runner.run(), name=f"adapter {name}")

    def snapshot(self) -> dict[str, IngestSnapshot]:
        return {name: r.snapshot() for name, r in self.runners.items()}
