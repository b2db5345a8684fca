"""Partial replication: each twin belongs to one scope, and a node replicates only the scopes it is
configured for. With a peer, only the intersection of both nodes' scopes is exchanged.

Convention: a twin's scope is its LWW string field ``_scope`` (absent: ``"default"``). Twins whose name
starts with ``_`` (``_members``) are system twins that every peer replicates, except those under a prefix
of :data:`SCOPED_SYSTEM_PREFIXES`: a command record (``_cmd/<id>``) or an alarm (``_alarm/<id>``) carries
its target twin's ``_scope`` in its creation event and travels only where that twin does.

When a node's scopes are all replicated by the peer (the common case), nothing is filtered: deltas go out
as the very bytes the engine produced, and the absent-means-default rule applies as is. Otherwise the
per-twin filtering parses the generated protobuf (``state_pb2``), once per delta per peer: the slow path of
a deliberately partial topology. On such a filtered link a twin travels only once its ``_scope`` is known
here: deltas are merged in any order, so a node may hold updates of a twin whose ``_scope`` write has not
arrived yet, and treating that twin as "default" would leak it to nodes outside its scope for good (there
is no delete). Hence nodes write ``_scope`` explicitly in a twin's creation event, "default" included.

Invariant (checked by the simulation): a node only ever holds twins of its own scopes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from drsdtp.core import Store
from drsdtp.wire.v1 import state_pb2

__all__ = [
    "DEFAULT_SCOPE",
    "SCOPED_SYSTEM_PREFIXES",
    "SCOPE_FIELD",
    "SYSTEM_PREFIX",
    "ScopeFilter",
    "scope_of",
    "version_twins",
]

SCOPE_FIELD: Final = "_scope"
DEFAULT_SCOPE: Final = "default"
SYSTEM_PREFIX: Final = "_"
SCOPED_SYSTEM_PREFIXES: Final = ("_cmd/", "_alarm/")


def scope_of(store: Store, twin: str) -> str:
    """The scope of a twin by the convention (absent: default)."""
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
        """Whether ``twin`` may travel to the peer (its scope known here and shared)."""
        if self.full or (twin.startswith(SYSTEM_PREFIX) and not twin.startswith(SCOPED_SYSTEM_PREFIXES)):
            return True
        value = self.store.get(twin, SCOPE_FIELD)
        return isinstance(value, str) and value in self.shared

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

    def wanted(self, differing: Sequence[str], peer_digest: bytes) -> list[str]:
        """Of the twins that differ, those to repair: the ones the peer listed (it filtered its digest by
        the same rule, so they are shared) and ours that may travel to it."""
        if self.full:
            return list(differing)
        listed = set(state_pb2.StoreDigest.FromString(peer_digest).twins)
        return [t for t in differing if t in listed or self.keeps(t)]

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
