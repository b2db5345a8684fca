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

Limits (adapter settings, checked before anything is parsed; each error names the setting it hit)::

    max_payload_bytes = 1048576   # a bigger message is refused unread ("too large")
    max_depth = 32                # JSON nesting ([ and {) deeper than this is refused ("too deep")
    max_number_digits = 64        # a number with a longer run of digits is refused ("number too long")

They exist because the JSON parser is not safe on its own: its C scanner recurses once per nesting level
(``b"[" * 2000`` raises RecursionError; with a raised recursion limit it could overflow the C stack), a
400-digit integer overflows ``float()``, and Python's integer parsing is quadratic in the digit count.
The checks run on the raw bytes without recursion. Small messages pass on counts alone (no more ``[``/``{``
than ``max_depth`` and no digit run over the limit: strings can only add to either); others get an exact
scan that finds the strings with a few numpy passes (a bracket or digits inside a string do not count).
``max_number_digits`` is at most 300, so ``float()`` of any integer that passes is finite.

Decoders append straight into a :class:`SourceBatch`. A message that cannot be decoded at all raises
:class:`PayloadError` with one of the fixed :data:`REASONS`; items inside a batch that are unusable are
skipped and returned as a count, so one bad item does not cost the other 999. Callers treat any other
exception from a decoder as the message's error too (reason "decoder error"): no payload may end a session.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.settings import Table
from drsdtp.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "DEFAULT_LIMITS",
    "REASONS",
    "JsonBatchPayload",
    "JsonPayload",
    "NumberPayload",
    "PayloadDecoder",
    "PayloadError",
    "PayloadLimits",
    "compile_path",
    "load_json",
    "parse_payload",
    "parse_payload_limits",
    "reason_of",
    "timestamp_ms",
    "value_of",
]

MISSING: Any = object()
TS_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
_UNIT_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_MAX_MS = 2.0**62  # keeps every timestamp inside int64 whatever a sender claims


#: Why a whole message was refused: a fixed set, so metrics labelled by reason stay bounded.
REASONS: Final = (
    "too large",
    "too deep",
    "number too long",
    "number out of range",
    "not JSON",
    "not a number",
    "not an object",
    "not a list",
    "wrong value type",
    "bad timestamp",
    "bad frame",
    "bad checksum",
    "no checksum",
    "no value",
    "no twin or field",
    "no topic rule",
    "bad response",
    "bad topic",
    "not sparkplug b",
    "decoder error",
)


class PayloadError(ValueError):
    """The message cannot be decoded. ``reason`` is one of :data:`REASONS` (log rate limits and metrics key
    on it); ``detail`` says what exactly, naming the limit that was hit."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def reason_of(exc: BaseException) -> tuple[str, str]:
    """``(reason, detail)`` for any exception a decoder raised: its own category for a PayloadError, else
    "decoder error" with the exception named (a bug or a case nobody foresaw, but still one message's)."""
    if isinstance(exc, PayloadError) and exc.reason in REASONS:
        return exc.reason, exc.detail
    return "decoder error", f"{type(exc).__name__}: {exc}"[:300]


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """What one message may be before it is parsed; see the module docstring."""

    max_payload_bytes: int = 1 << 20
    max_depth: int = 32
    max_number_digits: int = 64

    def check_size(self, n: int) -> None:
        if n > self.max_payload_bytes:
            raise PayloadError(
                "too large", f"{n} bytes, more than max_payload_bytes = {self.max_payload_bytes}"
            )

    def check_json(self, data: bytes) -> None:
        """Size, digit runs and nesting of a JSON text, without parsing (and without recursion)."""
        self.check_size(len(data))
        long_digits = _has_digit_run(data, self.max_number_digits)
        # Strings only add brackets and digits: with few enough of either in the raw bytes nothing more
        # is needed (small messages); otherwise the exact scan, which skips strings, decides.
        if not long_digits and data.count(b"[") + data.count(b"{") <= self.max_depth:
            return
        depth = _depth(data)
        if depth > self.max_depth:
            raise PayloadError("too deep", f"nesting {depth} deeper than max_depth = {self.max_depth}")
        if long_digits and _Shape(data).number_longer_than(self.max_number_digits):
            raise PayloadError(
                "number too long",
                f"a number with more than max_number_digits = {self.max_number_digits} digits",
            )


DEFAULT_LIMITS: Final = PayloadLimits()
MAX_DEPTH_LIMIT: Final = 256  # far below the interpreter's recursion limit, which the JSON scanner uses
MAX_DIGITS_LIMIT: Final = 300  # float() of an integer with at most 300 digits is finite (10**308 > it)


def parse_payload_limits(
    t: Table,
    size_key: str = "max_payload_bytes",
    default_bytes: int = 1 << 20,
    lo_bytes: int = 16,
    hi_bytes: int = 256 << 20,  # MQTT's own maximum packet size
) -> PayloadLimits:
    """``max_payload_bytes`` (or the adapter's own name for it), ``max_depth``, ``max_number_digits``."""
    d = PayloadLimits()
    return PayloadLimits(
        max_payload_bytes=t.get_int(size_key, default_bytes, lo=lo_bytes, hi=hi_bytes),
        max_depth=t.get_int("max_depth", d.max_depth, lo=1, hi=MAX_DEPTH_LIMIT),
        max_number_digits=t.get_int("max_number_digits", d.max_number_digits, lo=20, hi=MAX_DIGITS_LIMIT),
    )


_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))


