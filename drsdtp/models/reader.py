"""Typed reading of one raw TOML table of a model declaration; every error names its full key."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from drsdtp.errors import ConfigError

__all__ = ["Reader", "did_you_mean"]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    import difflib  # here: only a refused name needs it (idle RSS, issue 13)

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return "a table" if isinstance(value, Mapping) else names.get(type(value), type(value).__name__)


class Reader:
    """A view of one table that checks types and, in :meth:`done`, refuses keys nobody read."""

    def __init__(self, raw: object, key: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(key, f"expected a table, got {_kind(raw)}")
        self.raw: Mapping[str, Any] = raw
        self.key = key
        self._seen: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}"

    def has(self, name: str) -> bool:
        return name in self.raw

    def _take(self, name: str) -> Any:
        self._seen.add(name)
        return self.raw[name]

    def string(self, name: str, default: str | None = None) -> str | None:
        if name not in self.raw:
            return default
        value = self._take(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(self.path(name), f"expected a non-empty string, got {_kind(value)}")
        return value

    def version(self, name: str) -> str | None:
        """A version: a string or an integer (``version = 2`` is ``"2"``)."""
        if name not in self.raw:
            return None
        value = self._take(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.path(name), f"expected a string or an integer, got {_kind(value)}")
        return value.strip()

    def number(self, name: str) -> float | None:
        if name not in self.raw:
            return None
        value = self._take(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.path(name), f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise ConfigError(self.path(name), f"must be a finite number, got {value}")
        return float(value)

    def names(self, name: str) -> tuple[str, ...] | None:
        """A string or an array of strings."""
        if name not in self.raw:
            return None
        value = self._take(name)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise ConfigError(
                self.path(name), f"expected a string or an array of strings, got {_kind(value)}"
            )
        return tuple(items)

    def choice(self, name: str, choices: Sequence[str]) -> str | None:
        value = self.string(name)
        if value is not None and value not in choices:
            raise ConfigError(
                self.path(name),
                f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}",
            )
        return value

    def table(self, name: str) -> Reader | None:
        if name not in self.raw:
            return None
        return Reader(self._take(name), self.path(name))

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every key as consumed (a table of tables, or of numbers, read by the caller)."""
        self._seen.update(self.raw)
        return self.raw.items()

    def done(self, known: Iterable[str]) -> None:
        """Refuse keys that were not read, naming the closest known one."""
        unknown = [k for k in self.raw if k not in self._seen]
        if unknown:
            known = list(known)
            raise ConfigError(
                self.path(unknown[0]),
                f"unknown key{did_you_mean(unknown[0], known)}; known keys here: {', '.join(known)}",
            )
