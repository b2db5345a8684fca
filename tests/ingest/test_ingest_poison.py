"""No payload can end an adapter session: every decode path, fed the probe's poison and arbitrary input,
either yields readings or one counted reject naming its reason (and the limit it hit)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import Any

import numpy as np
import pytest
from asyncua import ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import SourceBatch
from drsdtp.adapters.modbus import decode_response
from drsdtp.adapters.modbus_codec import ORDERS, TYPES, BlockDecoder, RegisterSpec, plan_blocks
from drsdtp.adapters.mqtt import Arrival, MqttAdapter, TopicRule
from drsdtp.adapters.opcua import OpcUaAdapter
from drsdtp.adapters.payloads import REASONS, PayloadError, PayloadLimits, load_json
from drsdtp.adapters.serial import LineDecoder, SerialStats, parse_settings
from drsdtp.adapters.simulated import SimulatedAdapter
from drsdtp.adapters.topics import TopicTemplate
from drsdtp.ingest.options import IngestOptions
from drsdtp.ingest.pipeline import Pipeline
from drsdtp.sim import FIELDS, StepFrame

from .support import DictInterner, RecordingSink

NOW = 1_800_000_000_000
DEEP = b"[" * 2000
HUGE = "1" + "0" * 400  # the probe's 401-digit integer

RULES: list[dict[str, Any]] = [
    {"template": "n/{twin}/{field}", "payload": "number"},
    {"template": "j/{twin}/{field}", "payload": "json", "ts_path": "ts"},
    {"template": "p/{twin}/{field}", "payload": "json", "value_path": "data.v[0]", "ts_path": "m.t"},
    {"template": "s/{twin}", "payload": "json", "fields": "*", "ts_path": "ts", "ts_unit": "ms"},
    {"template": "f/{twin}", "payload": "json", "fields": {"a": "x.a", "b": "y"}, "ts_path": "t"},
    {"template": "b/+/flat", "payload": "json_batch", "ts_path": "ts"},
    {"template": "b/+/items", "payload": "json_batch", "items_path": "r", "fields": "*", "ts_path": "ts"},
]
TOPICS = ["n/t/f", "j/t/f", "p/t/f", "s/t", "f/t", "b/g/flat", "b/g/items", "nowhere/x"]


def mqtt(**extra: Any) -> MqttAdapter:
    cfg = {"type": "mqtt", "name": "m", "host": "h", "client_id": "c", "topics": RULES, **extra}
    a = build_adapter(cfg, "adapters[0]")
    assert isinstance(a, MqttAdapter)
    return a


def prepared(batch: SourceBatch) -> None:
    """What the adapter produced must also pass the pipeline's preparation (int64 times, float values)."""
    interner = DictInterner()
    Pipeline("p", IngestOptions(), RecordingSink(interner), interner, clock_ms=lambda: NOW).prepare(batch)


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "named"),
    [
        ("j/t/f", DEEP, "too deep", "max_depth = 32"),
        ("j/t/f", b'{"value": ' + DEEP + b"}", "too deep", "max_depth = 32"),
        ("j/t/f", f'{{"value": {HUGE}}}'.encode(), "number too long", "max_number_digits = 64"),
        ("j/t/f", f'{{"value": 1, "ts": {HUGE}}}'.encode(), "number too long", "max_number_digits = 64"),
        ("b/g/flat", f'[{{"twin": "a", "field": "b", "value": {HUGE}}}]'.encode(), "number too long", "64"),
        ("s/t", b'{"a": ' + b"1" * 70 + b"}", "number too long", "max_number_digits = 64"),
        ("j/t/f", b" " * (1 << 20) + b"1", "too large", "max_payload_bytes = 1048576"),
        ("n/t/f", b"1" * ((1 << 20) + 1), "too large", "max_payload_bytes = 1048576"),
        ("j/t/f", b'{"value": 1, "ts": 1e400}', "bad timestamp", "out of range"),
        ("j/t/f", b"\xff\xfe{}", "not JSON", "not UTF-8"),
    ],
)
def test_the_probes_poison_is_one_reject_naming_its_limit(
    topic: str, payload: bytes, reason: str, named: str
) -> None:
    a = mqtt()
    out = a.decode([Arrival(topic, payload, NOW, qos=1, mid=7), Arrival("j/t/g", b'{"value": 2.5}', NOW + 1)])
    [rejected] = out.rejects
    assert (rejected.source, rejected.reason, rejected.payload) == (topic, reason, payload)
    assert named in rejected.detail
    assert [(r.twin, r.field, r.value, r.source_ms) for r in out.readings()] == [("t", "g", 2.5, NOW + 1)]


