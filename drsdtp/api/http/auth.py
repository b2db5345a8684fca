"""Authorization on the HTTP face: the same three steps as the gRPC guard (:mod:`drsdtp.api.auth`), from what
HTTP carries. The credential is the ``Authorization: Bearer <token>`` header, or, for a browser's
``EventSource`` (which cannot set headers), an ``access_token`` query parameter. A refusal is the JSON
error with the same code and message as on gRPC (401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 429), counted
and audited by the authority like any other.
"""

from __future__ import annotations

from typing import Any

import grpc
from aiohttp import web

from drsdtp.api.auth import Access, Authority, Credentials, Decision
from drsdtp.api.caller import Caller, set_caller
from drsdtp.api.http.errors import ApiHttpError
from drsdtp.api.watch_limits import caller_of

__all__ = ["TOKEN_PARAMETER", "HttpAuthorizer", "grpc_peer"]

TOKEN_PARAMETER = "access_token"
_CODES = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def grpc_peer(request: web.Request) -> str:
    """The client's address as gRPC writes a peer (``ipv4:127.0.0.1:51234``, ``ipv6:[::1]:51234``)."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if not peer:
        return "unknown:"
    host, port = str(peer[0]), int(peer[1])
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class HttpAuthorizer:
    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    async def authorize(self, request: web.Request, method: str, message: Any) -> Caller:
        """The caller, set for the services (this request's task); raises the refusal as an error."""
        peer = grpc_peer(request)
        authorization = request.headers.get("Authorization")
        token = request.query.get(TOKEN_PARAMETER)
        if authorization is None and token:
            authorization = f"Bearer {token}"
        caller = await self.authority.identify(Credentials(peer, frozenset(), authorization))
        if isinstance(caller, Decision):
            await self._deny(method, caller, caller_of(peer, {}), Access((method,)))
            raise AssertionError("unreachable: _deny raises")
        access = self.authority.access(method, message)
        decision = self.authority.check(caller, access)
        if not decision.allowed:
            await self._deny(method, decision, caller.identity, access)
        set_caller(caller)
        return caller

    async def _deny(self, method: str, decision: Decision, actor: str, access: Access) -> None:
        await self.authority.refused(actor, method, decision, access.twins)
        raise ApiHttpError(_CODES[decision.status], f"{method}: {decision.reason}")
