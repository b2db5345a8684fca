"""The Python face of the engine: values, errors, batch writes, replication calls, and the wire schema."""

from __future__ import annotations

import pathlib
import threading

import numpy as np
import pytest

from drsdtp import errors
from drsdtp.core import BatchWriter, Intent, Store, decode_state, intents, join, numeric_entries, replica_id
from drsdtp.wire.v1 import state_pb2

VECTORS = pathlib.Path(__file__).parents[2] / "crdt_core" / "tests" / "vectors"
T0 = 1_700_000_000_000


def store(rid: int, now: int = T0) -> Store:
    s = Store(rid)
    s.set_manual_time(now)
    return s


def test_values_round_trip_with_their_python_types() -> None:
    a, b = store(1), store(2)
    values: dict[str, float | int | bool | str | bytes] = {
        "f": 1.5,
        "i": -7,
        "b": True,
        "s": "auto",
        "x": b"\x00\xff",
    }
    b.merge(a.set_many("t", values))
    assert b.fields("t") == values
    assert type(b.get("t", "b")) is bool and type(b.get("t", "i")) is int
    b.merge(a.increment("t", "n", 5))
    b.merge(a.add("t", "tags", "hot"))
    assert b.get("t", "n") == 5
    assert b.get("t", "tags") == frozenset({"hot"})
    assert b.encode_state() == a.encode_state()
    value, stamp, writer, counter = a.entry("t", "f") or (None, 0, 0, 0)
    assert (value, writer, counter) == (1.5, 1, 1)
    assert stamp >> 16 == T0


def test_a_set_delta_does_not_grow_with_its_twins_other_writes() -> None:
    """An add's delta after 1,000 writes of a number on the same twin is the size of the first add's (it was
    45 B and then 5.9 KB: the set's context kept a gap per write), and the peer loses none of those writes."""
    a, b = store(1), store(2)
    alone = a.add("t", "tags", "a")
    b.merge(alone)
    sizes = []
    for i in range(1_000):
        b.merge(a.set("t", "n", float(i)))
        delta = a.add("t", "tags", "ab"[i % 2])
        sizes.append(len(delta))
        if i % 5:
            b.merge(delta)  # the others lost: each later delta brings the set whole
    # The twin dot's varint gains a byte and a second element is present: never a byte per write.
    assert max(sizes) <= len(alone) + 16, (len(alone), max(sizes))
    assert sizes[-1] == sizes[100]
    assert b.get("t", "tags") == frozenset({"a", "b"})
    assert b.get("t", "n") == 999.0
    for chunk in a.catch_up(b.version()):
        b.merge(chunk)
    assert b.encode_state() == a.encode_state()


@pytest.mark.parametrize(
    ("call", "exc", "stdlib"),
    [
        (lambda s: s.set("t", "f", float("nan")), errors.InvalidValueError, ValueError),
        (lambda s: s.set("t", "f", float("inf")), errors.InvalidValueError, ValueError),
        (lambda s: s.set("", "f", 1.0), errors.InvalidValueError, ValueError),
        (lambda s: s.set("t" * 2000, "f", 1.0), errors.LimitError, ValueError),
        (lambda s: s.add("t", "f", "x"), errors.TypeConflictError, TypeError),
        (
            lambda s: s.increment("t", "c", 2**63 - 1) and s.increment("t", "c", 1),
            errors.CounterOverflowError,
            OverflowError,
        ),
        (lambda s: s.merge(b"\xff\xff\xff"), errors.DecodeError, ValueError),
        (lambda s: s.merge(b"\x08\x07"), errors.DecodeError, ValueError),
    ],
)
def test_errors_belong_to_one_tree_and_to_the_stdlib(
    call: object, exc: type[Exception], stdlib: type
) -> None:
    s = store(1)
    s.set("t", "f", 1.0)
    with pytest.raises(exc) as info:
        call(s)  # type: ignore[operator]
    assert isinstance(info.value, errors.DrsdtpError)
    assert isinstance(info.value, stdlib)
    assert s.get("t", "f") == 1.0


def test_unsupported_python_types_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="register holds"):
        store(1).set("t", "f", [1, 2])  # type: ignore[arg-type]