def test_limits_are_settings_and_strings_do_not_count() -> None:
    nested = json.dumps(
        {"value": 1.5, "deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    )
    assert json.loads(nested)  # 37 levels deep: over the default 32
    [rejected] = mqtt().decode([Arrival("j/t/f", nested.encode(), NOW)]).rejects
    assert rejected.reason == "too deep"
    out = mqtt(max_depth=40).decode([Arrival("j/t/f", nested.encode(), NOW)])
    assert not out.rejects
    assert [r.value for r in out.readings()] == [1.5]
    # Brackets and digits inside strings are text, not nesting or numbers.
    quoted = json.dumps({"value": 3.0, "note": "[" * 100 + "9" * 100, 'k"[': "\\[" * 50}).encode()
    out = mqtt().decode([Arrival("j/t/f", quoted, NOW)])
    assert not out.rejects
    assert [r.value for r in out.readings()] == [3.0]
    # Long numbers pass once allowed (still far below what float() can hold).
    out = mqtt(max_number_digits=80).decode([Arrival("j/t/f", b'{"value": ' + b"1" * 70 + b"}", NOW)])
    assert [r.value for r in out.readings()] == [float("1" * 70)]


@pytest.mark.parametrize(("key", "value"), [("max_depth", 257), ("max_number_digits", 301), ("max_depth", 0)])
def test_limits_cannot_be_set_past_what_is_safe(key: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"adapters\\[0\\].{key}"):
        mqtt(**{key: value})


def test_a_message_is_taken_whole_or_not_at_all() -> None:
    class HalfWay:
        """A decoder (a plugin's, say) that appends a reading and then fails."""

        def decode(
            self, payload: bytes, twin: str | None, field: str | None, ms: int, out: SourceBatch
        ) -> int:
            out.add("t", "f", 1.0, ms)
            raise KeyError("boom")

    a = mqtt()
    rule = TopicRule(TopicTemplate.parse("h/{twin}", "k"), 1, HalfWay(), None, None)
    a.settings = dataclasses.replace(a.settings, topics=(rule,))
    out = a.decode([Arrival("h/x", b"1", NOW)])
    assert len(out) == 0
    [rejected] = out.rejects
    assert (rejected.reason, rejected.detail) == ("decoder error", "KeyError: 'boom'")


# ---- arbitrary input: every decode path ------------------------------------------------------------------

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["2020-01-01T00:00:00Z", "9999-12-31T23:59:59+23:59", "0001-01-01", "nan"]),
)
_keys = st.one_of(
    st.sampled_from(["value", "ts", "twin", "field", "data", "v", "x", "a", "r", "t", "m"]), st.text()
)
_json = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=30,
)


def _nest(value: Any, depth: int) -> str:
    text = json.dumps(value)
    return "[" * depth + text + "]" * depth


_payloads = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    st.tuples(_json, st.integers(0, 3000)).map(lambda t: _nest(*t).encode()),
    _json.map(lambda v: json.dumps(v).encode()[:-1]),  # truncated
    st.tuples(_json, st.binary(max_size=4)).map(lambda t: json.dumps(t[0]).encode() + t[1]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(TOPICS), _payloads, st.booleans()), min_size=1, max_size=6))
