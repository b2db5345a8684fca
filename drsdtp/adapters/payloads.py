"""Payload decoders shared by message-based adapters (MQTT today): a number, JSON with paths, JSON batches.

Settings (in a ``[[adapters.topics]]`` table)::

    payload = "number"        # b"21.5"
    payload = "json"          # {"value": 21.5, "ts": 1700000000.25}
    value_path = "value"      #   where the value is (dotted path, [i] for list items)
    fields = { temperature = "data.t", humidity = "data.h" }   # several fields from one object, or
    fields = "*"              #   every top-level number (except the timestamp) is a field
    payload = "json_batch"    # [{"twin": "r1", "field": "t", "value": 21.5, "ts": ...}, ...] or
    items_path = "readings"   #   {"readings": [...]}; twin_path/field_path/value_path per item, or
                              #   `fields` to take several fields from each item
    ts_path = "ts"            # optional; without it the receive time is the source time
    ts_unit = "auto"          # s | ms | us | ns | iso | auto (by magnitude; strings are ISO 8601)

Decoders append straight into a :class:`SourceBatch`. A message that cannot be decoded at all raises
:class:`PayloadError`; items inside a batch that are unusable are skipped and returned as a count, so one bad
item does not cost the other 999.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError

__all__ = [
    "JsonBatchPayload",
    "JsonPayload",
    "NumberPayload",
    "PayloadDecoder",
    "PayloadError",
    "compile_path",
    "parse_payload",
    "timestamp_ms",
    "value_of",
]

MISSING: Any = object()
TS_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
_UNIT_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_MAX_MS = 2.0**62  # keeps every timestamp inside int64 whatever a sender claims


class PayloadError(ValueError):
    """The message cannot be decoded. ``reason`` is a fixed category (log rate limiting keys on it)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


Getter = Callable[[Any], Any]


def compile_path(path: str, key: str) -> Getter:
    """``"a.b[0].c"`` -> a function returning the value there or ``MISSING``. ``""`` is the root."""
    parts: list[str | int] = []
    if path:
        for token in path.split("."):
            m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", token)
            if m is None or (not m.group(1) and not m.group(2)):
                raise ConfigError(key, f"bad path {path!r}: use dotted keys and [index], e.g. 'data.v[0].x'")
            if m.group(1):
                parts.append(m.group(1))
            parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    if not parts:
        return lambda obj: obj
    if len(parts) == 1 and isinstance(parts[0], str):
        name = parts[0]
        # The hot case (one key): no loop, no isinstance chain.
        return lambda obj: obj.get(name, MISSING) if type(obj) is dict else MISSING
    frozen = tuple(parts)

    def get(obj: Any) -> Any:
        for p in frozen:
            if isinstance(p, str):
                if type(obj) is not dict:
                    return MISSING
                obj = obj.get(p, MISSING)
                if obj is MISSING:
                    return MISSING
            else:
                if type(obj) is not list or p >= len(obj):
                    return MISSING
                obj = obj[p]
        return obj

    return get


def value_of(raw: Any) -> tuple[float, int]:
    """JSON value -> ``(value, quality)``; ``null`` is a dropout (BAD, no value); other types are errors."""
    t = type(raw)
    if t is float or t is int:
        return float(raw), Quality.GOOD
    if t is bool:
        return (1.0 if raw else 0.0), Quality.GOOD
    if raw is None:
        return math.nan, Quality.BAD
    raise PayloadError("wrong value type", f"expected a number, boolean or null, got {t.__name__}")


