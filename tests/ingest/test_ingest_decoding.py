"""Pure decoding: topic templates, payloads, timestamps, Modbus byte orders and block planning."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException

from drsdtp.adapters.base import Quality, SourceBatch
from drsdtp.adapters.modbus_codec import (
    ORDERS,
    TYPES,
    BlockDecoder,
    RegisterSpec,
    decode,
    encode,
    plan_blocks,
)
from drsdtp.adapters.modbus_pdu import RawHoldingResponse
from drsdtp.adapters.payloads import JsonBatchPayload, PayloadError, parse_payload, timestamp_ms
from drsdtp.adapters.settings import Table
from drsdtp.adapters.topics import TopicTemplate


@pytest.mark.parametrize(
    ("template", "topic", "expected"),
    [
        ("site/{twin}/{field}", "site/r1/temp", ("r1", "temp")),
        ("site/{twin}/{field}", "site/r1/temp/x", None),
        ("site/{twin}/{field}", "other/r1/temp", None),
        ("site/{twin}/{field}", "site//temp", None),  # an empty segment is no twin name
        ("+/{field}/{twin}", "a/t/r", ("r", "t")),
        ("plant/{twin}/#", "plant/boiler/a/b", ("boiler", None)),
        ("plant/{twin}/#", "plant/boiler", ("boiler", None)),
        ("{twin}/{field}", "$SYS/broker", None),  # wildcards never match $-topics
    ],
)
def test_topic_templates(template: str, topic: str, expected: tuple[str | None, str | None] | None) -> None:
    assert TopicTemplate.parse(template, "k").match(topic) == expected


def test_template_filter() -> None:
    assert TopicTemplate.parse("site/{twin}/+/{field}/#", "k").filter == "site/+/+/+/#"


def decode_payload(
    settings: dict[str, Any], payload: bytes | str, twin: str | None = "tw", field: str | None = "f"
) -> tuple[list[tuple[str, str, float, int, Quality]], int]:
    out = SourceBatch(received_ms=5_000)
    bad = parse_payload(Table(settings, "t")).decode(
        payload if isinstance(payload, bytes) else payload.encode(), twin, field, 5_000, out
    )
    return [(r.twin, r.field, r.value, r.source_ms, r.quality) for r in out.readings()], bad


def test_number_payload() -> None:
    assert decode_payload({"payload": "number"}, b" 21.5 ")[0] == [("tw", "f", 21.5, 5_000, Quality.GOOD)]
    with pytest.raises(PayloadError, match="not a number"):
        decode_payload({"payload": "number"}, b"warm")
    with pytest.raises(PayloadError, match="no twin or field"):
        decode_payload({"payload": "number"}, b"1", field=None)


def test_json_paths_and_timestamp_units() -> None:
    s = {"payload": "json", "value_path": "data.values[1]", "ts_path": "meta.t", "ts_unit": "ms"}
    got, bad = decode_payload(s, json.dumps({"data": {"values": [1, 2.5]}, "meta": {"t": 1234}}))
    assert got == [("tw", "f", 2.5, 1234, Quality.GOOD)]
    assert bad == 0
    with pytest.raises(PayloadError, match="no value"):
        decode_payload(s, json.dumps({"data": {"values": [1]}}))
    got, _ = decode_payload({"payload": "json", "twin_path": "id"}, json.dumps({"id": "pump", "value": True}))
    assert got == [("pump", "f", 1.0, 5_000, Quality.GOOD)]


def test_json_all_fields() -> None:
    got, bad = decode_payload(
        {"payload": "json", "fields": "*", "ts_path": "ts"},
        json.dumps({"ts": 1.5, "a": 1, "b": None, "c": "x"}),
        field=None,
    )
    assert got[0] == ("tw", "a", 1.0, 1500, Quality.GOOD)
    assert got[1][1:2] == ("b",)
    assert math.isnan(got[1][2])
    assert got[1][4] == Quality.BAD
    assert bad == 1  # "c" is a string


def test_json_batch_items_keep_going_past_bad_ones() -> None:
    payload = [
        {"twin": "a", "field": "x", "value": 1},
        {"twin": "a", "value": 2},
        "junk",
        {"field": "y", "value": 3},
        {"twin": "b", "field": "z", "value": "hot"},
        {"twin": "c", "field": "w", "value": 4, "ts": "2020-01-01T00:00:00+01:00"},
    ]
    got, bad = decode_payload(
        {"payload": "json_batch", "ts_path": "ts"}, json.dumps(payload), twin=None, field="from-topic"
    )
    assert got == [
        ("a", "x", 1.0, 5_000, Quality.GOOD),
        ("a", "from-topic", 2.0, 5_000, Quality.GOOD),
        ("c", "w", 4.0, 1577833200000, Quality.GOOD),
    ]
    assert bad == 3  # "junk", no twin, wrong value type


@pytest.mark.parametrize(
    ("raw", "unit", "ms"),
    [
        (1_700_000_000, "auto", 1_700_000_000_000),
        (1_700_000_000_123, "auto", 1_700_000_000_123),
        (1_700_000_000_123_456, "auto", 1_700_000_000_123),
        (1_700_000_000_123_456_789, "auto", 1_700_000_000_123),
        (1.5, "s", 1500),
        ("1970-01-01T00:00:01Z", "auto", 1000),
        ("1970-01-01T00:00:01", "iso", 1000),
    ],
)
def test_timestamps(raw: Any, unit: str, ms: int) -> None:
    assert timestamp_ms(raw, unit) == ms


@pytest.mark.parametrize("raw", [1e300, math.nan, math.inf, "yesterday", [1], None])
def test_absurd_timestamps_are_errors(raw: Any) -> None:
    with pytest.raises(PayloadError, match="bad timestamp"):
        timestamp_ms(raw, "auto")


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x3F80, 0x0000]),
        ("CDAB", [0x0000, 0x3F80]),
        ("BADC", [0x803F, 0x0000]),
        ("DCBA", [0x0000, 0x803F]),
    ],
)
def test_float32_one_in_every_byte_order(order: str, words: list[int]) -> None:
    assert decode(words, "float32", order) == 1.0
    assert encode(1.0, "float32", order) == words


def test_64_bit_word_order() -> None:
    assert decode([0x0001, 0x0002, 0x0003, 0x0004], "uint64", "ABCD") == 0x0001000200030004
    assert decode([0x0004, 0x0003, 0x0002, 0x0001], "uint64", "CDAB") == 0x0001000200030004
    assert decode([0xFFFF], "int16", "ABCD") == -1
    assert decode([0x0100], "uint16", "BADC") == 1


@given(st.sampled_from([t for t in TYPES if t != "bool"]), st.sampled_from(ORDERS), st.data())
def test_encode_decode_roundtrip(type_: str, order: str, data: st.DataObject) -> None:
    count, fmt = TYPES[type_]
    if fmt[-1] in "fd":
        value: float = data.draw(st.floats(allow_nan=False, width=32 if fmt[-1] == "f" else 64))
    else:
        bits = count * 16
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt[-1].islower() else (0, (1 << bits) - 1)
        value = data.draw(st.integers(lo, hi))
    words = encode(value, type_, order)
    assert len(words) == count
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(words, type_, order) == float(struct.unpack(fmt, struct.pack(fmt, value))[0])


def spec(
    address: int, type_: str = "uint16", unit: int = 1, table: str = "holding", interval: float = 1.0
) -> RegisterSpec:
    return RegisterSpec("t", f"f{address}", unit, table, address, type_, "ABCD", 1.0, 0.0, interval)


def test_block_planning_merges_within_gap_and_size() -> None:
    specs = [
        spec(0),
        spec(1, "float32"),
        spec(10),
        spec(30),
        spec(31, "float64"),
        spec(0, unit=2),
        spec(0, table="input"),
        spec(5, interval=5.0),
    ]
    blocks = plan_blocks(specs, max_block=100, max_gap=8)
    shapes = sorted((b.unit, b.table, b.poll_interval_s, b.start, b.count) for b in blocks)
    assert shapes == [
        (1, "holding", 1.0, 0, 11),
        (1, "holding", 1.0, 30, 5),
        (1, "holding", 5.0, 5, 1),
        (1, "input", 1.0, 0, 1),
        (2, "holding", 1.0, 0, 1),
    ]
    assert [b.count for b in plan_blocks([spec(i) for i in range(300)], 100, 0)] == [100, 100, 100]
    assert sum(len(b.specs) for b in blocks) == len(specs)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.sampled_from(["2020-01-01T00:00:00Z", "r1", "t"]),
)
_items = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(["twin", "field", "value", "ts", "x"]), _scalars, max_size=5),
        _scalars,
    ),
    max_size=20,
)


@given(_items, st.sampled_from(["auto", "ms", "s", "iso"]))
def test_flat_batch_decoder_matches_the_general_one(items: list[Any], unit: str) -> None:
    decoder = parse_payload(Table({"payload": "json_batch", "ts_path": "ts", "ts_unit": unit}, "t"))
    assert isinstance(decoder, JsonBatchPayload)
    assert decoder.flat is not None
    general = dataclasses.replace(decoder, flat=None)
    payload = json.dumps(items).encode()
    outs = []
    for d in (decoder, general):
        out = SourceBatch(received_ms=7)
        bad = d.decode(payload, None, "from-topic", 7, out)
        outs.append((bad, [repr(r) for r in out.readings()]))
    assert outs[0] == outs[1]


@given(
    st.lists(
        st.tuples(
            st.sampled_from([t for t in TYPES if t != "bool"]), st.sampled_from(ORDERS), st.integers(0, 3)
        ),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(0, 0xFFFF), min_size=120, max_size=120),
)
def test_block_decoder_matches_the_scalar_decoder(
    layout: list[tuple[str, str, int]], words: list[int]
) -> None:
    specs, address = [], 0
    for i, (type_, order, gap) in enumerate(layout):
        address += gap
        specs.append(RegisterSpec("t", f"f{i}", 1, "holding", address, type_, order, 0.5, -1.0, 1.0))
        address += TYPES[type_][0]
    [block] = plan_blocks(specs, max_block=125, max_gap=125)
    dec = BlockDecoder(block)
    got = dict(zip(dec.fields, dec.values(words[: block.count]), strict=True))
    for s in specs:
        at = s.address - block.start
        want = decode(words[at : at + s.count], s.type, s.order) * 0.5 - 1.0
        assert got[s.field] == want or (math.isnan(want) and math.isnan(got[s.field])), s
    # The same registers as the response's bytes (what the adapter's pymodbus client keeps) decode alike.
    wire = struct.pack(f">{block.count}H", *words[: block.count])
    from_bytes = dec.values(wire)
    assert [repr(v) for v in from_bytes] == [repr(got[f]) for f in dec.fields]
    with pytest.raises(ValueError, match="bytes for"):
        dec.values(wire[:-2])


def test_a_register_response_keeps_its_bytes() -> None:
    """The adapter's read responses: pymodbus' checks, the bytes kept, the registers still there."""
    response = RawHoldingResponse()
    response.decode(bytes([4, 0x41, 0x48, 0x00, 0x01]))
    assert response.raw == b"\x41\x48\x00\x01" and list(response.registers) == [0x4148, 1]
    assert "4 bytes" in str(response)
    with pytest.raises(ModbusIOException):
        RawHoldingResponse().decode(bytes([6, 0x41, 0x48]))  # a byte count past the frame
