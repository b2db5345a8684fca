"""Twin scopes of a caller: twin ids, or prefixes ending in ``*`` (``line1/*``, ``*``); validated by
:func:`drsdtp.config.scope_problem`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["EVERY_TWIN", "TwinFilter", "covers_twin", "scope_filter"]

EVERY_TWIN = "*"

TwinFilter = Callable[[str], bool]


def covers_twin(scopes: Sequence[str], twin: str) -> bool:
    return any(twin.startswith(s[:-1]) if s.endswith("*") else twin == s for s in scopes)


def scope_filter(scopes: Sequence[str]) -> TwinFilter | None:
    """Whether a twin id is in ``scopes``; None when they cover every twin (nothing to filter)."""
    if EVERY_TWIN in scopes:
        return None
    exact = frozenset(s for s in scopes if not s.endswith("*"))
    prefixes = tuple(s[:-1] for s in scopes if s.endswith("*"))
    return lambda twin: twin in exact or twin.startswith(prefixes)