def timestamp_ms(raw: Any, unit: str) -> int:
    t = type(raw)
    if t is int or t is float:
        if unit == "auto":
            mag = abs(raw)
            unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
        elif unit == "iso":
            raise PayloadError("bad timestamp", "expected an ISO 8601 string")
        ms = raw * _UNIT_MS[unit]
        if not -_MAX_MS < ms < _MAX_MS:  # also catches NaN and inf
            raise PayloadError("bad timestamp", f"{raw!r} is out of range")
        return int(ms)
    if t is str and unit in ("auto", "iso"):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError("bad timestamp", f"{raw!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # no offset given: take it as UTC, never the node's local zone
        return int(dt.timestamp() * 1000.0)
    expected = "a number or ISO 8601 string" if unit == "auto" else "a number"
    raise PayloadError("bad timestamp", f"expected {expected}, got {t.__name__}")


class PayloadDecoder(Protocol):
    """Append the readings of one message; return how many items inside it were unusable."""

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int: ...


def _loads(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("not JSON", str(exc)) from None


@dataclass(frozen=True, slots=True)
class NumberPayload:
    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        if twin is None or field is None:
            raise PayloadError("no twin or field", "a number needs {twin} and {field} from topic or settings")
        try:
            value = float(payload)
        except ValueError:
            raise PayloadError("not a number", repr(payload[:40])) from None
        out.add(twin, field, value, received_ms, Quality.GOOD)
        return 0


@dataclass(frozen=True, slots=True)
class _Fields:
    """Which fields one JSON object yields: ``(name, getter)`` pairs, or all numbers (``all_numbers``)."""

    pairs: tuple[tuple[str | None, Getter], ...]  # name None: the field comes from the topic/item
    all_numbers: bool
    ts: Getter | None
    ts_key: str | None  # top-level timestamp key, skipped by fields = "*"
    ts_unit: str

    def emit(self, obj: Any, twin: str, field: str | None, ts_ms: int, out: SourceBatch) -> int:
        """Append the readings of ``obj``; returns the number of unusable values."""
        bad = 0
        if self.ts is not None:
            raw_ts = self.ts(obj)
            if raw_ts is not MISSING:
                ts_ms = timestamp_ms(raw_ts, self.ts_unit)
        if self.all_numbers:
            if type(obj) is not dict:
                raise PayloadError("not an object", "fields = '*' needs a JSON object")
            for name, raw in obj.items():
                if name == self.ts_key:
                    continue
                try:
                    value, quality = value_of(raw)
                except PayloadError:
                    bad += 1
                    continue
                out.add(twin, name, value, ts_ms, quality)
            return bad
        for name, get in self.pairs:
            raw = get(obj)
            fname = name if name is not None else field
            if raw is MISSING or fname is None:
                bad += 1
                continue
            try:
                value, quality = value_of(raw)
            except PayloadError:
                bad += 1
                continue
            out.add(twin, fname, value, ts_ms, quality)
        return bad


@dataclass(frozen=True, slots=True)
class JsonPayload:
    fields: _Fields
    twin_path: Getter | None

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        obj = _loads(payload)
        if self.twin_path is not None:
            t = self.twin_path(obj)
            twin = t if type(t) is str else twin
        if twin is None:
            raise PayloadError("no twin or field", "no twin in the topic, the settings or the payload")
        before = len(out)
        bad = self.fields.emit(obj, twin, field, received_ms, out)
        if len(out) == before:
            raise PayloadError("no value", "no usable value in the JSON object")
        return bad


@dataclass(frozen=True, slots=True)
class JsonBatchPayload:
    items: Getter
    twin_path: Getter
    field_path: Getter
    per_item: _Fields
    # (twin key, field key, value key, ts key or None, ts unit) when every path is one plain key and each item
    # is one reading: the common shape, decoded by a loop with no per-item function calls.
    flat: tuple[str, str, str, str | None, str] | None = None

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        items = self.items(_loads(payload))
        if type(items) is not list:
            raise PayloadError("not a list", "json_batch payload: expected a list of readings")
        if self.flat is not None:
            return self._decode_flat(items, twin, field, received_ms, out, *self.flat)
        bad = 0
        get_twin, get_field, emit = self.twin_path, self.field_path, self.per_item.emit
        for item in items:
            if type(item) is not dict:
                bad += 1
                continue
            t = get_twin(item)
            t = t if type(t) is str else twin
            f = get_field(item)
            f = f if type(f) is str else field
            if t is None:
                bad += 1
                continue
            try:
                bad += emit(item, t, f, received_ms, out)
            except PayloadError:
                bad += 1
        return bad

    @staticmethod
    def _decode_flat(
        items: list[Any],
        twin: str | None,
        field: str | None,
        received_ms: int,
        out: SourceBatch,
        tk: str,
        fk: str,
        vk: str,
        sk: str | None,
        unit: str,
    ) -> int:
        # Same rules as the general path (value_of, timestamp_ms), inlined for the common types.
        bad = 0
        add_t, add_f, add_v, add_s, add_q = (
            out.twins.append,
            out.fields.append,
            out.values.append,
            out.source_ms.append,
            out.quality.append,
        )
        good, no_value, nan = int(Quality.GOOD), int(Quality.BAD), math.nan
        for item in items:
            if type(item) is not dict:
                bad += 1
                continue
            t = item.get(tk, twin)
            if type(t) is not str:
                t = twin
            f = item.get(fk, field)
            if type(f) is not str:
                f = field
            v = item.get(vk, MISSING)
            if t is None or f is None or v is MISSING:
                bad += 1
                continue
            tv = type(v)
            if tv is float or tv is int:
                value, quality = float(v), good
            elif tv is bool:
                value, quality = (1.0 if v else 0.0), good
            elif v is None:
                value, quality = nan, no_value
            else:
                bad += 1
                continue
            ts = received_ms
            if sk is not None:
                raw = item.get(sk, MISSING)
                if raw is not MISSING:
                    if type(raw) is int and unit == "ms" and -_MAX_MS < raw < _MAX_MS:
                        ts = raw
                    else:
                        try:
                            ts = timestamp_ms(raw, unit)
                        except PayloadError:
                            bad += 1
                            continue
            add_t(t)
            add_f(f)
            add_v(value)
            add_s(ts)
            add_q(quality)
        return bad


def _plain_key(path: str) -> str | None:
    return path if path and "." not in path and "[" not in path else None


def _parse_fields(t: Table, default_value_path: str) -> _Fields:
    ts_path = t.opt_str("ts_path")
    ts_unit = t.choice("ts_unit", TS_UNITS, "auto")
    ts = compile_path(ts_path, t.path("ts_path")) if ts_path else None
    ts_key = ts_path if ts_path and "." not in ts_path and "[" not in ts_path else None
    if t.has("fields") and isinstance(t.raw["fields"], str):
        if t.get_str("fields") != "*":
            raise t.error("fields", "expected a table {field = 'path'} or '*'")
        if t.has("value_path"):
            raise t.error("value_path", "not used with fields = '*'")
        return _Fields((), True, ts, ts_key, ts_unit)
    if t.has("fields"):
        if t.has("value_path"):
            raise t.error("value_path", "set either value_path or fields, not both")
        mapping = t.str_map("fields")
        if not mapping:
            raise t.error("fields", "must name at least one field")
        base = t.path("fields")
        pairs = tuple((name, compile_path(path, f"{base}.{name}")) for name, path in mapping.items())
        return _Fields(pairs, False, ts, ts_key, ts_unit)
    value_path = t.get_str("value_path", default_value_path, allow_empty=True)
    return _Fields(((None, compile_path(value_path, t.path("value_path"))),), False, ts, ts_key, ts_unit)


def parse_payload(t: Table) -> PayloadDecoder:
    kind = t.choice("payload", ("number", "json", "json_batch"), "number")
    if kind == "number":
        return NumberPayload()
    if kind == "json":
        twin_key = t.opt_str("twin_path")
        return JsonPayload(
            _parse_fields(t, "value"), compile_path(twin_key, t.path("twin_path")) if twin_key else None
        )
    items = compile_path(t.get_str("items_path", "", allow_empty=True), t.path("items_path"))
    twin_key = t.get_str("twin_path", "twin")
    field_key = t.get_str("field_path", "field")
    per_item = _parse_fields(t, "value")
    keys = (_plain_key(twin_key), _plain_key(field_key), _plain_key(t.raw.get("value_path", "value")))
    flat = None
    if not per_item.all_numbers and not t.has("fields") and all(keys):
        ts_raw = t.raw.get("ts_path")
        if ts_raw is None or _plain_key(ts_raw):
            flat = (keys[0] or "", keys[1] or "", keys[2] or "", ts_raw, per_item.ts_unit)
    return JsonBatchPayload(
        items,
        compile_path(twin_key, t.path("twin_path")),
        compile_path(field_key, t.path("field_path")),
        per_item,
        flat,
    )
