"""Declared kernel parameters: defaults merged with what a model declares, checked by name."""

from __future__ import annotations

import math
from collections.abc import Mapping

from drsdtp.errors import ConfigError

__all__ = ["merge_params"]


def merge_params(
    defaults: Mapping[str, float], given: Mapping[str, float] | None, *, positive: tuple[str, ...] = ()
) -> dict[str, float]:
    """``defaults`` overridden by ``given``; an unknown name (with a did-you-mean), a non-finite value or a
    non-positive one among ``positive`` is a :class:`ConfigError` keyed ``params.<name>``."""
    merged = dict(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            import difflib  # here: only a refused name needs it (idle RSS, issue 13)

            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"params.{key}", f"unknown parameter{hint}; expected one of {', '.join(defaults)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"params.{key}", f"expected a finite number, got {value!r}")
        if key in positive and value <= 0:
            raise ConfigError(f"params.{key}", f"must be > 0, got {value}")
        merged[key] = float(value)
    return merged
