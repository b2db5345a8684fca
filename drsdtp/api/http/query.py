"""Request messages from a query string (GET on reads and Watch): each parameter names a top-level scalar
field of the request (its proto name or JSON name), a repeated field by repeating the parameter
(``?twin_ids=a&twin_ids=b``). Anything else is INVALID_ARGUMENT naming the parameter."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from drsdtp.api.http.errors import ApiHttpError

__all__ = ["message_from_query"]

_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _convert(field: FieldDescriptor, text: str) -> Any:
    if field.type in _INTS:
        return int(text)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float(text)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _BOOLS[text.lower()]
    if field.enum_type is not None:
        value = field.enum_type.values_by_name.get(text)
        if value is None:
            raise ValueError(f"not one of {', '.join(v.name for v in field.enum_type.values)}")
        return value.number
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64decode(text, validate=True)
    return text


def message_from_query(method: str, message: Message, items: Iterable[tuple[str, str]]) -> Message:
    descriptor = message.DESCRIPTOR
    by_name: dict[str, Any] = {f.json_name: f for f in descriptor.fields}
    by_name.update((f.name, f) for f in descriptor.fields)
    for key, text in items:
        field = by_name.get(key)
        if field is None or field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            known = ", ".join(f.name for f in descriptor.fields if f.type != FieldDescriptor.TYPE_MESSAGE)
            raise ApiHttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method}: unknown query parameter {key!r} (known: {known or 'none'})",
                field=key,
            )
        try:
            value = _convert(field, text)
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ApiHttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method}: query parameter {key!r}: {text!r} is not a valid value ({exc})",
                field=field.name,
            ) from None
    return message
