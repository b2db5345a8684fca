"""Sparkplug B, command side: an actuator's write becomes a DCMD (device metric) or NCMD (edge-node metric).

Settings (an actuator whose adapter is an MQTT adapter with a ``payload = "sparkplug_b"`` topic rule)::

    [actuators.write]
    payload = "sparkplug_b"
    metric = "Setpoint"     # the metric to write (default: the actuator's field)
    qos = 0                 # Sparkplug commands are QoS 0 (the specification's rule); 1 waits for the PUBACK

The actuator's twin names the target as the host side names it (:mod:`drsdtp.adapters.sparkplug`):
``<group>/<edge node>`` for an edge node's metric, ``<group>/<edge node>/<device>`` for a device's. The
command carries the metric by name (and by the alias its birth declared), typed as the birth declared it,
with a timestamp. Sparkplug has no command acknowledgement, so the outcome is ``SENT``: the device's
DDATA/NDATA echo of the metric is what converges the command (an echo is a reported value, never a new
command; our own DCMD, seen again on the group's subscription, is ignored by the decoder).

Refused before anything is sent (``REJECTED``, final): a twin that is not born (no birth since this node
started), dead (NDEATH/DDEATH), a metric its birth did not declare, a datatype we cannot write, or a value
that does not fit the type (an Int8 of 300, a fraction for an integer, a string for a Double ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from drsdtp.adapters.settings import Table
from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb

__all__ = ["CommandRefused", "SparkplugWriteTarget", "command_message", "encode_value", "parse_target"]

NAMESPACE: Final = "spBv1.0"  # the topic namespace of Sparkplug B (read and write sides, and ours out)
REBIRTH_METRIC: Final = "Node Control/Rebirth"  # the NCMD metric that asks an edge node to be born again
_INT_RANGES: Final[dict[int, tuple[int, int]]] = {
    spb.Int8: (-(2**7), 2**7 - 1),
    spb.Int16: (-(2**15), 2**15 - 1),
    spb.Int32: (-(2**31), 2**31 - 1),
    spb.Int64: (-(2**63), 2**63 - 1),
    spb.UInt8: (0, 2**8 - 1),
    spb.UInt16: (0, 2**16 - 1),
    spb.UInt32: (0, 2**32 - 1),
    spb.UInt64: (0, 2**64 - 1),
}
_LONG: Final = frozenset({spb.Int64, spb.UInt64})  # carried in long_value; the others in int_value
_FLOAT_MAX: Final = 3.4028234663852886e38
_STRINGS: Final = frozenset({spb.String, spb.Text})

Value = float | int | bool | str | bytes


class CommandRefused(Exception):
    """The write cannot be sent; the message is the reason (becomes the command's REJECTED reason)."""


@dataclass(frozen=True, slots=True)
class SparkplugWriteTarget:
    metric: str | None  # None: the command's field
    qos: int

    @property
    def label(self) -> str:
        return f"Sparkplug metric {self.metric}" if self.metric else "Sparkplug DCMD/NCMD"


def parse_target(raw: Mapping[str, Any], key: str) -> SparkplugWriteTarget:
    t = Table(raw, key)
    t.choice("payload", ("sparkplug_b",))
    metric = t.opt_str("metric")
    if metric is not None and not metric:
        raise t.error("metric", "must not be empty")
    target = SparkplugWriteTarget(metric=metric, qos=t.get_int("qos", 0, lo=0, hi=1))
    t.done()
    return target


@dataclass(frozen=True, slots=True)
class Declared:
    """What a birth declared about a metric the host may command."""

    datatype: int
    alias: int | None


def split_twin(twin: str) -> tuple[str, str, str | None]:
    """(group, edge node, device or None) of a Sparkplug twin name."""
    parts = twin.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise CommandRefused(
            f"twin {twin!r} is not a Sparkplug twin (<group>/<edge node> or <group>/<edge node>/<device>)"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def encode_value(out: spb.Payload.Metric, datatype: int, value: Value | None) -> None:
    """Sets ``out``'s value as ``datatype`` requires; raises CommandRefused naming why it does not fit."""
    kind = _type_name(datatype)
    if value is None:
        raise CommandRefused(f"a {kind} metric needs a value")
    if datatype in _INT_RANGES:
        lo, hi = _INT_RANGES[datatype]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandRefused(f"{value!r} is not a number for the {kind} metric")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise CommandRefused(f"{value!r} is not a whole number for the {kind} metric")
        number = int(value)
        if not lo <= number <= hi:
            raise CommandRefused(f"{value!r} does not fit {kind} ({lo}..{hi})")
        # Signed values travel as their two's complement in the unsigned field (the specification's rule).
        if datatype in _LONG:
            out.long_value = number & (2**64 - 1)
        else:
            out.int_value = number & (2**32 - 1)
    elif datatype in (spb.Float, spb.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandRefused(f"{value!r} is not a number for the {kind} metric")
        number_f = float(value)
        if not math.isfinite(number_f) or (datatype == spb.Float and abs(number_f) > _FLOAT_MAX):
            raise CommandRefused(f"{value!r} does not fit {kind}")
        if datatype == spb.Float:
            out.float_value = number_f
        else:
            out.double_value = number_f
    elif datatype == spb.Boolean:
        if isinstance(value, bool):
            out.boolean_value = value
        elif isinstance(value, int | float) and value in (0, 1):
            out.boolean_value = bool(value)
        else:
            raise CommandRefused(f"{value!r} is not a Boolean (true/false or 0/1)")
    elif datatype in _STRINGS:
        if not isinstance(value, str):
            raise CommandRefused(f"{value!r} is not text for the {kind} metric")
        out.string_value = value
    else:
        raise CommandRefused(f"a {kind} metric cannot be written")
    out.datatype = datatype


def command_message(
    twin: str, metric: str, declared: Declared, value: Value | None, now_ms: int | None = None
) -> tuple[str, bytes]:
    """(topic, payload) of the DCMD/NCMD that writes ``value`` to ``metric`` of ``twin``."""
    group, edge, device = split_twin(twin)
    stamp = now_ms if now_ms is not None else int(time.time() * 1000)
    msg = spb.Payload(timestamp=stamp)
    m = msg.metrics.add(name=metric, timestamp=stamp)
    if declared.alias is not None:
        m.alias = declared.alias
    encode_value(m, declared.datatype, value)
    if device is None:
        return f"{NAMESPACE}/{group}/NCMD/{edge}", msg.SerializeToString()
    return f"{NAMESPACE}/{group}/DCMD/{edge}/{device}", msg.SerializeToString()


def _type_name(datatype: int) -> str:
    try:
        return str(spb.DataType.Name(datatype))  # type: ignore[arg-type]  # an int off the wire, checked here
    except ValueError:
        return f"datatype {datatype}"
