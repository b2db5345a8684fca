"""Sparkplug B, host side: an MQTT payload (``payload = "sparkplug_b"``) that reads a Sparkplug group.

Settings (an MQTT adapter's topic rule)::

    [[adapters.topics]]
    template = "spBv1.0/plant-a/#"    # one group (or spBv1.0/# for all)
    qos = 0                           # Sparkplug data is QoS 0; births and deaths are what make it whole
    payload = "sparkplug_b"
    max_metrics = 100000              # aliases remembered over all edge nodes (bounded state)

Twins: an edge node's own metrics go to twin ``<group>/<edge node>``, a device's to
``<group>/<edge node>/<device>``; a metric's name is the field. What the decoder keeps per edge node (its
``bdSeq``, the last ``seq``, the aliases its births declared) lives in memory and is
rebuilt from births: after a node restart it asks for them (below).

* NBIRTH / DBIRTH define the metrics (name, alias, datatype) and carry their current values;
* NDATA / DDATA update them, by alias or by name;
* NDEATH (whose ``bdSeq`` matches the birth's; an older session's death is ignored) and DDEATH mark every
  metric of the node (and its devices) or of the device at once: a BAD reading without a value (the field's
  health sees it, its last value stays);
* a ``seq`` gap, data from an edge node or device not born (since this node started), or an unknown alias
  is counted and triggers a rebirth request: an NCMD with ``Node Control/Rebirth = true`` published by the
  adapter, at most one per edge node every ``REBIRTH_INTERVAL_S``.

Values: integer types, Float, Double and Boolean (as 0/1) become readings; other types (strings, bytes,
datasets, templates ...) are counted as unusable items. ``is_null`` is a BAD reading without a value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.payloads import PayloadError, PayloadLimits
from drsdtp.adapters.sparkplug_write import NAMESPACE, REBIRTH_METRIC, CommandRefused, Declared, split_twin
from drsdtp.wire.sparkplug import sparkplug_b_pb2 as spb

__all__ = ["REBIRTH_INTERVAL_S", "SparkplugDecoder", "rebirth_request"]

REBIRTH_INTERVAL_S: Final = 5.0
_BD_SEQ: Final = "bdSeq"
_NUMERIC: Final = frozenset(
    {
        spb.Int8, spb.Int16, spb.Int32, spb.Int64, spb.UInt8, spb.UInt16, spb.UInt32, spb.UInt64,
        spb.Float, spb.Double, spb.Boolean,
    }
)  # fmt: skip
_SIGNED_BITS: Final[dict[int, int]] = {spb.Int8: 8, spb.Int16: 16, spb.Int32: 32, spb.Int64: 64}


@dataclass(slots=True)
class _Metric:
    twin: str
    field: str
    datatype: int
    alias: int | None = None


@dataclass(slots=True)
class _EdgeNode:
    bd_seq: int | None = None
    seq: int | None = None  # the last seq seen
    born: bool = False
    devices: set[str] = field(default_factory=set)  # born devices
    aliases: dict[int, _Metric] = field(default_factory=dict)
    names: dict[tuple[str, str], _Metric] = field(default_factory=dict)  # (twin, field) -> metric


@dataclass(slots=True)
class SparkplugStats:
    births: int = 0
    deaths: int = 0
    seq_gaps: int = 0
    unknown_aliases: int = 0
    not_born: int = 0  # data from an edge node or device without a birth
    rebirths_requested: int = 0
    ignored: int = 0  # NCMD, DCMD, STATE: not data


class SparkplugDecoder:
    """One MQTT adapter's Sparkplug host state. Not thread-safe (the adapter decodes on its event loop)."""

    def __init__(
        self, limits: PayloadLimits, max_metrics: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.max_metrics = max_metrics
        self.stats = SparkplugStats()
        self._nodes: dict[tuple[str, str], _EdgeNode] = {}
        self._metrics = 0
        self._clock = clock
        self._rebirth_at: dict[tuple[str, str], float] = {}
        self._wanted: dict[tuple[str, str], str] = {}  # (group, edge) -> why

    # --- the PayloadDecoder protocol: only topic-aware decoding makes sense here ---------------------------

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        raise PayloadError("bad topic", "a Sparkplug B payload is decoded with its topic")

    def decode_message(self, topic: str, payload: bytes, received_ms: int, out: SourceBatch) -> int:
        """Append the readings of one Sparkplug message; returns the unusable metrics in it."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != NAMESPACE:
            raise PayloadError("bad topic", f"topic {topic!r} is not in the {NAMESPACE} namespace")
        if parts[1] == "STATE" or parts[2] in ("NCMD", "DCMD"):
            self.stats.ignored += 1
            return 0
        if len(parts) not in (4, 5):
            raise PayloadError("bad topic", f"topic {topic!r}: expected {NAMESPACE}/group/TYPE/node[/device]")
        group, kind, edge = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        if (device is None) != kind.startswith("N"):
            raise PayloadError(
                "bad topic", f"topic {topic!r}: {kind} with{'out' if device is None else ''} a device"
            )
        self.limits.check_size(len(payload))
        msg = spb.Payload()
        try:
            msg.ParseFromString(payload)
        except Exception as exc:  # protobuf's DecodeError; anything else is the payload's too
            raise PayloadError("not sparkplug b", f"not a Sparkplug B payload: {exc}") from None
        key = (group, edge)
        node = self._nodes.get(key)
        stamp = int(msg.timestamp) if msg.HasField("timestamp") and msg.timestamp else received_ms
        if kind == "NBIRTH":
            return self._node_birth(key, msg, stamp, out)
        if kind == "NDEATH":
            self._node_death(key, node, msg, received_ms, out)
            return 0
        if node is None or not node.born:
            self.stats.not_born += 1
            self._want(key, f"{kind} before the edge node's birth")
            return len(msg.metrics)
        self._check_seq(key, node, msg)
        assert device is not None or kind == "NDATA"
        twin = f"{group}/{edge}" if device is None else f"{group}/{edge}/{device}"
        if kind == "DBIRTH":
            assert device is not None
            node.devices.add(device)
            self.stats.births += 1
            return self._metrics_of(node, twin, msg, stamp, out, birth=True)
        if kind == "DDEATH":
            assert device is not None
            node.devices.discard(device)
            self.stats.deaths += 1
            self._stale(node, lambda m: m.twin == twin, received_ms, out)
            return 0
        if kind in ("NDATA", "DDATA"):
            if device is not None and device not in node.devices:
                self.stats.not_born += 1
                self._want(key, f"DDATA from device {device!r} before its birth")
                return len(msg.metrics)
            return self._metrics_of(node, twin, msg, stamp, out, birth=False)
        raise PayloadError("bad topic", f"topic {topic!r}: unknown message type {kind!r}")

    # --- rebirth requests (the adapter publishes them) ------------------------------------------------------

    def take_rebirths(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of the NCMD rebirth requests due now; each edge node at most once per interval."""
        now = self._clock()
        due: list[tuple[str, bytes]] = []
        for key in list(self._wanted):
            if now < self._rebirth_at.get(key, float("-inf")):
                continue
            del self._wanted[key]
            self._rebirth_at[key] = now + REBIRTH_INTERVAL_S
            self.stats.rebirths_requested += 1
            due.append(rebirth_request(*key))
        if len(self._rebirth_at) > 4 * max(len(self._nodes), 1024):
            self._rebirth_at = {k: t for k, t in self._rebirth_at.items() if t > now}
        return due

    # --- the command side (drsdtp.adapters.sparkplug_write) ------------------------------------------------

    def knows(self, twin: str) -> bool:
        """Whether this decoder has seen the edge node of ``twin`` (born or dead)."""
        return tuple(twin.split("/")[:2]) in self._nodes

    def declared(self, twin: str, name: str) -> Declared:
        """What the birth of a live ``twin`` declared about metric ``name``; raises CommandRefused with the
        reason when the twin is unknown (not born since this node started), dead, or has no such metric."""
        group, edge, device = split_twin(twin)
        node = self._nodes.get((group, edge))
        if node is None:
            raise CommandRefused(f"edge node {group}/{edge} is unknown: no NBIRTH since this node started")
        if not node.born:
            raise CommandRefused(f"edge node {group}/{edge} is dead (NDEATH)")
        metric = node.names.get((twin, name))
        if device is not None and device not in node.devices:
            if metric is not None:
                raise CommandRefused(f"device {twin} is dead (DDEATH)")
            raise CommandRefused(f"device {twin} is unknown: no DBIRTH since its edge node's birth")
        if metric is None:
            raise CommandRefused(f"metric {name!r} is not in the birth of {twin}")
        return Declared(metric.datatype, metric.alias)

    # --- internals ----------------------------------------------------------------------------------------

    def _want(self, key: tuple[str, str], why: str) -> None:
        if len(self._wanted) < 65536:
            self._wanted.setdefault(key, why)

    def _check_seq(self, key: tuple[str, str], node: _EdgeNode, msg: spb.Payload) -> None:
        if not msg.HasField("seq"):
            return
        seq = int(msg.seq) % 256
        if node.seq is not None and seq != (node.seq + 1) % 256:
            self.stats.seq_gaps += 1
            self._want(key, f"seq {seq} after {node.seq}")
        node.seq = seq

    def _node_birth(self, key: tuple[str, str], msg: spb.Payload, stamp: int, out: SourceBatch) -> int:
        old = self._nodes.pop(key, None)
        if old is not None:
            self._metrics -= len(old.names)
        node = _EdgeNode(born=True, seq=int(msg.seq) % 256 if msg.HasField("seq") else None)
        for m in msg.metrics:
            if m.name == _BD_SEQ:
                node.bd_seq = _integer(m)
        self._nodes[key] = node
        self._wanted.pop(key, None)
        self.stats.births += 1
        return self._metrics_of(node, f"{key[0]}/{key[1]}", msg, stamp, out, birth=True)

    def _node_death(
        self, key: tuple[str, str], node: _EdgeNode | None, msg: spb.Payload, now_ms: int, out: SourceBatch
    ) -> None:
        if node is None:
            return
        bd_seq = next((_integer(m) for m in msg.metrics if m.name == _BD_SEQ), None)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            return  # the death certificate of an earlier session (the broker sends it late): not this one
        node.born = False
        node.devices.clear()
        self.stats.deaths += 1
        self._stale(node, lambda m: True, now_ms, out)

    def _stale(
        self, node: _EdgeNode, which: Callable[[_Metric], bool], now_ms: int, out: SourceBatch
    ) -> None:
        for metric in node.names.values():
            if which(metric) and metric.datatype in _NUMERIC:
                out.add(metric.twin, metric.field, math.nan, now_ms, Quality.BAD)

    def _metrics_of(
        self, node: _EdgeNode, twin: str, msg: spb.Payload, stamp: int, out: SourceBatch, *, birth: bool
    ) -> int:
        bad = 0
        twins, fields, values, stamps = out.twins, out.fields, out.values, out.source_ms
        qualities = out.quality
        for m in msg.metrics:
            if birth:
                if m.name == _BD_SEQ and twin.count("/") == 1:
                    continue  # the session number, not a measurement
                metric = self._define(node, twin, m)
                if metric is None:
                    bad += 1
                    continue
            else:
                name = m.name
                if name:
                    metric = node.names.get((twin, name))
                else:
                    metric = node.aliases.get(m.alias) if m.HasField("alias") else None
                if metric is None:
                    self.stats.unknown_aliases += 1
                    self._want(_key_of(twin), f"metric {name or m.alias!r} not in the birth")
                    bad += 1
                    continue
            if metric.datatype not in _NUMERIC:
                bad += 1
                continue
            ts = m.timestamp or stamp
            which = m.WhichOneof("value")
            value: float | None
            quality = Quality.GOOD
            if which == "double_value":  # the common case first: one attribute read, no conversion
                double = m.double_value
                value = double if math.isfinite(double) else None
            elif m.is_null:
                value, quality = math.nan, Quality.BAD
            else:
                value = _number(m, which, metric.datatype)
            if value is None:
                bad += 1
                continue
            twins.append(metric.twin)
            fields.append(metric.field)
            values.append(value)
            stamps.append(ts)
            qualities.append(quality)
        return bad

    def _define(self, node: _EdgeNode, twin: str, m: spb.Payload.Metric) -> _Metric | None:
        if not m.name:
            return None
        existing = node.names.get((twin, m.name))
        datatype = int(m.datatype)
        if existing is None:
            if self._metrics >= self.max_metrics:
                return None  # bounded: past the cap new metrics are unusable (counted by the caller)
            existing = _Metric(twin, m.name, datatype)
            node.names[(twin, m.name)] = existing
            self._metrics += 1
        existing.datatype = datatype
        existing.alias = None
        if m.HasField("alias"):
            existing.alias = int(m.alias)
            node.aliases[int(m.alias)] = existing
        return existing


def _key_of(twin: str) -> tuple[str, str]:
    group, edge = twin.split("/")[:2]
    return group, edge


def _integer(m: spb.Payload.Metric) -> int | None:
    which = m.WhichOneof("value")
    if which in ("int_value", "long_value"):
        return int(getattr(m, which))
    return None


def _number(m: spb.Payload.Metric, which: str | None, datatype: int) -> float | None:
    if which is None:
        return None
    if datatype == spb.Boolean:
        if which != "boolean_value":
            return None
        return 1.0 if m.boolean_value else 0.0
    if which in ("float_value", "double_value"):
        value = float(getattr(m, which))
        return value if math.isfinite(value) else None
    if which in ("int_value", "long_value"):
        raw = int(getattr(m, which))
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:
            # Signed types travel as their two's complement in the unsigned field (the specification's rule).
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return float(raw)
    return None


def rebirth_request(group: str, edge: str) -> tuple[str, bytes]:
    """The NCMD a host sends to make an edge node publish its births again."""
    msg = spb.Payload(timestamp=int(time.time() * 1000))
    msg.metrics.add(name=REBIRTH_METRIC, datatype=spb.Boolean, boolean_value=True)
    return f"{NAMESPACE}/{group}/NCMD/{edge}", msg.SerializeToString()
