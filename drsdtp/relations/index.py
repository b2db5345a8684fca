"""The local relation index: every edge of the twins this node holds, forwards and backwards.

Queried with no lag: before each read, :meth:`RelationIndex.refresh` reads the twins changed since its last
refresh from the node's change feed (synchronously: every change applied to the store so far, local or a
peer's) and re-reads only their edge sets. Memory: two dicts over the edges the store holds (bounded by the
store's own twin and field limits).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from drsdtp.relations.edges import EDGES_FIELD, LOCATED_IN, Edge, decode

__all__ = ["EdgeReader", "RelationIndex"]

READ_BATCH = 4096
MAX_DEPTH = 64  # ancestors/descendants stop this many levels down (a tree deeper than this is a mistake)


class EdgeReader(Protocol):
    def get(self, twin: str, field: str) -> object: ...


def _twin_of(change: object) -> str:
    twin = getattr(change, "twin", None)
    return twin if isinstance(twin, str) else ""


class RelationIndex:
    def __init__(
        self, store: EdgeReader, changed: Callable[[int, int], tuple[Sequence[object], int]]
    ) -> None:
        self._store = store
        self._changed = changed
        self._cursor = 0
        self._out: dict[str, frozenset[Edge]] = {}
        self._in: defaultdict[str, set[Edge]] = defaultdict(set)
        self.refreshes = 0

    def refresh(self) -> int:
        """Re-read the edges of every twin changed since the last refresh; returns how many twins."""
        seen = 0
        while True:
            changes, cursor = self._changed(self._cursor, READ_BATCH)
            self._cursor = cursor
            for change in changes:
                twin = _twin_of(change)
                if twin and not twin.startswith("_"):
                    self._reload(twin)
                    seen += 1
            if len(changes) < READ_BATCH:
                break
        self.refreshes += 1
        return seen

    def _reload(self, twin: str) -> None:
        raw = self._store.get(twin, EDGES_FIELD)
        edges = (
            frozenset(e for element in raw if (e := decode(twin, element)) is not None)
            if isinstance(raw, frozenset)
            else frozenset()
        )
        old = self._out.get(twin, frozenset())
        if old == edges:
            return
        for edge in old - edges:
            incoming = self._in.get(edge.target)
            if incoming is not None:
                incoming.discard(edge)
                if not incoming:
                    del self._in[edge.target]
        for edge in edges - old:
            self._in[edge.target].add(edge)
        if edges:
            self._out[twin] = edges
        else:
            self._out.pop(twin, None)

    # -- reads (call refresh first) ---------------------------------------------------------------------

    def outgoing(self, twin: str, relation: str | None = None) -> list[Edge]:
        return sorted(e for e in self._out.get(twin, ()) if relation is None or e.relation == relation)

    def incoming(self, twin: str, relation: str | None = None) -> list[Edge]:
        return sorted(e for e in self._in.get(twin, ()) if relation is None or e.relation == relation)

    def edges(self) -> Iterable[Edge]:
        for edges in self._out.values():
            yield from edges

    def neighbours(self, twin: str, relation: str | None = None) -> list[str]:
        """Twins related to ``twin`` by ``relation`` (any, when None), either direction."""
        out = {e.target for e in self.outgoing(twin, relation)} | {
            e.twin for e in self.incoming(twin, relation)
        }
        out.discard(twin)
        return sorted(out)

    def ancestors(self, twin: str) -> list[str]:
        """Up the ``located_in`` tree, nearest first (a twin in two places: both, breadth first)."""
        return self._walk(twin, lambda t: [e.target for e in self.outgoing(t, LOCATED_IN)])

    def descendants(self, twin: str) -> list[str]:
        """Everything located in ``twin``, directly or below, nearest first."""
        return self._walk(twin, lambda t: [e.twin for e in self.incoming(t, LOCATED_IN)])

    def siblings(self, twin: str) -> list[str]:
        """Twins located in the same place as ``twin``."""
        out = {c for parent in self.ancestors(twin)[:1] for c in self.children(parent)}
        out.discard(twin)
        return sorted(out)

    def children(self, twin: str) -> list[str]:
        return sorted(e.twin for e in self.incoming(twin, LOCATED_IN))

    def affected(self, twin: str, limit: int = 100) -> tuple[str, ...]:
        """The twins an anomaly of ``twin`` may affect: what it feeds, powers or otherwise points at (not
        where it is located), and everything located in it."""
        out = [e.target for e in self.outgoing(twin) if e.relation != LOCATED_IN]
        out += self.descendants(twin)
        return tuple(dict.fromkeys(t for t in out if t != twin))[:limit]

    def _walk(self, start: str, step: Callable[[str], list[str]]) -> list[str]:
        seen = {start}
        out: list[str] = []
        frontier: deque[tuple[str, int]] = deque([(start, 0)])
        while frontier:
            twin, depth = frontier.popleft()
            if depth >= MAX_DEPTH:
                continue
            for nxt in step(twin):
                if nxt not in seen:  # a cycle (a located_in b located_in a) ends here
                    seen.add(nxt)
                    out.append(nxt)
                    frontier.append((nxt, depth + 1))
        return out
