"""Field values as JSON (for the audit trail and snapshot listings), without losing their type.

JSON keeps ``int``, ``float`` (``3`` vs ``3.0``), ``bool`` and ``str`` apart by itself; bytes and sets need a
tag: ``{"$bytes": base64}`` and ``{"$set": [sorted elements]}``. The engine refuses NaN and infinities, so
every float is valid JSON.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["FieldValue", "Value", "from_json", "same_value", "to_json"]

Value = float | int | bool | str | bytes
FieldValue = float | int | bool | str | bytes | frozenset[str]


def to_json(value: FieldValue) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, frozenset):
        return {"$set": sorted(value)}
    return value


def from_json(raw: Any) -> FieldValue:
    if isinstance(raw, dict):
        if "$bytes" in raw:
            return base64.b64decode(raw["$bytes"])
        if "$set" in raw:
            return frozenset(str(e) for e in raw["$set"])
        raise ValueError(f"not a field value: {raw!r}")
    if isinstance(raw, bool | int | float | str):
        return raw
    raise ValueError(f"not a field value: {raw!r}")


def same_value(a: FieldValue | None, b: FieldValue | None) -> bool:
    """Equal value of the same type (``True`` is not ``1``, ``3`` is not ``3.0``)."""
    return type(a) is type(b) and a == b
