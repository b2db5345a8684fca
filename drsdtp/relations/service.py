"""The node's relations: written over the API or declared in the config, replicated, queried locally.

:class:`RelationService` needs only a narrow face of the node (:class:`RelationHost`). Entered as a
service, it writes the config's ``[[relations]]`` that the store does not hold yet (once: a restart writes
nothing again, and an edge removed over the API stays removed only until the config declares it again).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, Self

from drsdtp._core import Store
from drsdtp.api.feed import Change
from drsdtp.api.write_plan import visible
from drsdtp.config import RelationRule
from drsdtp.relations.edges import EDGES_FIELD, Edge, check_edge, encode
from drsdtp.relations.index import RelationIndex
from drsdtp.relations.query import QueryHit, QuerySpec, run_query

__all__ = ["RelationHost", "RelationService"]

log = logging.getLogger(__name__)


class RelationHost(Protocol):
    @property
    def store(self) -> Store: ...
    def changed_twins(self, cursor: int, limit: int) -> tuple[list[Change], int]: ...
    async def commit_all(self, deltas: Sequence[tuple[bytes, Sequence[str]]], origin: str) -> None: ...
    async def ensure_twins(self, twins: Sequence[str]) -> None: ...
    def judged_health(self, twins: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{twin: (model, status)}`` for the twins the intelligence judged at its last pass."""
        ...


class RelationService:
    name = "relations"

    def __init__(self, host: RelationHost, declared: Sequence[RelationRule] = ()) -> None:
        self.host = host
        self.declared = tuple(
            check_edge(Edge(r.twin, r.relation, r.target), f"relations[{i}]") for i, r in enumerate(declared)
        )
        self.index = RelationIndex(host.store, lambda cursor, limit: _changes(host, cursor, limit))
        self.written = 0
        self.queries = 0

    async def __aenter__(self) -> Self:
        store = self.host.store
        missing = [e for e in self.declared if encode(e) not in _elements(store.get(e.twin, EDGES_FIELD))]
        if missing:
            await self.relate(missing, ())
            log.info("relations: %d declared relations written", len(missing))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def relate(self, add: Sequence[Edge], remove: Sequence[Edge]) -> int:
        """Add and remove edges (all validated first: one bad edge changes nothing), in one durable commit.
        Returns how many edges changed."""
        for i, edge in enumerate(add):
            check_edge(edge, f"add[{i}]")
        for i, edge in enumerate(remove):
            check_edge(edge, f"remove[{i}]")
        store = self.host.store
        await self.host.ensure_twins(sorted({e.twin for e in add}))
        deltas: list[tuple[bytes, Sequence[str]]] = []
        for edge in add:
            if encode(edge) not in _elements(store.get(edge.twin, EDGES_FIELD)):
                deltas.append((store.add(edge.twin, EDGES_FIELD, encode(edge)), [edge.twin]))
        for edge in remove:
            if encode(edge) in _elements(store.get(edge.twin, EDGES_FIELD)):
                deltas.append((store.remove(edge.twin, EDGES_FIELD, encode(edge)), [edge.twin]))
        if deltas:
            await self.host.commit_all(deltas, "local")
        self.written += len(deltas)
        return len(deltas)

    def query(self, spec: QuerySpec) -> tuple[list[QueryHit], int]:
        self.queries += 1
        store = self.host.store
        return run_query(
            spec,
            self.index,
            store.get,
            lambda: (t for t in store.twins() if not t.startswith("_") and visible(store, t)),
            self.host.judged_health,
        )

    # -- what the intelligence asks -------------------------------------------------------------------

    def affected(self, twin: str) -> tuple[str, ...]:
        self.index.refresh()
        return self.index.affected(twin)

    def peers(self, twin: str) -> list[str]:
        """Twins related to ``twin`` (either direction) and its siblings: those whose sensors can confirm
        or contradict its own."""
        self.index.refresh()
        return sorted({*self.index.neighbours(twin), *self.index.siblings(twin)})


def _changes(host: RelationHost, cursor: int, limit: int) -> tuple[list[object], int]:
    changes, cursor = host.changed_twins(cursor, limit)
    return list(changes), cursor


def _elements(value: object) -> frozenset[str]:
    return value if isinstance(value, frozenset) else frozenset()