def test_mqtt_decode_never_raises_and_accounts_for_every_message(
    messages: list[tuple[str, bytes, bool]],
) -> None:
    a = mqtt()
    arrivals = [Arrival(t, p, NOW + i, 1, i, dup) for i, (t, p, dup) in enumerate(messages)]
    out = a.decode(arrivals)
    assert all(r.reason in REASONS for r in out.rejects)
    assert all(r.redelivery == arrivals[int(r.received_ms - NOW)].dup for r in out.rejects)
    assert a.stats.messages == len(messages)
    assert all(type(v) is float for v in out.values)
    assert all(type(ms) is int and -(1 << 62) <= ms <= 1 << 62 for ms in out.source_ms)
    prepared(out)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(_payloads, _json.map(lambda v: json.dumps({"dev": "d", "seq": 1, **_obj(v)}).encode()))
    )
)
def test_serial_lines_never_raise(lines: list[bytes]) -> None:
    settings_ = parse_settings({"type": "serial", "name": "s", "port": "/dev/null"}, "adapters[0]")
    stats = SerialStats()
    decoder = LineDecoder(settings_, stats)
    out = SourceBatch(NOW)
    decoder.feed(b"\n".join(lines) + b"\n", out)
    assert all(r.reason in REASONS and r.source == "/dev/null" for r in out.rejects)
    prepared(out)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"r": value}


def test_serial_poison_lines_are_rejected_and_the_next_line_is_read() -> None:
    settings_ = parse_settings({"type": "serial", "name": "s", "port": "/dev/ttyX"}, "adapters[0]")
    decoder = LineDecoder(settings_, SerialStats())
    out = SourceBatch(NOW)
    decoder.feed(b"[" * 3000 + b"\n", out)  # used to raise RecursionError in the port's reader callback
    decoder.feed(json.dumps({"dev": "d", "seq": 1, "ts": 10**30, "r": {"t": 1}}).encode() + b"\n", out)
    decoder.feed(json.dumps({"dev": "d", "seq": 2, "r": {"t": 2.5}}).encode() + b"\n", out)
    assert [(r.reason, r.source) for r in out.rejects] == [
        ("too deep", "/dev/ttyX"),
        ("bad timestamp", "/dev/ttyX"),
    ]
    assert [r.value for r in out.readings()] == [2.5]
    prepared(out)


_variants = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(0, 9), min_size=1, max_size=3),
    st.datetimes(),
)
_stamps = st.one_of(
    st.none(),
    st.datetimes(),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.sampled_from([datetime.datetime.min, datetime.datetime.max]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(990, 1010), _variants, st.integers(0, 2**32 - 1), _stamps, _stamps),
        max_size=8,
    )
)
def test_opcua_value_conversion_never_raises(items: list[tuple[int, Any, int, Any, Any]]) -> None:
    a = build_adapter(
        {
            "type": "opcua",
            "name": "o",
            "url": "opc.tcp://h:4840/",
            "security_policy": "None",
            "twin": "t",
            "nodes": [{"node_id": f"ns=2;i={i}", "field": f"f{i}"} for i in range(5)],
        },
        "adapters[0]",
    )
    assert isinstance(a, OpcUaAdapter)
    notes = []
    for handle, value, status, source_ts, server_ts in items:
        dv = ua.DataValue(ua.Variant(value), ua.StatusCode(ua.UInt32(status)))
        dv.SourceTimestamp, dv.ServerTimestamp = source_ts, server_ts
        notes.append(ua.MonitoredItemNotification(ClientHandle=ua.UInt32(handle), Value=dv))
    a.on_data_change(notes)
    out = a._take()
    assert all(r.reason in REASONS for r in out.rejects)
    prepared(out)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([t for t in TYPES if t != "bool"]),
    st.integers(1, 4),
    st.lists(st.one_of(st.integers(-(2**20), 2**20), st.floats(), st.booleans()), max_size=20),
)
def test_modbus_responses_never_raise(type_: str, n: int, raw: list[Any]) -> None:
    specs = [RegisterSpec("t", f"f{i}", 1, "holding", i * 4, type_, "ABCD", 1.0, 0.0, 1.0) for i in range(n)]
    [block] = plan_blocks(specs, 125, 8)
    out = SourceBatch(NOW)
    problem = decode_response(BlockDecoder(block), raw, out, NOW)
    if len(raw) < block.count or any(type(w) is int and not 0 <= w <= 0xFFFF for w in raw):
        assert problem is not None  # a short response, or words that are no registers
    assert (len(out), len(out.rejects)) == ((n, 0) if problem is None else (0, 1))
    prepared(out)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([t for t in TYPES if t != "bool"]), st.sampled_from(ORDERS), st.binary(max_size=40))