@functools.lru_cache(maxsize=16)
def _run_of(limit: int) -> bytes:
    return b"1" * (limit + 1)


def _has_digit_run(data: bytes, limit: int) -> bool:
    """A run of more than ``limit`` digits anywhere (a translate and a substring search: ~10x faster than a
    regular expression, which tries every digit as a start)."""
    return len(data) > limit and data.translate(_DIGITS_AS_ONES).find(_run_of(limit)) >= 0


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def _depth(data: bytes) -> int:
    """Deepest nesting of a JSON text, strings skipped. The common case first: without a backslash every
    quote delimits a string, and when each string's quotes stand next to each other among the quotes and
    brackets (no string holds a bracket), the brackets left are exactly the structure."""
    if b"\\" not in data:
        skeleton = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
        if b'"' not in skeleton:
            return _running_max(np.frombuffer(skeleton, dtype=np.uint8))
    return _Shape(data).depth


def _running_max(brackets: npt.NDArray[np.uint8]) -> int:
    folded = brackets | 0x20  # "[" -> "{", "]" -> "}"
    step = (folded == 0x7B).astype(np.int32) - (folded == 0x7D)
    return int(np.cumsum(step).max(initial=0))


class _Shape:
    """Where the strings of a JSON text are, found with a few numpy passes (no recursion, no per-byte
    Python): a quote opens or closes a string unless an odd run of backslashes precedes it. Exact up to
    the first syntax error, which is as far as the parser gets, so the parser can never nest deeper or
    read a longer number than this scan saw."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        a = np.frombuffer(data, dtype=np.uint8)
        folded = a | 0x20  # "[" -> "{", "]" -> "}"
        pos = np.flatnonzero((folded == 0x7B) | (folded == 0x7D) | (a == 0x22) | (a == 0x5C))
        c = a[pos]
        real = c == 0x22
        if b"\\" in data:
            m = pos.size
            k = np.arange(m)
            # chain[i]: a backslash right before the next significant byte; run: such backslashes before i.
            chain = np.zeros(m, dtype=np.bool_)
            chain[:-1] = (c[:-1] == 0x5C) & (pos[1:] == pos[:-1] + 1)
            last_break = np.maximum.accumulate(np.where(chain, -1, k)) if m else k
            run = np.zeros(m, dtype=np.int64)
            run[1:] = k[:-1] - last_break[:-1]
            real &= (run & 1) == 0
        inside = np.logical_xor.accumulate(real)  # at a bracket (no quote) the parity of the quotes before
        brackets = c[~real & (c != 0x5C) & ~inside]
        self.depth = _running_max(brackets)
        self._quotes = pos[real]

    def number_longer_than(self, limit: int) -> bool:
        """A run of more than ``limit`` digits outside every string."""
        ones, run = self.data.translate(_DIGITS_AS_ONES), _run_of(limit)
        at = ones.find(run)
        while at >= 0:
            if not int(np.searchsorted(self._quotes, at)) & 1:  # an even count of quotes before: outside
                return True
            end = ones.find(b"0", at)
            if end < 0:
                return False
            at = ones.find(run, end)
        return False


def load_json(payload: bytes, limits: PayloadLimits) -> Any:
    """Parse one JSON message (UTF-8, RFC 8259) within ``limits``; every failure is a PayloadError."""
    limits.check_json(payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("not JSON", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:  # only if the stack was already deep: the depth check keeps nesting small
        raise PayloadError(
            "too deep", f"deeper than the parser can go (max_depth = {limits.max_depth})"
        ) from None
    except ValueError as exc:
        raise PayloadError("not JSON", str(exc)[:200]) from None


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
    if t is float:
        return raw, Quality.GOOD
    if t is int:
        try:
            return float(raw), Quality.GOOD
        except OverflowError:
            raise PayloadError("number out of range", f"{len(str(abs(raw)))}-digit integer") from None
    if t is bool:
        return (1.0 if raw else 0.0), Quality.GOOD
    if raw is None:
        return math.nan, Quality.BAD
    raise PayloadError("wrong value type", f"expected a number, boolean or null, got {t.__name__}")


def timestamp_ms(raw: Any, unit: str) -> int:
    t = type(raw)
    if t is int or t is float:
        if unit == "iso":
            raise PayloadError("bad timestamp", "expected an ISO 8601 string")
        try:
            number = float(raw)  # an integer too big for a float is no time either
        except OverflowError:
            raise PayloadError("bad timestamp", "out of range") from None
        if unit == "auto":
            mag = abs(number)
            unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
        ms = number * _UNIT_MS[unit]
        if not -_MAX_MS < ms < _MAX_MS:  # also catches NaN and inf
            raise PayloadError("bad timestamp", f"{number!r} is out of range")
        return int(ms)
    if t is str and unit in ("auto", "iso"):
        try:
            dt = datetime.fromisoformat(raw)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)  # no offset given: take it as UTC, never the node's local zone
            return int(dt.timestamp() * 1000.0)
        except (ValueError, OverflowError, OSError):
            raise PayloadError("bad timestamp", f"{raw[:40]!r} is not an ISO 8601 time") from None
    expected = "a number or ISO 8601 string" if unit == "auto" else "a number"
    raise PayloadError("bad timestamp", f"expected {expected}, got {t.__name__}")


class PayloadDecoder(Protocol):
    """Append the readings of one message; return how many items inside it were unusable."""

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int: ...


@runtime_checkable
class TopicDecoder(Protocol):
    """A decoder that needs the whole topic (Sparkplug B: the message type and the edge node are in it)."""

    def decode_message(self, topic: str, payload: bytes, received_ms: int, out: SourceBatch) -> int: ...


@dataclass(frozen=True, slots=True)
class NumberPayload:
    limits: PayloadLimits = DEFAULT_LIMITS

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        if twin is None or field is None:
            raise PayloadError("no twin or field", "a number needs {twin} and {field} from topic or settings")
        self.limits.check_size(len(payload))
        try:
            value = float(payload)  # never raises OverflowError: a huge literal is inf (refused later)
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
    limits: PayloadLimits = DEFAULT_LIMITS

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        obj = load_json(payload, self.limits)
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
    limits: PayloadLimits = DEFAULT_LIMITS

    def decode(
        self, payload: bytes, twin: str | None, field: str | None, received_ms: int, out: SourceBatch
    ) -> int:
        items = self.items(load_json(payload, self.limits))
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
            if tv is float:
                value, quality = v, good
            elif tv is int:
                try:
                    value, quality = float(v), good
                except OverflowError:  # only with a limit above MAX_DIGITS_LIMIT; kept for safety
                    bad += 1
                    continue
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


def parse_payload(t: Table, limits: PayloadLimits = DEFAULT_LIMITS) -> PayloadDecoder:
    kind = t.choice("payload", ("number", "json", "json_batch", "sparkplug_b"), "number")
    if kind == "number":
        return NumberPayload(limits)
    if kind == "sparkplug_b":
        from drsdtp.adapters.sparkplug import SparkplugDecoder  # it builds on this module

        return SparkplugDecoder(limits, t.get_int("max_metrics", 100_000, lo=1, hi=100_000_000))
    if kind == "json":
        twin_key = t.opt_str("twin_path")
        return JsonPayload(
            _parse_fields(t, "value"),
            compile_path(twin_key, t.path("twin_path")) if twin_key else None,
            limits,
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
        limits,
    )
