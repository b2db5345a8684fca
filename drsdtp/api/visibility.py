"""What the caller of the request being served may see: its twin scopes as a filter on twin ids, for the
methods that answer with many twins (listings, queries, streams). A scoped caller gets only the twins in
its scopes, counted as such in totals and limits, instead of a refusal; a method that names a twin is
refused outside the scopes before it runs (:mod:`drsdtp.api.auth`)."""

from __future__ import annotations

from drsdtp.api.auth.scopes import TwinFilter, scope_filter
from drsdtp.api.caller import current_caller

__all__ = ["TwinFilter", "in_scope"]


def in_scope() -> TwinFilter | None:
    """Whether a twin id is in the current caller's scopes; None when it sees every twin."""
    return scope_filter(current_caller().scopes)
