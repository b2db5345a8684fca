"""Relations between twins as replicated state: each twin's outgoing edges are the elements of one set field.

An edge ``twin --relation--> target`` is the element ``"<relation>:<target>"`` of the OR-set field
:data:`EDGES_FIELD` of ``twin`` (``'_'``-prefixed: internal, not writable through Write). The set replicates
and merges like any field (a concurrent add and remove: the add wins), so every node that holds the twin
holds its edges. Relation names are short names (letters, digits, ``. _ -``), so the first ``:`` splits an
element. ``located_in`` (child to parent) builds the site > area > line > asset > sensor tree; ``feeds``,
``powers`` and any user-defined name relate twins across it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from drsdtp.errors import InvalidValueError

__all__ = [
    "EDGES_FIELD",
    "LOCATED_IN",
    "STANDARD",
    "Edge",
    "check_edge",
    "decode",
    "encode",
]

EDGES_FIELD: Final = "_rel"
LOCATED_IN: Final = "located_in"
STANDARD: Final = (LOCATED_IN, "feeds", "powers")
MAX_TWIN_BYTES: Final = 1024
_RELATION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    twin: str
    relation: str
    target: str

    def __str__(self) -> str:
        return f"{self.twin} --{self.relation}--> {self.target}"


def encode(edge: Edge) -> str:
    return f"{edge.relation}:{edge.target}"


def decode(twin: str, element: str) -> Edge | None:
    """The edge an element of ``twin``'s edge set stands for (None: not one; a newer node's format)."""
    relation, sep, target = element.partition(":")
    if not sep or not target or not _RELATION_RE.fullmatch(relation):
        return None
    return Edge(twin, relation, target)


def check_edge(edge: Edge, where: str = "relation") -> Edge:
    """The edge if it is valid; InvalidValueError naming what is wrong otherwise."""
    for name, value in (("twin", edge.twin), ("target", edge.target)):
        if not value:
            raise InvalidValueError(f"{where}.{name}: empty twin id")
        if value.startswith("_"):
            raise InvalidValueError(f"{where}.{name}: twin {value!r} is internal to the node ('_' prefix)")
        if len(value.encode()) > MAX_TWIN_BYTES:
            raise InvalidValueError(f"{where}.{name}: twin id longer than {MAX_TWIN_BYTES} bytes")
    if not _RELATION_RE.fullmatch(edge.relation):
        raise InvalidValueError(
            f"{where}.relation: {edge.relation!r} is not a relation name (1-64 characters: letters, digits, "
            f"'.', '_', '-'; e.g. {', '.join(STANDARD)})"
        )
    if edge.twin == edge.target:
        raise InvalidValueError(f"{where}: {edge.twin!r} cannot relate to itself")
    return edge
