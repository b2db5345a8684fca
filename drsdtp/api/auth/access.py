"""What a request touches, read from its message: the method to check (``Write.create`` / ``Write.delete``
for a Write that creates or deletes twins), the twin ids, and the id prefixes a query covers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Access", "access_of"]

EVERY_TWIN = ("",)  # the prefix every twin id has


@dataclass(frozen=True, slots=True)
class Access:
    methods: tuple[str, ...]  # the method, then any finer permission the request needs
    twins: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


# Methods whose request names one twin in ``twin_id`` (empty: not a twin method's business to allow).
_ONE_TWIN = frozenset(
    {"GetTwin", "ReadHistory", "Insight", "TakeSnapshot", "ListSnapshots", "Rollback", "IssueCommand"}
)


# ... in ``twin_id``, empty for every twin.
_ONE_TWIN_OR_EVERY = frozenset(
    {"ReadAudit", "ListAnomalies", "WatchAnomalies", "ListAlarms", "WatchAlarms", "ListCommands"}
)


def access_of(method: str, request: Any) -> Access:
    """The access ``request`` (a ``drsdtp.wire.v1.api_pb2`` message of ``method``) asks for. A method with no
    twins (Status, dead letters, recovery) is about the node and checked by role only."""
    if method in _ONE_TWIN:
        return Access((method,), (request.twin_id,))
    if method == "ListTwins":
        return Access((method,), (), (request.prefix,))
    if method == "Watch":
        # The stream sends twins in twin_ids (when any) that also start with prefix.
        if request.twin_ids:
            return Access((method,), tuple(request.twin_ids))
        return Access((method,), (), (request.prefix,))
    if method in _ONE_TWIN_OR_EVERY:
        return Access((method,), (request.twin_id,)) if request.twin_id else Access((method,), (), EVERY_TWIN)
    if method == "Query":  # may answer with any twin
        return Access((method,), (), EVERY_TWIN)
    if method == "Relate":  # the twins whose edges change
        return Access((method,), tuple(dict.fromkeys(e.twin_id for e in (*request.add, *request.remove))))
    if method == "Health":
        return (
            Access((method,), tuple(request.twin_ids))
            if request.twin_ids
            else Access((method,), (), EVERY_TWIN)
        )
    if method == "Write":
        methods = [method]
        if any(w.HasField("create") for w in request.twins):
            methods.append("Write.create")
        if any(w.delete for w in request.twins):
            methods.append("Write.delete")
        twins = dict.fromkeys([w.twin_id for w in request.twins])
        if request.HasField("columns"):
            twins.update(dict.fromkeys(request.columns.twin_ids))
        return Access(tuple(methods), tuple(twins))
    return Access((method,))
