"""The outcome of identifying or authorizing a call, with what a face answers when it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = ["Decision", "Refusal", "Status"]

Status = Literal["ok", "unauthenticated", "permission_denied", "resource_exhausted"]
# Why, as counted in drsdtp_api_auth_refusals{reason}: a bounded set of labels.
Refusal = Literal["", "credentials", "issuer", "method", "scope", "rate"]  # issuer: its keys unreachable


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``, else ``status`` (UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED, HTTP 401 /
    403 / 429) and ``reason``: a sentence naming what was missing, for the caller and the audit trail;
    ``twin``: the twin outside the caller's scopes (a ``scope`` refusal), which the audit record names."""

    status: Status
    reason: str = ""
    kind: Refusal = ""
    twin: str = ""

    OK: ClassVar[Decision]

    @property
    def allowed(self) -> bool:
        return self.status == "ok"

    @property
    def http_status(self) -> int:
        return {"ok": 200, "unauthenticated": 401, "permission_denied": 403, "resource_exhausted": 429}[
            self.status
        ]


Decision.OK = Decision("ok")
