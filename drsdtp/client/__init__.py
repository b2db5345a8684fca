"""The drsdtp client SDK: a node's application API for Python applications.

Installable alone (grpcio and protobuf; no Rust engine, no daemon code)::

    from drsdtp.client import Client

    with Client("127.0.0.1:7401") as client:
        twin = client.get("room-1")
        client.desire("room-1", {"setpoint_c": 21.0}, if_version=twin.version)

:class:`AsyncClient` is the same for asyncio. Results are frozen dataclasses (:mod:`drsdtp.client.types`),
errors one tree (:mod:`drsdtp.client.errors`), writes plain values (:mod:`drsdtp.client.writes`).
"""

from drsdtp.client.aio import DEFAULT_TARGET, AsyncClient
from drsdtp.client.channel import TOKEN_ENV, Tls, connect, tls_from_config
from drsdtp.client.commands import Command, CommandOutcome, CommandSpec
from drsdtp.client.errors import (
    ApiError,
    CancelledError,
    ConflictError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from drsdtp.client.retry import RetryPolicy
from drsdtp.client.sync import Client, SyncWatch
from drsdtp.client.types import (
    Audit,
    AuditRecord,
    Change,
    DesiredValue,
    Field,
    FieldChange,
    FieldHealth,
    HealthReport,
    History,
    Insight,
    PeerStatus,
    RollbackResult,
    SnapshotInfo,
    Status,
    Twin,
    TwinHealth,
    TwinList,
    TwinSummary,
    WriteResult,
    field_to_python,
)
from drsdtp.client.watch import Watch
from drsdtp.client.writes import (
    Columns,
    Create,
    Op,
    TwinWrite,
    add,
    clear_desired,
    desire,
    increment,
    new_idempotency_key,
    remove,
    report,
)

__all__ = [
    "DEFAULT_TARGET",
    "TOKEN_ENV",
    "ApiError",
    "AsyncClient",
    "Audit",
    "AuditRecord",
    "CancelledError",
    "Change",
    "Client",
    "Columns",
    "Command",
    "CommandOutcome",
    "CommandSpec",
    "ConflictError",
    "Create",
    "DeadlineExceededError",
    "DesiredValue",
    "Field",
    "FieldChange",
    "FieldHealth",
    "HealthReport",
    "History",
    "Insight",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Op",
    "PeerStatus",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RollbackResult",
    "SnapshotInfo",
    "Status",
    "SyncWatch",
    "Tls",
    "Twin",
    "TwinHealth",
    "TwinList",
    "TwinSummary",
    "TwinWrite",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "Watch",
    "WriteResult",
    "add",
    "clear_desired",
    "connect",
    "desire",
    "field_to_python",
    "increment",
    "new_idempotency_key",
    "remove",
    "report",
    "tls_from_config",
]
