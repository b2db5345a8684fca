"""Errors of the HTTP/JSON face: the gRPC status code a call ends with (the one mapping,
:func:`drsdtp.api.errors.status_for`, chooses it for the project's errors) as a JSON body, under the HTTP
status of Google's published gRPC-to-HTTP mapping, so a client of either face sees the same code:

    {"code": "NOT_FOUND", "message": "GetTwin: ...", "field": "twin_id", "details": {"version": "..."}}

``field`` (the request field that was wrong) and ``details`` appear when the error names them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
from aiohttp import web

from drsdtp.api.errors import status_for
from drsdtp.errors import DrsdtpError

__all__ = ["HTTP_STATUS", "ApiHttpError", "error_response", "from_drsdtp"]

HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ApiHttpError(Exception):
    """A call's end with a gRPC code; ``http_status`` overrides the mapped status where HTTP has a more
    precise one (413 for a body over the bound)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field: str = "",
        details: Mapping[str, str] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = dict(details or {})
        self.http_status = http_status or HTTP_STATUS[code]


def _text(exc: DrsdtpError) -> str:
    # A KeyError subclass (UnknownTwinError) shows its message quoted: show it as written.
    return str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)


def from_drsdtp(method: str, exc: DrsdtpError) -> ApiHttpError:
    """The error the gRPC face would end ``method`` with for ``exc``, same code, message and field."""
    return ApiHttpError(
        status_for(exc),
        f"{method}: {_text(exc)}",
        field=getattr(exc, "field", ""),
        details=getattr(exc, "details", {}),
    )


def error_response(error: ApiHttpError) -> web.Response:
    body: dict[str, object] = {"code": error.code.name, "message": error.message}
    if error.field:
        body["field"] = error.field
    if error.details:
        body["details"] = error.details
    headers = {"WWW-Authenticate": "Bearer"} if error.code == grpc.StatusCode.UNAUTHENTICATED else None
    return web.Response(
        status=error.http_status,
        text=json.dumps(body),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )
