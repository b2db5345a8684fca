"""The dead-letter RPCs of the API (list, replay, purge), over the node's dead-letter store and intake.

Replay decodes a letter again with the adapter's *current* settings (``redecode``: MQTT and serial; the
others keep no payload a decoder could read again) and submits its readings to that adapter's pipeline like
any others; the letter is removed only once the pipeline has applied them (its batch acknowledged). A
letter that still fails is kept and its new reason reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from drsdtp.adapters.base import SourceBatch
from drsdtp.adapters.payloads import reason_of
from drsdtp.api.node import LetterListing, ReplayOutcome, Selection
from drsdtp.ingest.deadletters import DeadLetterStore, Letter
from drsdtp.ingest.runner import AdapterRunner

__all__ = ["DeadLetterService", "Redecoder"]

log = logging.getLogger(__name__)

REPLAY_TIMEOUT_S = 60.0


class Redecoder(Protocol):
    """An adapter that can decode a dead letter's payload again."""

    def redecode(self, source: str, payload: bytes, received_ms: int) -> SourceBatch: ...


class DeadLetterService:
    def __init__(self, store: DeadLetterStore, runners: Callable[[], dict[str, AdapterRunner]]) -> None:
        self.store = store
        self._runners = runners

    def listing(self, adapter: str, limit: int) -> LetterListing:
        letters = self.store.letters(adapter=adapter or None)
        return LetterListing(letters[-limit:], len(letters), len(self.store), self.store.size_bytes)

    def _selected(self, select: Selection) -> list[Letter]:
        ids = None if select.all else list(select.ids)
        return self.store.letters(adapter=select.adapter or None, ids=ids)

    async def purge(self, select: Selection) -> int:
        chosen = self._selected(select)
        purged = await self.store.remove([lt.id for lt in chosen], "purged")
        log.info("dead letters: %d purged", purged)
        return purged

    async def replay(self, select: Selection) -> list[ReplayOutcome]:
        outcomes: dict[int, ReplayOutcome] = {}
        waiting: list[tuple[Letter, asyncio.Future[None]]] = []
        runners = self._runners()
        for letter in self._selected(select):
            outcome = outcomes[letter.id] = ReplayOutcome(id=letter.id)
            runner = runners.get(letter.adapter)
            decoder = getattr(runner.adapter, "redecode", None) if runner is not None else None
            if runner is None:
                outcome.error = f"no adapter named {letter.adapter!r} in this node's config"
            elif decoder is None:
                outcome.error = (
                    f"a {getattr(runner.adapter, 'kind', '?')} adapter cannot decode letters again"
                )
            elif letter.truncated:
                outcome.error = f"only {letter.kept} of its {letter.size} bytes were kept: cannot be replayed"
            else:
                try:
                    batch = decoder(letter.source, await self.store.payload(letter.id), letter.received_ms)
                except Exception as exc:  # it still fails: the letter stays, with today's reason
                    reason, detail = reason_of(exc)
                    outcome.error = f"{reason}: {detail}" if detail else reason
                    continue
                applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                batch.ack = _resolver(applied)
                outcome.readings = len(batch)
                await runner.pipeline.submit(batch)
                waiting.append((letter, applied))
        if waiting:
            _, pending = await asyncio.wait([f for _, f in waiting], timeout=REPLAY_TIMEOUT_S)
            for letter, future in waiting:
                if future in pending:
                    future.cancel()
                    outcomes[letter.id].error = f"not applied within {REPLAY_TIMEOUT_S:.0f} s; kept"
                else:
                    outcomes[letter.id].applied = True
            done = [letter.id for letter, future in waiting if not future.cancelled()]
            await self.store.remove(done, "replayed")
            log.info("dead letters: %d replayed, %d kept", len(done), len(outcomes) - len(done))
        return list(outcomes.values())


def _resolver(future: asyncio.Future[None]) -> Callable[[], None]:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    return resolve