def test_desired_writes_from_a_partition_stay_visible_until_a_later_write() -> None:
    a, b = store(replica_id("edge-a")), store(replica_id("edge-b"), T0 + 200)
    da, db = a.desire("hvac", "setpoint", 21.0), b.desire("hvac", "setpoint", 23.5)
    a.merge(db)
    b.merge(da)
    assert a.get("hvac", "setpoint") == b.get("hvac", "setpoint") == (21.0, 23.5)
    # Each intent with its stamp, writer and event, in write order: what an API shows as the conflict.
    listed = a.desired("hvac", "setpoint")
    assert listed is not None
    assert [(v, stamp >> 16, writer, n) for v, stamp, writer, n in listed] == [
        (21.0, T0, replica_id("edge-a"), 1),
        (23.5, T0 + 200, replica_id("edge-b"), 1),
    ]
    assert a.fields("hvac") == {"setpoint": (21.0, 23.5)}
    assert intents(a, "hvac", "setpoint") == [Intent(*i) for i in listed]
    assert [(i.value, i.ms) for i in intents(a, "hvac", "setpoint")] == [(21.0, T0), (23.5, T0 + 200)]
    assert intents(a, "hvac", "nothing") == []
    assert decode_state(a.encode_state()) == {"hvac": {"setpoint": (21.0, 23.5)}}
    b.merge(a.desire("hvac", "setpoint", 22))
    assert b.get("hvac", "setpoint") == (22,) and type(b.desired("hvac", "setpoint")[0][0]) is int  # type: ignore[index]
    a.merge(b.clear_desired("hvac", "setpoint"))
    assert a.get("hvac", "setpoint") == () and a.desired("hvac", "setpoint") == []
    assert a.encode_state() == b.encode_state()
    assert a.desired("hvac", "other") is None and a.entry("hvac", "setpoint") is None


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda s: s.desire("t", "f", 2.0), errors.TypeConflictError),
        (lambda s: s.clear_desired("t", "f"), errors.TypeConflictError),
        (lambda s: s.set("t", "want", 2.0), errors.TypeConflictError),
        (lambda s: s.desire("t", "want", float("nan")), errors.InvalidValueError),
        (lambda s: s.desire("t", "want", [1]), TypeError),
    ],
)
def test_desired_fields_keep_their_kind_and_refuse_bad_values(call: object, exc: type[Exception]) -> None:
    s = store(1)
    s.set("t", "f", 1.0)
    s.desire("t", "want", 1.0)
    before = s.encode_state()
    with pytest.raises(exc):
        call(s)  # type: ignore[operator]
    assert s.encode_state() == before


def test_far_future_deltas_are_refused_with_the_offsets() -> None:
    ahead = store(1, T0 + 3_600_000)
    local = store(2, T0)
    with pytest.raises(errors.ClockSkewError) as info:
        local.merge(ahead.set("t", "f", 1.0))
    assert info.value.remote_ms == T0 + 3_600_000  # type: ignore[attr-defined]
    assert info.value.max_offset_ms == 500  # type: ignore[attr-defined]
    assert local.twins() == []


def test_batch_write_with_numpy_and_source_times() -> None:
    s = store(1)
    w = BatchWriter(s)
    names = [f"room-{i % 10}" for i in range(1000)]
    fields = [f"s{i // 10}" for i in range(1000)]
    values = np.arange(1000, dtype=np.float64)
    delta = w.write(names, fields, values, np.full(1000, T0 - 5, np.int64))
    assert s.stats()["fields"] == 1000
    peer = store(2)
    peer.merge(delta)
    assert peer.encode_state() == s.encode_state()
    # A late reading (older source time) loses to the newer value already there, and is counted.
    w.write(["room-0"], ["s0"], [99.0], [T0 - 10])
    assert s.get("room-0", "s0") == 0.0
    assert s.stats()["superseded_writes"] == 1
    vals, stamps = s.read_numeric(w.twin_ids(["room-3", "room-3"]), w.field_ids(["s0", "missing"]))
    assert vals[0] == 3.0 and np.isnan(vals[1])
    assert stamps[0] >> 16 == T0 - 5 and stamps[1] == 0


def test_batch_write_refuses_the_whole_batch_on_bad_input() -> None:
    s = store(1)
    w = BatchWriter(s)
    with pytest.raises(errors.InvalidValueError, match="index 1"):
        w.write(["a", "a"], ["x", "y"], [1.0, np.nan])
    with pytest.raises(errors.ClockSkewError):
        w.write(["a"], ["x"], [1.0], [T0 + 60_000])
    with pytest.raises(errors.InvalidValueError, match="length"):
        s.write_batch(w.twin_ids(["a"]), w.field_ids(["x", "y"]), np.zeros(1), np.zeros(1, np.int64))
    with pytest.raises(errors.UnknownTwinError):
        s.write_batch(np.array([9], np.uint32), w.field_ids(["x"]), np.zeros(1), np.zeros(1, np.int64))
    assert s.twins() == []


