"""Field values as JSON (for the audit trail and snapshot listings), without losing their type.

JSON keeps ``int``, ``float`` (``3`` vs ``3.0``), ``bool`` and ``str`` apart by itself; bytes, sets and the
values of a desired (multi-value) field need a tag: ``{"$bytes": base64}``, ``{"$set": [sorted elements]}``
and ``{"$desired": [values in write order]}``. The engine refuses NaN and infinities, so every float is valid
JSON.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["FieldValue", "Value", "from_json", "same_value", "to_json"]

Value = float | int | bool | str | bytes
FieldValue = float | int | bool | str | bytes | frozenset[str] | tuple[Value, ...]


def to_json(value: FieldValue) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, frozenset):
        return {"$set": sorted(value)}
    if isinstance(value, tuple):
        return {"$desired": [to_json(v) for v in value]}
    return value


def from_json(raw: Any) -> FieldValue:
    if isinstance(raw, dict):
        if "$bytes" in raw:
            return base64.b64decode(raw["$bytes"])
        if "$set" in raw:
            return frozenset(str(e) for e in raw["$set"])
        if "$desired" in raw:
            return tuple(_value(from_json(v)) for v in raw["$desired"])
        raise ValueError(f"not a field value: {raw!r}")
    if isinstance(raw, bool | int | float | str):
        return raw
    raise ValueError(f"not a field value: {raw!r}")


def _value(v: FieldValue) -> Value:
    if isinstance(v, frozenset | tuple):
        raise ValueError(f"not a single value: {v!r}")
    return v


def same_value(a: FieldValue | None, b: FieldValue | None) -> bool:
    """Equal value of the same type (``True`` is not ``1``, ``3`` is not ``3.0``), desired values too."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
