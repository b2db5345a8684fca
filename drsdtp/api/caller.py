"""Who is calling: the identity the services act for and the audit trail records.

The gRPC face resolves a :class:`Caller` per call (:func:`caller_from_context`) and hands it to the services
through a context variable, so a method's signature stays (request) -> reply for every face. The
authorization layer replaces the resolver (``ApiServer(resolve_caller=...)``) and may refuse a call there.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass

import grpc.aio

from drsdtp.api.watch_limits import caller_of
from drsdtp.gossip.tls import peer_names

__all__ = ["ANONYMOUS", "Caller", "CallerResolver", "caller_from_context", "current_caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """``identity``: certificate names (``tls:a,b``) when authenticated, else the peer address;
    ``authenticated``: whether ``identity`` was proven (a client certificate the node verified)."""

    identity: str
    authenticated: bool = False

    def actor(self, stated: str) -> str:
        """Who the audit trail names: the proven identity, else what the caller states ("anonymous")."""
        if self.authenticated:
            return self.identity if not stated or stated == self.identity else f"{self.identity} as {stated}"
        return stated or "anonymous"


ANONYMOUS = Caller("anonymous")
CallerResolver = Callable[[grpc.aio.ServicerContext], Caller]

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("drsdtp_api_caller", default=ANONYMOUS)


def caller_from_context(context: grpc.aio.ServicerContext) -> Caller:
    """The default resolver: a verified client certificate's names, else the peer address."""
    auth = context.auth_context()
    return Caller(caller_of(context.peer(), auth), authenticated=bool(peer_names(auth)))


def current_caller() -> Caller:
    """The caller of the request being served (ANONYMOUS outside one)."""
    return _current.get()


def set_caller(caller: Caller) -> contextvars.Token[Caller]:
    return _current.set(caller)
