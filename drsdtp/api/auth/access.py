"""What a request touches, read from its message: the method to check (``Write.create`` / ``Write.delete``
for a Write that creates or deletes twins) and every twin id it names, directly or through a record it
names (an alarm or a command belongs to one twin: :class:`RecordTwins` looks it up).

A request that names no twin (a listing, a query over every twin, Watch without ``twin_ids``) is checked by
role only: what it answers is cut to the caller's scopes by the method itself (:mod:`drsdtp.api.visibility`),
so a scoped caller gets what it may see instead of a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Access", "RecordTwins", "access_of"]


@dataclass(frozen=True, slots=True)
class Access:
    methods: tuple[str, ...]  # the method, then any finer permission the request needs
    twins: tuple[str, ...] = ()


class RecordTwins(Protocol):
    """The twin a record belongs to, None for a record this node does not hold (the method answers
    NOT_FOUND for it)."""

    def alarm_twin(self, alarm_id: str) -> str | None: ...
    def command_twin(self, command_id: str) -> str | None: ...


# Methods whose request names one twin in ``twin_id``.
_ONE_TWIN = frozenset(
    {"GetTwin", "ReadHistory", "Insight", "TakeSnapshot", "ListSnapshots", "Rollback", "IssueCommand"}
)
# ... in ``twin_id``, empty for every twin (the answer then filtered to the caller's scopes).
_ONE_TWIN_OR_EVERY = frozenset(
    {"ReadAudit", "ListAnomalies", "WatchAnomalies", "ListAlarms", "WatchAlarms", "ListCommands"}
)
# Methods that name a command in ``command_id``.
_ONE_COMMAND = frozenset({"GetCommand", "CancelCommand", "WaitCommand"})


def _named(*twins: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for t in twins if t))


def access_of(method: str, request: Any, records: RecordTwins | None = None) -> Access:
    """The access ``request`` (a ``drsdtp.wire.v1.api_pb2`` message of ``method``) asks for. A method with no
    twins (Status, dead letters, recovery) is about the node and checked by role only. Without ``records``
    a request naming an alarm or a command is checked by role only (tests of the table alone)."""
    if method in _ONE_TWIN:
        return Access((method,), (request.twin_id,))
    if method in _ONE_TWIN_OR_EVERY:
        return Access((method,), _named(request.twin_id))
    if method in ("Watch", "Health"):
        return Access((method,), _named(*request.twin_ids))
    if method == "AcknowledgeAlarm" and records is not None and request.alarm_id:
        return Access((method,), _named(records.alarm_twin(request.alarm_id) or ""))
    if method in _ONE_COMMAND and records is not None and request.command_id:
        return Access((method,), _named(records.command_twin(request.command_id) or ""))
    if method == "Query":  # the twin it starts from; the hits are cut to the caller's scopes
        return Access((method,), _named(request.under, request.above, request.related))
    if method == "Relate":  # both ends of every edge that changes
        edges = (*request.add, *request.remove)
        return Access((method,), _named(*(t for e in edges for t in (e.twin_id, e.target))))
    if method == "Write" and hasattr(request, "bulk_twins"):
        # Decoded natively (drsdtp.api.write_bulk.BulkWrite): field ops only, no create or delete.
        return Access((method,), request.bulk_twins())
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
