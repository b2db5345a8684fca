"""Cluster membership as replicated state: the reserved twin ``_members``.

* ``nodes``: an add-wins OR-set of node ids;
* ``addr:<node id>``: an LWW register with the address where that node accepts peer streams.

A node announces itself at start; every node dials the members it learns about (configured seeds take
precedence for addresses). A node that leaves for good is removed with :func:`leave` (its element is removed
from the set and its address cleared). Removal is add-wins: a removed node that is still running re-adds
itself on its next start, so stop it first.
"""

from __future__ import annotations

from typing import Final

from drsdtp.core import Store

__all__ = ["ADDRESS_PREFIX", "MEMBERS_TWIN", "NODES_FIELD", "announce", "departed", "leave", "members"]

MEMBERS_TWIN: Final = "_members"
NODES_FIELD: Final = "nodes"
ADDRESS_PREFIX: Final = "addr:"


def members(store: Store) -> dict[str, str | None]:
    """Member node ids with their advertised addresses (None when unknown or cleared)."""
    nodes = store.get(MEMBERS_TWIN, NODES_FIELD)
    if not isinstance(nodes, frozenset):
        return {}
    out: dict[str, str | None] = {}
    for node in sorted(nodes):
        address = store.get(MEMBERS_TWIN, ADDRESS_PREFIX + node)
        out[node] = address if isinstance(address, str) and address else None
    return out


def announce(store: Store, node_id: str, address: str | None) -> list[bytes]:
    """Write this node's membership (only what is missing or changed); returns the deltas to make durable
    and replicate."""
    deltas: list[bytes] = []
    current = members(store)
    if node_id not in current:
        deltas.append(store.add(MEMBERS_TWIN, NODES_FIELD, node_id))
    if address and current.get(node_id) != address:
        deltas.append(store.set(MEMBERS_TWIN, ADDRESS_PREFIX + node_id, address))
    return deltas


def leave(store: Store, node_id: str) -> list[bytes]:
    """Remove ``node_id`` for good: drop it from the set and clear its address. The cleared address also
    marks the node as departed (see :func:`departed`)."""
    deltas: list[bytes] = []
    if node_id in members(store):
        deltas.append(store.remove(MEMBERS_TWIN, NODES_FIELD, node_id))
    if store.get(MEMBERS_TWIN, ADDRESS_PREFIX + node_id) != "":
        deltas.append(store.set(MEMBERS_TWIN, ADDRESS_PREFIX + node_id, ""))
    return deltas


def departed(store: Store) -> set[str]:
    """Nodes removed for good: a cleared address and no membership. Only :func:`leave` writes an empty
    address, so this tells a removed node from one this node has simply not heard of yet."""
    if MEMBERS_TWIN not in store:
        return set()
    current = members(store)
    fields = store.fields(MEMBERS_TWIN)
    return {
        name[len(ADDRESS_PREFIX) :]
        for name, value in fields.items()
        if name.startswith(ADDRESS_PREFIX) and value == "" and name[len(ADDRESS_PREFIX) :] not in current
    }
