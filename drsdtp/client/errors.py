"""The SDK's errors: every failed call raises one :class:`ApiError` subclass, chosen from its gRPC status in
one place (:func:`from_rpc_error`).

Each class is also the project's own exception for that meaning (:mod:`drsdtp.errors`) and, where one fits, a
stdlib exception, so ``except KeyError`` or ``except drsdtp.errors.UnknownTwinError`` catch a missing twin as
well as ``except NotFoundError`` does. The server sends the request field at fault and a conflicting twin's
current version as trailing metadata (``drsdtp-field``, ``drsdtp-version``): they are attributes here, so a
caller never parses a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import grpc

from drsdtp.errors import (
    DrsdtpError,
    InvalidValueError,
    LimitError,
    PreconditionError,
    ReplicationTimeoutError,
    UnknownTwinError,
)

__all__ = [
    "ApiError",
    "CancelledError",
    "ConflictError",
    "DeadlineExceededError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "from_rpc_error",
]

FIELD_KEY: Final = "drsdtp-field"
VERSION_KEY: Final = "drsdtp-version"
WATCH_POSITION_KEY: Final = "drsdtp-watch-position"


class ApiError(DrsdtpError):
    """A call the node refused or that could not reach it.

    ``code`` is the gRPC status, ``message`` the node's text (``<Method>: <what was wrong>``), ``method``
    the API method called, ``target`` the node's address, ``trailers`` every ``drsdtp-*`` trailing value.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        method: str = "",
        target: str = "",
        trailers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.method = method
        self.target = target
        self.trailers: Mapping[str, str] = dict(trailers or {})

    @property
    def field(self) -> str:
        """The request field at fault, as a path (``twins[0].ops[1].report``); empty when not known."""
        return self.trailers.get(FIELD_KEY, "")

    def __str__(self) -> str:
        return self.message


class NotFoundError(ApiError, UnknownTwinError):
    """No such twin (or snapshot) on the node (NOT_FOUND)."""

    def __str__(self) -> str:  # a KeyError would quote its message
        return self.message


class InvalidArgumentError(ApiError, InvalidValueError):
    """The request is wrong: a bad value, type or name; :attr:`field` names which (INVALID_ARGUMENT)."""


class ConflictError(ApiError, PreconditionError):
    """The twin is not in the state the request needs: ``if_version`` no longer matches, or ``create`` of a
    twin that exists (FAILED_PRECONDITION). :attr:`current_version` is the twin's version on the node, when
    the node said it: re-read, then write again with it."""

    @property
    def current_version(self) -> int | None:
        text = self.trailers.get(VERSION_KEY, "")
        return int(text) if text.isdigit() else None


class UnauthenticatedError(ApiError, PermissionError):
    """No credentials, or ones the node does not accept (UNAUTHENTICATED): check the token or certificate."""


class PermissionDeniedError(ApiError, PermissionError):
    """The caller is known but may not do this (PERMISSION_DENIED)."""


class UnavailableError(ApiError, ConnectionError):
    """The node could not be reached, or went away during the call (UNAVAILABLE)."""


class DeadlineExceededError(ApiError, ReplicationTimeoutError):
    """The call's deadline ran out, or (``ack="replicated"``) too few peers acknowledged in time: a write may
    then be applied all the same (DEADLINE_EXCEEDED)."""


class ResourceExhaustedError(ApiError, LimitError):
    """Over a limit of the node: too many watch streams, a watch cut off for not reading, a request too
    large (RESOURCE_EXHAUSTED)."""


class CancelledError(ApiError):
    """The call was cancelled (CANCELLED)."""


class UnimplementedError(ApiError):
    """The node does not have this method: it runs an older version (UNIMPLEMENTED)."""


class InternalError(ApiError):
    """The node failed (INTERNAL, UNKNOWN, DATA_LOSS ...): its log says why."""


_BY_CODE: Final[dict[grpc.StatusCode, type[ApiError]]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.ALREADY_EXISTS: ConflictError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}

_HINTS: Final[dict[grpc.StatusCode, str]] = {
    grpc.StatusCode.UNAVAILABLE: "is the node running, and is this its API address (listen.api)?",
    grpc.StatusCode.UNAUTHENTICATED: "check the token (--token / DRSDTP_TOKEN) or the client certificate",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the node did not answer in time: is it overloaded or stopped?",
    grpc.StatusCode.UNIMPLEMENTED: "the node runs an older drsdtp without this method",
}


def from_rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError, method: str, target: str) -> ApiError:
    """The SDK error for a failed call: its class from the status, the node's message, the ``drsdtp-*``
    trailers, and for a failure to reach the node a hint of what to check."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    raw = exc.trailing_metadata() or ()
    trailers = {k: v for k, v in raw if k.startswith("drsdtp-") and isinstance(v, str)}
    cls = _BY_CODE.get(code, InternalError)
    what = details.removeprefix(f"{method}: ") or "no answer"
    hint = f" ({_HINTS[code]})" if code in _HINTS else ""
    message = f"{method} on {target}: {code.name}: {what}{hint}"
    return cls(message, code=code, method=method, target=target, trailers=trailers)
