"""Twin scopes of a caller: twin ids, or prefixes ending in ``*`` (``line1/*``, ``*``); validated by
:func:`drsdtp.config.scope_problem`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["covers_prefix", "covers_twin"]


def covers_twin(scopes: Sequence[str], twin: str) -> bool:
    return any(twin.startswith(s[:-1]) if s.endswith("*") else twin == s for s in scopes)


def covers_prefix(scopes: Sequence[str], prefix: str) -> bool:
    """Whether every twin id starting with ``prefix`` is in a scope (only a prefix scope can cover them)."""
    return any(s.endswith("*") and prefix.startswith(s[:-1]) for s in scopes)