def test_modbus_response_bytes_never_raise(type_: str, order: str, raw: bytes) -> None:
    """The adapter's responses as bytes (drsdtp.adapters.modbus_pdu): a wrong length is refused."""
    specs = [RegisterSpec("t", f"f{i}", 1, "holding", i * 4, type_, order, 1.0, 0.0, 1.0) for i in range(3)]
    [block] = plan_blocks(specs, 125, 8)
    out = SourceBatch(NOW)
    problem = decode_response(BlockDecoder(block), raw, out, NOW)
    assert (problem is None) == (len(raw) == 2 * block.count)
    assert (len(out), len(out.rejects)) == ((3, 0) if problem is None else (0, 1))
    prepared(out)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_simulated_frames_never_raise(data: st.DataObject) -> None:
    a = build_adapter({"type": "simulated", "name": "sim", "rooms": 2}, "adapters[0]")
    assert isinstance(a, SimulatedAdapter)
    shape = (2, len(FIELDS))
    n = shape[0] * shape[1]
    values = np.array(data.draw(st.lists(st.floats(), min_size=n, max_size=n))).reshape(shape)
    times = np.array(data.draw(st.lists(st.floats(), min_size=n, max_size=n))).reshape(shape)
    seq = np.array(data.draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))).reshape(shape)
    out = SourceBatch(NOW)
    a.frame_into(StepFrame(0, 0.0, values, times, seq), out, float(NOW), 0.0, 1000.0)
    assert len(out) + a.stats.malformed == int(np.count_nonzero(~np.isnan(values)))
    prepared(out)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 100_000, "too deep"),
        (b"{" * 100_000, "too deep"),
        (b'{"a":' * 50_000, "too deep"),
        (b"9" * 5000, "number too long"),
        (b'"' + b"[" * 5000, "not JSON"),  # brackets in an unterminated string: the parser never nests
        (b'["' + b"1" * 400 + b'", ' + b"2" * 400 + b"]", "number too long"),  # the number, not the string
    ],
)
def test_load_json_is_safe_at_any_depth_and_length(payload: bytes, reason: str) -> None:
    limits = PayloadLimits(max_payload_bytes=10 << 20, max_depth=256, max_number_digits=300)
    with pytest.raises(PayloadError, match=reason):
        load_json(payload, limits)
    assert load_json(b"[" * 256 + b"]" * 256, limits) == load_json(b"[" * 256 + b"]" * 256, limits)
    assert math.isinf(load_json(b"1e999", limits))


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\0123456789ab\u00e9', max_size=90)
_tricky = st.recursive(
    st.one_of(_tricky_text, st.integers(-(10**18), 10**18), st.floats(allow_nan=False), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_tricky_text, inner, max_size=3)),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(_tricky, st.integers(1, 8))
def test_the_guard_measures_what_the_parser_sees(value: Any, max_depth: int) -> None:
    """Brackets, quotes, backslashes and digits inside strings never count: the guard accepts exactly the
    documents as deep as allowed (their numbers are all short)."""
    payload = json.dumps(value, ensure_ascii=False).encode()
    limits = PayloadLimits(max_payload_bytes=1 << 20, max_depth=max_depth, max_number_digits=64)
    if _depth(value) <= max_depth:
        assert load_json(payload, limits) == value
    else:
        with pytest.raises(PayloadError, match="too deep"):
            load_json(payload, limits)


def _longest_int(value: Any) -> int:
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return 0
    if isinstance(value, int):
        return len(str(abs(value)))
    children = value.values() if isinstance(value, dict) else value
    return max(map(_longest_int, children), default=0)


_digits_text = st.text(alphabet='"\\0123456789[', max_size=120)
_numbers = st.recursive(
    st.one_of(_digits_text, st.integers(-(10**90), 10**90), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_digits_text, inner, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(_numbers, st.integers(20, 80))
def test_only_numbers_count_against_max_number_digits(value: Any, max_digits: int) -> None:
    payload = json.dumps(value).encode()
    limits = PayloadLimits(max_payload_bytes=1 << 20, max_depth=256, max_number_digits=max_digits)
    if _longest_int(value) <= max_digits:
        assert load_json(payload, limits) == value
    else:
        with pytest.raises(PayloadError, match="number too long"):
            load_json(payload, limits)
