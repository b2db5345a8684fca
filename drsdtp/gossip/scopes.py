"""Partial replication: each twin belongs to one scope, and a node replicates only the scopes it is
configured for. With a peer, only the intersection of both nodes' scopes is exchanged.

Convention: a twin's scope is its LWW string field ``_scope`` (absent: ``"default"``). Twins whose name
starts with ``_`` (``_members``) are system twins that every peer replicates.

When a node's scopes are all replicated by the peer (the common case), nothing is filtered: deltas go out
as the very bytes the engine produced. Otherwise the per-twin filtering parses the generated protobuf
(``state_pb2``), once per delta per peer; that is the slow path of a deliberately partial topology.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from drsdtp.core import Store
from drsdtp.wire.v1 import state_pb2

__all__ = ["DEFAULT_SCOPE", "SCOPE_FIELD", "SYSTEM_PREFIX", "ScopeFilter", "scope_of", "version_twins"]

SCOPE_FIELD: Final = "_scope"
DEFAULT_SCOPE: Final = "default"
SYSTEM_PREFIX: Final = "_"


def scope_of(store: Store, twin: str) -> str:
    value = store.get(twin, SCOPE_FIELD)
    return value if isinstance(value, str) and value else DEFAULT_SCOPE


class ScopeFilter:
    """What may travel between this node and one peer."""

    def __init__(self, store: Store, mine: Iterable[str], theirs: Iterable[str]) -> None:
        self.store = store
        mine_set, theirs_set = frozenset(mine), frozenset(theirs)
        self.shared = mine_set & theirs_set
        # Everything this node holds is in its own scopes, so if the peer takes all of them, nothing of ours
        # needs filtering on the way out.
        self.full = mine_set <= theirs_set

    def keeps(self, twin: str) -> bool:
        return twin.startswith(SYSTEM_PREFIX) or scope_of(self.store, twin) in self.shared

    def delta(self, delta: bytes) -> bytes | None:
        """``delta`` restricted to the shared twins (None when nothing is left). Whole twins are kept or
        dropped, so the result is still a delta of those twins (forwardable like the original)."""
        if self.full:
            return delta
        message = state_pb2.StateDelta.FromString(delta)
        kept = [t for t in message.twins if self.keeps(t.twin)]
        if len(kept) == len(message.twins):
            return delta
        if not kept:
            return None
        del message.twins[:]
        message.twins.extend(kept)
        return message.SerializeToString()

    def digest(self, digest: bytes) -> bytes:
        """Our digest without the twins the peer does not replicate (so it never asks for them)."""
        if self.full:
            return digest
        message = state_pb2.StoreDigest.FromString(digest)
        pairs = [(t, d) for t, d in zip(message.twins, message.digests, strict=True) if self.keeps(t)]
        del message.twins[:]
        del message.digests[:]
        message.twins.extend(t for t, _ in pairs)
        message.digests.extend(d for _, d in pairs)
        return message.SerializeToString()

    def wanted(self, twins: Sequence[str]) -> list[str]:
        """Of the twins that differ, those to repair: ours in shared scopes, and the ones we lack entirely
        (the peer filtered its digest, so those are in a shared scope by its account)."""
        return [t for t in twins if t not in self.store or self.keeps(t)]

    def version(self, version: bytes) -> bytes:
        """The peer's version restricted to the twins we may send it."""
        if self.full:
            return version
        message = state_pb2.StoreVersion.FromString(version)
        kept = [t for t in message.twins if self.keeps(t.twin)]
        if len(kept) == len(message.twins):
            return version
        del message.twins[:]
        message.twins.extend(kept)
        return message.SerializeToString()


def version_twins(version: bytes) -> list[str]:
    """The twins a StoreVersion lists (off the hot path: one repair round)."""
    return [t.twin for t in state_pb2.StoreVersion.FromString(version).twins]