def test_names_are_resolved_by_identity_only_while_the_same_strings_stand_in_place() -> None:
    s = store(1)
    w = BatchWriter(s)
    twins, fields = ["room-1", "room-1", "room-2"], ["t", "h", "t"]
    w.write(twins, fields, [1.0, 2.0, 3.0])
    # The same list, its items replaced in place by other names (and the old strings freed): no stale id.
    twins[1] = "".join(["room-", "3"])
    fields[0] = "h"
    w.write(twins, fields, [4.0, 5.0, 6.0])
    assert s.fields("room-1") == {"t": 1.0, "h": 4.0}
    assert s.fields("room-3") == {"h": 5.0}
    assert s.fields("room-2") == {"t": 6.0}
    named = ("room-2", "room-3", "room-3")
    assert list(w.twin_ids(named)) == [s.intern_twin(n) for n in named]
    # Bad names refuse the batch, naming the place; nothing is written.
    with pytest.raises(errors.InvalidValueError, match="twin name at index 1: empty name"):
        w.write(["room-9", ""], ["t", "t"], [1.0, 2.0])
    with pytest.raises(errors.LimitError, match="field name at index 0"):
        w.write(["room-9"], ["x" * 2000], [1.0])
    with pytest.raises(TypeError, match="field name at index 1"):
        s.write_named(["room-9", "room-9"], ["t", 7], np.zeros(2))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list or tuple"):
        s.write_named("room-9", ["t"], np.zeros(1))  # type: ignore[arg-type]
    assert "room-9" not in s


def test_names_equal_to_the_previous_batchs_keep_their_ids_whatever_objects_hold_them() -> None:
    s = store(1)
    w = BatchWriter(s)
    fields = ["t", "h"]
    w.write(["room-1", "room-1"], fields, [1.0, 2.0])
    # New string objects with the same text (names decoded from a payload each tick): the same fields.
    w.write(["".join(["room-", "1"])] * 2, ["".join(["t"]), "".join(["h"])], [3.0, 4.0])
    assert s.fields("room-1") == {"t": 3.0, "h": 4.0}
    # The caller's list changed after its batch: what the memo remembered is not.
    fields[1] = "p"
    w.write(("room-1", "room-1"), fields, [5.0, 6.0])
    w.write(("room-1", "room-1"), ["t", "h"], [7.0, 8.0])
    assert s.fields("room-1") == {"t": 7.0, "h": 8.0, "p": 6.0}

    class Loud(str):
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("compared")

        __hash__ = str.__hash__

    # A name whose comparison with the previous batch's raises is resolved by its text.
    w.write(["room-1", "room-1"], ["t", "h"], [7.0, 8.0])
    w.write([Loud("room-2"), "room-1"], ["t", "h"], [9.0, 10.0])
    assert s.fields("room-2") == {"t": 9.0}
    assert s.fields("room-1")["h"] == 10.0


def test_numeric_entries_list_what_a_delta_writes_with_source_times() -> None:
    s = store(1)
    w = BatchWriter(s)
    delta = w.write(
        ["pump-1", "pump-1"], ["flow", "head"], np.array([12.5, 31.0]), np.array([T0 - 7, T0 - 3])
    )
    entries = numeric_entries(delta)
    assert [(t, f, v, stamp >> 16) for t, f, v, stamp in entries] == [
        ("pump-1", "flow", 12.5, T0 - 7),
        ("pump-1", "head", 31.0, T0 - 3),
    ]
    # Strings (and sets, counters) are left out; an integer register is widened to a float.
    (entry,) = numeric_entries(s.set_many("pump-1", {"mode": "auto", "starts": 4}))
    stored = s.entry("pump-1", "starts")
    assert stored is not None and entry == ("pump-1", "starts", 4.0, stored[1])
    with pytest.raises(errors.DecodeError):
        numeric_entries(delta[:-1])
    with pytest.raises(errors.DecodeError):
        numeric_entries(delta, max_message_bytes=8)


