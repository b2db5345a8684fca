"""One implementation per API method. Each unary method takes its protobuf request and returns its protobuf
reply (the contract), raising the project's errors (:mod:`drsdtp.errors`) for :mod:`drsdtp.api.errors` to
map, so the gRPC server and an HTTP/JSON face (after protobuf's canonical JSON mapping) call the same
function. Watch is a stream and writes to its gRPC call itself (:mod:`.watch`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from drsdtp.api.auth.ratelimit import AuditBudget
from drsdtp.api.idempotency import IdempotencyStore
from drsdtp.api.node import NodeApi
from drsdtp.api.services.admin import AdminService
from drsdtp.api.services.alarms import AlarmService
from drsdtp.api.services.commands import CommandService
from drsdtp.api.services.intel import IntelService
from drsdtp.api.services.read import ReadService
from drsdtp.api.services.session import who_am_i
from drsdtp.api.services.write import WriteService

__all__ = ["Unary", "unary_methods"]

Unary = Callable[[Any], Awaitable[Any]]


def unary_methods(
    node: NodeApi,
    keys: IdempotencyStore,
    write_paths: Counter[str] | None = None,
    audit_budget: AuditBudget | None = None,
) -> dict[str, Unary]:
    """Every unary method of ``drsdtp.wire.v1.TwinApi`` by its name in the proto (``write_paths``: counts
    Write requests by the path that took them; ``audit_budget``: the guard's, which refused commands of a
    batch share)."""
    read, admin, write = ReadService(node), AdminService(node), WriteService(node, keys, write_paths)
    intel = IntelService(node)
    alarms = AlarmService(node)
    commands = CommandService(lambda: node.commands, node.audit, audit_budget)
    return {
        "Status": read.status,
        "ListTwins": read.list_twins,
        "GetTwin": read.get_twin,
        "ReadHistory": read.read_history,
        "Insight": read.insight,
        "TakeSnapshot": admin.take_snapshot,
        "ListSnapshots": admin.list_snapshots,
        "Rollback": admin.rollback,
        "ReadAudit": admin.read_audit,
        "ListDeadLetters": admin.list_dead_letters,
        "ReplayDeadLetters": admin.replay_dead_letters,
        "PurgeDeadLetters": admin.purge_dead_letters,
        "Write": write.write,
        "GetRecovery": admin.get_recovery,
        "AcceptRecovery": admin.accept_recovery,
        "ListAnomalies": intel.list_anomalies,
        "Health": intel.health,
        "ListAlarms": alarms.list_alarms,
        "AcknowledgeAlarm": alarms.acknowledge_alarm,
        "ListRules": alarms.list_rules,
        # commands (issue 12)
        "IssueCommand": commands.issue,
        "GetCommand": commands.get,
        "ListCommands": commands.list,
        "CancelCommand": commands.cancel,
        "WaitCommand": commands.wait,
        "Relate": intel.relate,
        "Query": intel.query,
        "WhoAmI": who_am_i,
        "IssueCommands": commands.issue_batch,
        "WaitCommands": commands.wait_batch,
    }
