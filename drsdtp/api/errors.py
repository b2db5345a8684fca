"""The one mapping from the error tree (:mod:`drsdtp.errors`) to gRPC status codes, for every method.

Services raise the project's errors; they never choose a status themselves. An error may name what was wrong
in the request (its ``field`` attribute, set with :func:`naming`): the status then carries it as trailing
metadata ``drsdtp-field`` too, so a client can point at the field without parsing the message, as may any
extra ``details`` the error holds (``drsdtp-<key>``, e.g. the twin's current version after a failed
``if_version``).
"""

from __future__ import annotations

from typing import TypeVar

import grpc
import grpc.aio

from drsdtp.errors import (
    DrsdtpError,
    LimitError,
    MissingSnapshotError,
    NotReadyError,
    PreconditionError,
    StorageError,
    UnknownTwinError,
)

__all__ = ["FIELD_KEY", "abort_with", "error_text", "naming", "status_for"]

FIELD_KEY = "drsdtp-field"

E = TypeVar("E", bound=DrsdtpError)


def naming(exc: E, field: str, **details: str) -> E:
    """``exc`` marked as being about the request's ``field`` (a path such as ``ops[2].value``)."""
    exc.field = field  # type: ignore[attr-defined]
    exc.details = details  # type: ignore[attr-defined]
    return exc


def status_for(exc: DrsdtpError) -> grpc.StatusCode:
    """NOT_FOUND for a missing twin or snapshot; FAILED_PRECONDITION for a state the request needs and does
    not find (a condition, a feature off, a damaged snapshot or a failed disk); UNAVAILABLE (retryable) for
    what the node cannot answer yet (no intelligence pass so far); DEADLINE_EXCEEDED for a wait
    that ran out (the write stays applied); RESOURCE_EXHAUSTED over a bound; INVALID_ARGUMENT for the rest
    (bad values, types, names)."""
    if isinstance(exc, UnknownTwinError | MissingSnapshotError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, PreconditionError | StorageError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, NotReadyError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, LimitError) and getattr(exc, "exhausted", False):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


def error_text(exc: DrsdtpError) -> str:
    # A KeyError subclass (UnknownTwinError) shows its message quoted: show it as written.
    return str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)


async def abort_with(context: grpc.aio.ServicerContext, method: str, exc: DrsdtpError) -> None:
    """Ends the call with ``exc``'s status, the message ``<method>: <what was wrong>``."""
    metadata = []
    field = getattr(exc, "field", "")
    if field:
        metadata.append((FIELD_KEY, field))
    for key, value in getattr(exc, "details", {}).items():
        metadata.append((f"drsdtp-{key}", value))
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
    await context.abort(status_for(exc), f"{method}: {error_text(exc)}")
