"""Who is calling: the identity the services act for, the audit trail records and authorization checks.

The guard (:mod:`drsdtp.api.guard`) identifies the caller of each call (:mod:`drsdtp.api.auth`) and hands it
to the services through a context variable, so a method's signature stays (request) -> reply for every face.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from drsdtp.config import ApiRole

__all__ = ["ANONYMOUS", "Caller", "current_caller", "set_caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """``identity``: ``token:<name>``, ``jwt:<subject>``, certificate names (``tls:a,b``), else the peer
    address; ``authenticated``: whether ``identity`` was proven (a token, a JWT, a client certificate);
    ``role`` and ``scopes`` (twin id globs): what :mod:`drsdtp.api.auth` lets it do."""

    identity: str
    authenticated: bool = False
    role: ApiRole = "admin"
    scopes: tuple[str, ...] = ("*",)
    rate_per_s: float | None = None  # its own rate limit (None: the node's api.rate_per_s)

    def actor(self, stated: str) -> str:
        """Who the audit trail names: the proven identity, else what the caller states ("anonymous")."""
        if self.authenticated:
            return self.identity if not stated or stated == self.identity else f"{self.identity} as {stated}"
        return stated or "anonymous"


ANONYMOUS = Caller("anonymous")

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("drsdtp_api_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the request being served (ANONYMOUS outside one)."""
    return _current.get()


def set_caller(caller: Caller) -> contextvars.Token[Caller]:
    return _current.set(caller)
