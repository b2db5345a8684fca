"""WhoAmI: the caller as the node identified it (the authorization layer set it for this call)."""

from __future__ import annotations

from drsdtp.api.caller import current_caller
from drsdtp.wire.v1 import api_pb2

__all__ = ["who_am_i"]


async def who_am_i(request: api_pb2.WhoAmIRequest) -> api_pb2.WhoAmIReply:
    caller = current_caller()
    return api_pb2.WhoAmIReply(
        identity=caller.identity,
        authenticated=caller.authenticated,
        role=caller.role,
        scopes=list(caller.scopes),
    )
