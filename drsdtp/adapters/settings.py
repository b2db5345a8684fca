"""Typed, key-path-aware reading of one raw TOML table into adapter settings.

Every error is a :class:`drsdtp.errors.ConfigError` whose key is the full path (``adapters[0].topics[1].qos``)
and whose reason says what was expected. Unknown keys are errors too (a typo like ``sampling_intervall``
must not be silently ignored), reported by :meth:`Table.done`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from drsdtp.errors import ConfigError

__all__ = ["Table"]

E = TypeVar("E", bound=str)
_MISSING: Any = object()


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class Table:
    """A view of one TOML table that remembers which keys were read."""

    def __init__(self, raw: Mapping[str, Any], key: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(key, f"expected a table, got {_type_name(raw)}")
        self.raw = raw
        self.key = key
        self._seen: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.path(name), reason)

    def has(self, name: str) -> bool:
        return name in self.raw

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self.raw:
            return self.raw[name]
        if default is _MISSING:
            raise self.error(name, "is required")
        return default

    def ignore(self, *names: str) -> None:
        """Mark keys as consumed elsewhere (e.g. ``type`` read by the registry)."""
        self._seen.update(names)

    def get_str(self, name: str, default: Any = _MISSING, *, allow_empty: bool = False) -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_type_name(value)}")
        if not value and not allow_empty:
            raise self.error(name, "must not be empty")
        return value

    def opt_str(self, name: str) -> str | None:
        if name not in self.raw:
            self._seen.add(name)
            return None
        return self.get_str(name)

    def choice(self, name: str, choices: Sequence[E], default: Any = _MISSING) -> E:
        value = self.get_str(name, default)
        for c in choices:
            if value == c:
                return c
        raise self.error(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")

    def get_int(
        self, name: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {_type_name(value)}")
        if lo is not None and value < lo:
            raise self.error(name, f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise self.error(name, f"must be <= {hi}, got {value}")
        return value

    def get_float(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        lo: float | None = None,
        hi: float | None = None,
        lo_exclusive: bool = False,
    ) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {_type_name(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(name, "must be a finite number")
        if lo is not None and (value < lo or (lo_exclusive and value == lo)):
            raise self.error(name, f"must be {'>' if lo_exclusive else '>='} {lo}, got {value}")
        if hi is not None and value > hi:
            raise self.error(name, f"must be <= {hi}, got {value}")
        return value

    def opt_float(
        self, name: str, *, lo: float | None = None, hi: float | None = None, lo_exclusive: bool = False
    ) -> float | None:
        if name not in self.raw:
            self._seen.add(name)
            return None
        return self.get_float(name, lo=lo, hi=hi, lo_exclusive=lo_exclusive)

    def get_bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_type_name(value)}")
        return value

    def str_list(self, name: str, default: Any = _MISSING) -> list[str]:
        value = self._get(name, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, "expected an array of non-empty strings")
        return list(value)

    def str_map(self, name: str, default: Any = _MISSING) -> dict[str, str]:
        value = self._get(name, default)
        if not isinstance(value, Mapping):
            raise self.error(name, f"expected a table of strings, got {_type_name(value)}")
        for k, v in value.items():
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{self.path(name)}.{k}", "expected a non-empty string")
        return dict(value)

    def table(self, name: str, *, required: bool = False) -> Table | None:
        value = self._get(name, _MISSING if required else None)
        if value is None:
            return None
        return Table(value, self.path(name))

    def tables(self, name: str, *, required: bool = False) -> list[Table]:
        value = self._get(name, _MISSING if required else [])
        if not isinstance(value, list):
            kind = _type_name(value)
            raise self.error(name, f"expected an array of tables ([[{self.path(name)}]]), got {kind}")
        if required and not value:
            raise self.error(name, "must list at least one entry")
        return [Table(v, f"{self.path(name)}[{i}]") for i, v in enumerate(value)]

    def secret(self, name: str) -> str | None:
        """``name`` inline or ``name_file`` (first line of a file, preferred: keeps secrets out of config)."""
        inline = self.opt_str(name)
        file_key = f"{name}_file"
        path = self.opt_str(file_key)
        if inline is not None and path is not None:
            raise self.error(file_key, f"set either {name} or {file_key}, not both")
        if path is None:
            return inline
        try:
            return Path(path).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise self.error(file_key, f"cannot read a secret from {path!r}: {exc}") from None

    def readable_file(self, name: str, default: Any = _MISSING) -> str | None:
        value = self._get(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(name, "expected a file path")
        if not Path(value).is_file():
            raise self.error(name, f"file {value!r} does not exist")
        return value

    def done(self) -> None:
        """Fail on keys nobody read: a misspelt option must not silently fall back to its default."""
        for name in self.raw:
            if name not in self._seen:
                import difflib  # here: only a refused name needs it (idle RSS, issue 13)

                hint = difflib.get_close_matches(name, sorted(self._seen), n=1)
                reason = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                raise self.error(name, reason)
