"""Protobuf's wire format, written by hand where joining cached bytes beats building messages: varints,
length prefixes and tags read from the generated descriptors (so a renumbered field in proto/ changes them).

Shared by the SDK (``drsdtp.client.writes``: a request from each distinct op's bytes) and the node
(``drsdtp.api.services.watch``: a message of many changes from each change's cached bytes). It lives at the
package's top level beside ``drsdtp.errors``, the other module both sides use and the SDK's wheel ships:
``drsdtp.wire`` is generated only (``make proto`` rewrites it), the SDK must not import the node, and the
node importing ``drsdtp.client`` would load the whole SDK. Standard library only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FIXED64", "LENGTH", "VARINT", "length_prefixed", "tag", "varint"]

# Wire types (the low 3 bits of a tag).
VARINT, FIXED64, LENGTH = 0, 1, 2


def varint(n: int) -> bytes:
    """``n`` (≥ 0) as a base-128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(message: Any, field: str, wire_type: int) -> bytes:
    """The tag of ``message``'s field ``field`` (a generated message class), from its descriptor."""
    return varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | wire_type)


def length_prefixed(data: bytes) -> bytes:
    """``data`` with its length in front, as a length-delimited field's value."""
    return varint(len(data)) + data
