"""Twin values as KubeEdge's text, and KubeEdge's desired text as typed values.

KubeEdge carries every twin value as a string (``TwinProperty.value``) with a metadata map; the node's fields
are typed. Reported: a float as Python writes it (shortest round-trip text), an integer or counter in
decimal, a flag as ``true``/``false``, a set as its sorted elements joined by ``,``; bytes are not reported.
A desired field that holds concurrent intents (a conflict the node keeps, see deploy/kubeedge/README.md) is
reported as every value joined by ``,`` with ``metadata.conflict`` = how many, so the cloud sees it.
Desired text is read by the property's DeviceModel type; with no known type as a number, else as text.
"""

from __future__ import annotations

import math
from typing import Final

from drsdtp.errors import InvalidValueError
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2 as dmi
from drsdtp.wire.v1 import api_pb2

__all__ = ["desired_value", "property_of", "text_of"]

INTEGER_TYPES: Final = frozenset({"INT", "INTEGER"})
FLOAT_TYPES: Final = frozenset({"FLOAT", "DOUBLE"})
MAX_TEXT: Final = 4096  # a desired value's text


def text_of(value: api_pb2.FieldValue) -> tuple[str, str] | None:
    """``(text, KubeEdge type)`` of a scalar field value; None for bytes or no value."""
    kind = value.WhichOneof("value")
    if kind == "f64":
        return repr(value.f64), "double"
    if kind in ("i64", "counter"):
        return str(getattr(value, kind)), "int"
    if kind == "flag":
        return ("true" if value.flag else "false"), "boolean"
    if kind == "text":
        return value.text, "string"
    if kind == "set":
        return ",".join(sorted(value.set.elements)), "string"
    return None


def property_of(value: api_pb2.FieldValue, stamp_ms: int) -> dmi.TwinProperty | None:
    """A field's value as a TwinProperty (``metadata``: ``type`` and ``timestamp`` in ms, KubeEdge's keys)."""
    if value.WhichOneof("value") == "desired":
        shown = [t for t in (text_of(v) for v in value.desired.values) if t is not None]
        if not shown:
            return None
        metadata = {"type": shown[0][1], "timestamp": str(stamp_ms)}
        if len(shown) > 1:
            metadata["conflict"] = str(len(shown))
        return dmi.TwinProperty(value=",".join(t for t, _ in shown), metadata=metadata)
    found = text_of(value)
    if found is None:
        return None
    return dmi.TwinProperty(value=found[0], metadata={"type": found[1], "timestamp": str(stamp_ms)})


def desired_value(text: str, kind: str, where: str) -> api_pb2.FieldValue:
    """The cloud's desired ``text`` for a property of type ``kind`` ("" when unknown) as a typed value."""
    if len(text) > MAX_TEXT:
        raise InvalidValueError(f"{where}: longer than {MAX_TEXT} characters")
    kind = kind.upper()
    if kind == "BOOLEAN":
        if text not in ("true", "false"):
            raise InvalidValueError(f"{where}: {text!r} is not a BOOLEAN (true or false)")
        return api_pb2.FieldValue(flag=text == "true")
    if kind == "STRING":
        return api_pb2.FieldValue(text=text)
    if kind in INTEGER_TYPES:
        try:
            return api_pb2.FieldValue(i64=int(text, 10))
        except ValueError:
            raise InvalidValueError(f"{where}: {text!r} is not an {kind}") from None
    try:
        number = float(text)
    except ValueError:
        if kind in FLOAT_TYPES:
            raise InvalidValueError(f"{where}: {text!r} is not a {kind}") from None
        return api_pb2.FieldValue(text=text)  # untyped and not a number: text
    if not math.isfinite(number):
        raise InvalidValueError(f"{where}: {text!r} is not a finite number")
    return api_pb2.FieldValue(f64=number)