def test_catch_up_and_digests_between_diverged_replicas() -> None:
    a, b = store(1), store(2)
    for i in range(50):
        a.set(f"t{i}", "v", float(i))
    b.merge(a.encode_state())
    for i in range(10):
        a.set(f"t{i}", "v", float(i) + 0.5)
    b.set("t40", "w", 1.0)
    differ = a.differing_twins(b.digest())
    assert differ == sorted([f"t{i}" for i in range(10)] + ["t40"])
    chunks = a.catch_up(b.version(differ), only_listed=True, max_bytes=64)
    assert len(chunks) > 1
    for c in chunks:
        b.merge(c)
    a.merge(b.catch_up(a.version(differ), only_listed=True)[0])
    assert a.encode_state() == b.encode_state()
    assert a.digest() == b.digest()


def test_join_of_deltas_is_one_delta_with_the_same_effect() -> None:
    a = store(1)
    deltas = [a.set("t", "x", float(i)) for i in range(5)] + [a.add("t", "s", "e")]
    joined = join(deltas)
    b = store(2)
    b.merge(joined)
    assert b.encode_state() == a.encode_state()
    assert decode_state(joined) == {"t": {"x": 4.0, "s": frozenset({"e"})}}


def test_batch_merges_apply_like_single_writes_whatever_the_receivers_slot_order() -> None:
    # Twins of one batch share a field list, which a merge interns once and matches to the twin's slots
    # in order; the receiver here holds the fields in another order, some newer values and a counter
    # under a written name, so every path of that matching is taken.
    a, b = store(1), store(2, now=T0 + 60_000)
    for twin in ("t0", "t2"):
        b.set(twin, "s7", -1.0)  # newer than a's batch below: stays
        b.set(twin, "s3", -1.0)
    b.increment("t1", "s5", 2)  # a counter named like a register a writes: both kept
    fields = [f"s{i}" for i in range(10)]
    twins = [f"t{k}" for k in range(4)]
    delta = BatchWriter(a).write(
        [t for t in twins for _ in fields], fields * len(twins), np.arange(40, dtype=np.float64)
    )
    b.merge(delta)
    for k, twin in enumerate(twins):
        for i, field in enumerate(fields):
            newer = twin in ("t0", "t2") and field in ("s7", "s3")
            assert b.get(twin, field) == (-1.0 if newer else float(k * 10 + i)), (twin, field)
    merged = store(3, now=T0 + 60_000)
    for d in (b.encode_state(), a.encode_state()):
        merged.merge(d)
    assert merged.digest() == b.digest()  # the batch merge equals the full-state join


def test_merges_from_threads_release_the_gil_and_stay_consistent() -> None:
    src = store(1)
    deltas = [src.set(f"t{i % 20}", f"f{i % 7}", float(i)) for i in range(2000)]
    dst = store(2)
    parts = [deltas[i::4] for i in range(4)]
    threads = [threading.Thread(target=lambda p=p: [dst.merge(d) for d in p]) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dst.encode_state() == src.encode_state()


def test_golden_vectors_parse_with_the_python_schema() -> None:
    raw = bytes.fromhex("".join((VECTORS / "full_state_a.hex").read_text().split()))
    msg = state_pb2.StateDelta.FromString(raw)
    assert msg.format == state_pb2.FORMAT_V2
    assert list(msg.replicas) == [0x0A, 0x0B]
    assert [t.twin for t in msg.twins] == ["boiler-1", "room-1", "room-2"]
    boiler = msg.twins[0]
    fields = [f for g in boiler.writes for f in g.fields]
    assert {"temp", "mode", "setpoint", "enabled", "blob"} <= set(fields)
    assert [c.field for c in boiler.counters] == ["starts"] and list(boiler.counters[0].increments) == [3]
    # The Python encoding of the parsed message is the same canonical bytes the engine wrote.
    assert msg.SerializeToString(deterministic=True) == raw


def test_golden_multi_value_vector_parses_with_the_python_schema() -> None:
    raw = bytes.fromhex("".join((VECTORS / "multi_value_conflict.hex").read_text().split()))
    msg = state_pb2.StateDelta.FromString(raw)
    (register,) = msg.twins[0].multi_values
    assert register.field == "setpoint"
    assert [(msg.replicas[s.writer], s.WhichOneof("value")) for s in register.siblings] == [
        (0x0A, "f64"),
        (0x0B, "text"),
    ]
    assert msg.SerializeToString(deterministic=True) == raw
    assert decode_state(raw) == {"boiler-1": {"setpoint": (65.0, "eco")}}


def test_replica_ids_are_stable_and_distinct() -> None:
    assert replica_id("node-a") == replica_id("node-a")
    assert len({replica_id(f"node-{i}") for i in range(1000)}) == 1000
    assert all(0 < replica_id(f"n{i}") < 2**63 for i in range(100))
