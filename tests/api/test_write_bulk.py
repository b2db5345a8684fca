"""Bulk numeric writes decoded natively (drsdtp.api.write_bulk): the Rust decoder against the protobuf
runtime, then on a real node over gRPC: the bulk path applies and audits what the general path would, and
any request it does not take whole (a check that fails included) gets the general path's precise error."""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from drsdtp._core import (
    OP_ADD,
    OP_CLEAR,
    OP_DESIRE,
    OP_INCREMENT,
    OP_REMOVE,
    WriteColumns,
    bulk_twins_json,
    decode_write,
)
from drsdtp.api import write_bulk
from drsdtp.api.errors import FIELD_KEY
from drsdtp.api.write_bulk import BulkWrite, Plan, parse_write
from drsdtp.api.write_plan import Applied
from drsdtp.client import connect, field_to_python
from drsdtp.config import Address
from drsdtp.history.audit import Change, _encoded
from drsdtp.history.values import FieldValue
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.api.test_write import Stub, config, create, desire, fields, refused, report, trailer

names = st.text(min_size=0, max_size=6)
floats = st.floats(allow_nan=True, allow_infinity=True)
twin_writes = st.builds(
    lambda twin, ops, version: api_pb2.TwinWrite(
        twin_id=twin, ops=[report(f, f64=v) for f, v in ops], if_version=version
    ),
    names,
    st.lists(st.tuples(names, floats), min_size=1, max_size=5),
    st.none() | st.integers(0, 2**64 - 1),
)


@settings(max_examples=300, deadline=None)
@given(
    twins=st.lists(twin_writes, max_size=5),
    values=st.lists(floats, max_size=6),
    actor=names,
    ack=st.sampled_from([0, 1]),
)
def test_the_native_decoder_reads_what_protobuf_reads(
    twins: list[api_pb2.TwinWrite], values: list[float], actor: str, ack: int
) -> None:
    cols = api_pb2.NumericColumns(
        twin_ids=["a", "b"], fields=["x"], twin=[i % 2 for i in range(len(values))], values=values
    )
    request = api_pb2.WriteRequest(twins=twins, columns=cols, actor=actor, ack=ack, reason="r")  # type: ignore[arg-type]
    got = decode_write(request.SerializeToString())
    if not (twins or values):
        assert isinstance(got, str)
        return
    assert isinstance(got, WriteColumns)
    assert (got.actor, got.reason, got.ack) == (actor, "r", ack)
    assert got.twins == [t.twin_id for t in twins]
    assert got.if_versions == [(i, t.if_version) for i, t in enumerate(twins) if t.HasField("if_version")]
    rows = [(tw.twin_id, op.field, op.report.f64) for tw in twins for op in tw.ops]
    decoded = [
        (got.twins[i], got.names[got.field[r]], got.values[r])
        for i in range(len(got.twins))
        for r in range(got.starts[i], got.starts[i + 1])
    ]
    assert [(t, f) for t, f, _ in decoded] == [(t, f) for t, f, _ in rows]
    np.testing.assert_array_equal([v for *_, v in decoded], [v for *_, v in rows])
    assert len(set(got.names)) == len(got.names)
    assert (got.col_twin_ids, list(got.col_twin), list(got.col_field)) == (["a", "b"], list(cols.twin), [])
    np.testing.assert_array_equal(got.col_values, values)


def test_other_requests_are_left_to_protobuf() -> None:
    ops = [report("x", f64=1.0)]
    general = [
        api_pb2.WriteRequest(twins=[create("a", ops=ops)]),
        api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="a", delete=True)]),
        api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="a", ops=[report("x", i64=1)])]),
        api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id="a", ops=[api_pb2.FieldOp(field="n", clear_desired=False)])]
        ),
        api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="a", ops=[desire("sp", i64=1)])]),
        api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="a", ops=[api_pb2.FieldOp(field="n")])]),
    ]
    for request in general:
        body = request.SerializeToString()
        assert isinstance(decode_write(body), str)
        assert parse_write(body) == request
    with pytest.raises(DecodeError):
        parse_write(b"\x0a\xff\xff")  # protobuf's own error: the guard answers INVALID_ARGUMENT
    small = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="a", ops=ops)])
    assert parse_write(small.SerializeToString()) == small  # a small write (drsdtp.api.write_small)
    two = api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=t, ops=ops) for t in "ab"])
    bulk = parse_write(two.SerializeToString())
    assert isinstance(bulk, BulkWrite) and bulk.bulk_twins() == ("a", "b")


def test_the_other_kinds_of_op_decode_to_rows_in_request_order() -> None:
    request = api_pb2.WriteRequest(
        twins=[
            api_pb2.TwinWrite(
                twin_id="a",
                ops=[
                    api_pb2.FieldOp(field="n", increment=-(1 << 63)),
                    report("x", f64=1.5),
                    api_pb2.FieldOp(field="s", add="é"),
                ],
            ),
            api_pb2.TwinWrite(
                twin_id="b",
                ops=[
                    api_pb2.FieldOp(field="s", remove="f"),
                    desire("sp", f64=-0.5),
                    api_pb2.FieldOp(field="sp", clear_desired=True),
                ],
            ),
        ]
    )
    got = decode_write(request.SerializeToString())
    assert isinstance(got, WriteColumns)
    assert (got.names, list(got.starts), list(got.values)) == (["x"], [0, 1, 1], [1.5])
    assert [got.op_names[f] for f in got.op_field] == ["n", "s", "s", "sp", "sp"]
    assert list(got.op_twin) == [0, 0, 1, 1, 1]
    assert list(got.op_kind) == [OP_INCREMENT, OP_ADD, OP_REMOVE, OP_DESIRE, OP_CLEAR]
    assert (list(got.op_amount), got.op_element) == ([-(1 << 63), 0, 0, 0, 0], ["", "é", "f", "", ""])
    assert list(got.op_value) == [0.0, 0.0, 0.0, -0.5, 0.0]


bulk_rows = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 3),
        st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1.0, 2.0**60]),
        st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.0, 2.0**60]),
    ),
    min_size=1,
    max_size=12,
)
tricky = st.sampled_from(["a", "b", "é", 'q"\\', "\n\x01", "\u2028", "Z", "\U0010ffff"])


def _rows_arrays(
    twins: list[str], fields: list[str], rows: list[tuple[int, int, float, float | None]]
) -> tuple[NDArray[np.uint32], NDArray[np.uint32], NDArray[np.float64], NDArray[np.float64]]:
    """Generated rows as a plan's arrays: twin and field indexes, values, and each row's old value, which
    is per (twin, field) as the store holds it (the first row's says for all)."""
    t = np.array([r[0] for r in rows], np.uint32)
    f = np.array([r[1] for r in rows], np.uint32)
    values = np.array([r[2] for r in rows])
    held: dict[tuple[str, str], float] = {}
    for r in rows:
        held.setdefault((twins[r[0]], fields[r[1]]), math.nan if r[3] is None else r[3])
    olds = np.array([held[(twins[r[0]], fields[r[1]])] for r in rows])
    return t, f, values, olds


@settings(max_examples=300, deadline=None)
@given(
    twins=st.lists(tricky, min_size=4, max_size=4),
    fields=st.lists(tricky, min_size=4, max_size=4),
    rows=bulk_rows,
)
def test_the_native_record_of_a_bulk_write_is_the_one_python_writes(
    twins: list[str], fields: list[str], rows: list[tuple[int, int, float, float | None]]
) -> None:
    """A bulk write over several twins gets its record's twins part from one native call; it must be the
    bytes the per-twin Readings give (names listed twice, rows that rewrite a field, unchanged values,
    fields held before or not, escapes, non-ASCII names, floats Python writes itself)."""
    t, f, values, olds = _rows_arrays(twins, fields, rows)
    plan = Plan(twins, fields, t, f, values, np.zeros(len(rows), np.int64), olds)
    applied = Applied()
    write_bulk._audit(plan, applied)
    parts = ",".join(
        f'{json.dumps(name, ensure_ascii=False)}:{{"action":"write","changes":'
        f"{_encoded(applied.changes.get(name, {}))}}}"
        for name in sorted(set(twins))
    )
    assert bulk_twins_json(twins, fields, t, f, values, olds) == "{" + parts + "}"
    json.loads("{" + parts + "}")


@settings(max_examples=300, deadline=None)
@given(
    twins=st.lists(tricky, min_size=4, max_size=4),
    fields=st.lists(tricky, min_size=4, max_size=4),
    rows=bulk_rows,
    split=st.integers(0, 12),
)
def test_a_bulk_records_columns_name_their_fields_as_readings(
    twins: list[str], fields: list[str], rows: list[tuple[int, int, float, float | None]], split: int
) -> None:
    """Rows from ``readings_from`` on (the request's columns) are named per twin under "readings", sorted
    and once each, with no values; a field they write is not in "changes"; the ops' rows before them are
    recorded as without it. The part is canonical JSON (the record's hash covers its bytes)."""
    split = min(split, len(rows))
    t, f, values, olds = _rows_arrays(twins, fields, rows)
    got = json.loads(bulk_twins_json(twins, fields, t, f, values, olds, None, split))
    whole = json.loads(bulk_twins_json(twins, fields, t, f, values, olds))
    read: dict[str, set[str]] = {}
    for r in rows[split:]:
        read.setdefault(twins[r[0]], set()).add(fields[r[1]])
    assert sorted(got) == sorted(set(twins))
    for name, part in got.items():
        assert part.get("readings", []) == sorted(read.get(name, ()))
        # The fields no column wrote: as the record without readings has them (their last row an op's).
        ops_only = {k: v for k, v in whole[name]["changes"].items() if k not in read.get(name, ())}
        assert part["changes"] == ops_only
        if split == len(rows):
            assert part == whole[name]
    line = bulk_twins_json(twins, fields, t, f, values, olds, None, split)
    assert line == json.dumps(got, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
async def api(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Node, Stub]]:
    async with Node(config(tmp_path)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            yield node, stub


def numbers(twin: str, **values: float) -> api_pb2.TwinWrite:
    return api_pb2.TwinWrite(twin_id=twin, ops=[report(k, f64=v) for k, v in values.items()])


async def test_bulk_writes_apply_in_one_commit_and_are_audited_with_old_values(
    api: tuple[Node, Stub],
) -> None:
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(twins=[create("room-1", "room", [report("temp_1", f64=20.0)]), create("m-1")])
    )
    records = node.durable.stats.records
    cols = api_pb2.NumericColumns(
        twin_ids=["m-1"], fields=["a", "z"], twin=[0, 0, 0], field=[0, 1, 0], values=[1.0, 2.0, 3.0]
    )
    reply = await stub.Write(
        api_pb2.WriteRequest(
            twins=[numbers("room-1", temp_1=21.5, temp_2=19.0), numbers("m-1", a=7.0, b=8.0)],
            columns=cols,
            actor="app",
            reason="bulk",
        )
    )
    assert node.api.write_paths["bulk"] == 1
    assert node.durable.stats.records == records + 1  # one commit
    assert [t.twin_id for t in reply.twins] == ["room-1", "m-1"]
    assert [t.version for t in reply.twins] == [node.store.context_digest(t) for t in ("room-1", "m-1")]
    assert {k: v for k, v in (await fields(stub, "m-1")).items() if len(k) == 1} == {
        "a": 3.0,
        "b": 8.0,
        "z": 2.0,
    }
    assert (await fields(stub, "room-1"))["temp_1"] == 21.5
    # The ops' fields with their old and new values; the columns' (a, z) named as readings, no values.
    for twin, want in (
        ("room-1", {"temp_1": (20.0, 21.5), "temp_2": (None, 19.0)}),
        ("m-1", {"a": (None, None), "b": (None, 8.0), "z": (None, None)}),
    ):
        record = (await stub.ReadAudit(api_pb2.AuditRequest(twin_id=twin))).records[-1]
        got = {
            c.name: (
                field_to_python(c.before) if c.HasField("before") else None,
                c.after.f64 if c.HasField("after") else None,
            )
            for c in record.changes
        }
        assert got == want
        assert (record.actor, record.reason, record.action) == ("app", "bulk", "write")
    # The same values again (a small write, then the bulk path's shape): applied, and audited as a write
    # that changed nothing.
    for request in (
        api_pb2.WriteRequest(twins=[numbers("m-1", a=3.0, b=8.0)]),
        api_pb2.WriteRequest(twins=[numbers("m-1", a=3.0, b=8.0), numbers("room-1", temp_1=21.5)]),
    ):
        await stub.Write(request)
        record = (await stub.ReadAudit(api_pb2.AuditRequest(twin_id="m-1"))).records[-1]
        assert (record.action, list(record.changes)) == ("write", [])
    assert (node.api.write_paths["small"], node.api.write_paths["bulk"]) == (1, 2)


async def test_a_bulk_write_that_fails_a_check_gets_the_general_paths_error_and_changes_nothing(
    api: tuple[Node, Stub],
) -> None:
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                create("room-1", "room", [report("note", text="a")]),
                create("m-1", ops=[api_pb2.FieldOp(field="n", increment=1)]),
                create("pad"),
            ]
        )
    )
    version = node.store.context_digest("m-1")
    assert version is not None
    before = node.store.encode_state()
    cases = [
        (
            api_pb2.WriteRequest(twins=[numbers("m-1", a=1.0, b=float("nan"))]),
            "INVALID_ARGUMENT",
            "twins[0].ops[1].report",
        ),
        (
            api_pb2.WriteRequest(twins=[numbers("m-1", a=1.0), numbers("ghost", a=1.0)]),
            "NOT_FOUND",
            "twins[1].twin_id",
        ),
        (
            api_pb2.WriteRequest(twins=[numbers("m-1", a=1.0, n=2.0)]),
            "INVALID_ARGUMENT",
            "twins[0].ops[1].field",
        ),
        (
            api_pb2.WriteRequest(twins=[numbers("room-1", note=2.0)]),
            "INVALID_ARGUMENT",
            "twins[0].ops[0].field",
        ),
        (
            api_pb2.WriteRequest(twins=[numbers("room-1", temp_1=99.0)]),
            "INVALID_ARGUMENT",
            "twins[0].ops[0].report",
        ),
        (api_pb2.WriteRequest(twins=[numbers("m-1", _x=1.0)]), "INVALID_ARGUMENT", "twins[0].ops[0].field"),
        (
            api_pb2.WriteRequest(twins=[numbers("m-1", **{"a.desired": 1.0})]),
            "INVALID_ARGUMENT",
            "twins[0].ops[0].field",
        ),
        (
            api_pb2.WriteRequest(
                twins=[api_pb2.TwinWrite(twin_id="m-1", if_version=version + 1, ops=[report("a", f64=1.0)])]
            ),
            "FAILED_PRECONDITION",
            "twins[0].if_version",
        ),
        (
            api_pb2.WriteRequest(
                twins=[numbers("m-1", a=1.0)],
                columns=api_pb2.NumericColumns(
                    twin_ids=["m-1"], fields=["x"], twin=[0], field=[0], values=[float("inf")]
                ),
            ),
            "INVALID_ARGUMENT",
            "columns.values[0]",
        ),
    ]
    for request, code, field in cases:
        # As it is (one twin: a small write's shape) and with a second twin listed after it (the bulk
        # path's shape): the same error either way.
        padded = api_pb2.WriteRequest()
        padded.CopyFrom(request)
        padded.twins.append(numbers("pad", z=1.0))
        for sent in (request, padded):
            error = await refused(stub, sent)
            assert (error.code().name, trailer(error, FIELD_KEY)) == (code, field), error.details()
    assert node.store.encode_state() == before
    assert node.api.write_paths["bulk"] == node.api.write_paths["small"] == 0
    # The right version applies, through either path.
    good = api_pb2.TwinWrite(twin_id="m-1", if_version=version, ops=[report("a", f64=1.0)])
    await stub.Write(api_pb2.WriteRequest(twins=[good]))
    assert node.api.write_paths["small"] == 1
    good.if_version = node.store.context_digest("m-1") or 0
    await stub.Write(api_pb2.WriteRequest(twins=[good, numbers("pad", z=2.0)]))
    assert node.api.write_paths["bulk"] == 1


def mixed(twin: str, i: int) -> api_pb2.TwinWrite:
    """Every kind of op the bulk path takes, on fields new and held: f64 reports (one unchanged after the
    first round), increments of both signs, adds and removes (of elements held and not), desired values
    (one twice), desired fields cleared (one never desired, one just desired)."""
    return api_pb2.TwinWrite(
        twin_id=twin,
        ops=[
            report("x", f64=float(i)),
            report("same", f64=1.0),
            api_pb2.FieldOp(field="n", increment=3),
            api_pb2.FieldOp(field="tags", add=f"e{i % 3}"),
            api_pb2.FieldOp(field="n", increment=-1),
            api_pb2.FieldOp(field="tags", remove=f"e{(i + 1) % 3}"),
            api_pb2.FieldOp(field="gone", remove="never-held"),
            desire("sp", f64=i / 3),
            api_pb2.FieldOp(field="k", increment=i),
            desire("sp", f64=i / 7),
            api_pb2.FieldOp(field="tags", add="fixed"),
            api_pb2.FieldOp(field="off", clear_desired=True),
            desire("lamp", f64=i),
            api_pb2.FieldOp(field="lamp", clear_desired=True),
        ],
    )


def audited(node: Node, twin: str) -> list[tuple[str, str, str, dict[str, object]]]:
    return [
        (r.actor, r.reason, r.action, {k: c.to_json() for k, c in r.changes.items()})
        for r in node.snapshots.audit.records(twin=twin)
    ]


async def test_a_mixed_batch_gives_the_state_and_audit_the_general_path_gives(
    api: tuple[Node, Stub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same requests to twins "g-*" through the general path (the bulk planner declines a request
    with an idempotency key here) and
    to twins "b-*" through the bulk path: the same fields and the same audit, request by request (several
    twins, one twin). A twin listed twice gets the same fields too (the
    general path audits only its last listing's changes, the bulk path the request's: not compared)."""
    node, stub = api
    bulk_plan = write_bulk.plan

    def general_if_keyed(store: Any, bulk: BulkWrite, *args: Any) -> write_bulk.Plan | None:
        return None if bulk.cols.idempotency_key else bulk_plan(store, bulk, *args)

    monkeypatch.setattr(write_bulk, "plan", general_if_keyed)
    names = [f"{p}-{k}" for p in "gb" for k in range(4)]
    await stub.Write(api_pb2.WriteRequest(twins=[create(t, ops=[report("held", f64=0.0)]) for t in names]))
    for i in range(4):
        for side in "gb":
            rounds = [
                api_pb2.WriteRequest(
                    twins=[mixed(f"{side}-{k}", i + k) for k in range(3)], actor="app", reason=f"mixed {i}"
                ),
                api_pb2.WriteRequest(twins=[mixed(f"{side}-0", i * 5)], actor="app", reason="one twin"),
                api_pb2.WriteRequest(twins=[mixed(f"{side}-3", i), mixed(f"{side}-3", i + 9)]),
            ]
            for j, request in enumerate(rounds):
                if side == "g":
                    request.idempotency_key = f"key-{i}-{j}"
                await stub.Write(request)
    assert node.api.write_paths["bulk"] == 12
    assert node.api.write_paths["general"] == 12 + 1  # and the creates
    for k in range(4):
        general, bulk = await fields(stub, f"g-{k}"), await fields(stub, f"b-{k}")
        assert bulk == general
        assert {"x", "n", "k", "tags", "sp.desired", "off.desired", "lamp.desired"} <= set(bulk)
        if k < 3:
            assert audited(node, f"b-{k}") == audited(node, f"g-{k}")
    assert len(audited(node, "b-0")) == 1 + 4 * 2


async def test_an_idempotency_key_takes_the_bulk_path_and_names_one_write(api: tuple[Node, Stub]) -> None:
    """A keyed request in the bulk shape is applied once: its repeat gets the same reply marked repeated
    and changes nothing; the key on a different request is refused by name."""
    node, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("k-1"), create("k-2")]))
    request = api_pb2.WriteRequest(twins=[mixed("k-1", 1), mixed("k-2", 2)], idempotency_key="once")
    first = await stub.Write(request)
    assert node.api.write_paths["bulk"] == 1
    state = node.store.encode_state()
    again = await stub.Write(request)
    assert again.repeated and not first.repeated
    assert list(again.twins) == list(first.twins)
    assert node.store.encode_state() == state
    assert node.api.write_paths["bulk"] == 1
    other = api_pb2.WriteRequest(twins=[mixed("k-1", 3), mixed("k-2", 2)], idempotency_key="once")
    error = await refused(stub, other)
    assert (error.code().name, trailer(error, FIELD_KEY)) == ("INVALID_ARGUMENT", "idempotency_key")
    assert node.store.encode_state() == state


async def test_a_desired_value_in_a_bulk_write_reaches_actuation(api: tuple[Node, Stub]) -> None:
    """The bulk path's record is written natively; the desired values it names still go to actuation."""
    node, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("a"), create("b")]))
    seen: list[tuple[str, list[str]]] = []

    async def on_writes(entries: object) -> None:
        seen.extend((e.twin, sorted(e.changes)) for e in entries)  # type: ignore[attr-defined]

    node.actuation.on_writes = on_writes  # type: ignore[method-assign]
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                api_pb2.TwinWrite(twin_id="a", ops=[desire("fan", f64=1.0), report("x", f64=2.0)]),
                api_pb2.TwinWrite(twin_id="b", ops=[api_pb2.FieldOp(field="n", increment=1)]),
            ]
        )
    )
    assert node.api.write_paths["bulk"] == 1
    assert seen == [("a", ["fan.desired"])]


@pytest.mark.parametrize(
    ("op", "code", "field"),
    [
        (api_pb2.FieldOp(field="tags", increment=1), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="n", add="x"), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="note", remove="x"), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="tags", add=""), "INVALID_ARGUMENT", "twins[1].ops[1].add"),
        (api_pb2.FieldOp(field="tags", add="e" * 2000), "INVALID_ARGUMENT", "twins[1].ops[1].add"),
        (api_pb2.FieldOp(field="big", increment=1), "INVALID_ARGUMENT", "twins[1].ops[1].increment"),
        (desire("sp", f64=float("nan")), "INVALID_ARGUMENT", "twins[1].ops[1].desire"),
        (desire("note", f64=1.0), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="x", increment=1), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="_n", increment=1), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="a.desired", add="x"), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="_n", clear_desired=True), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
        (api_pb2.FieldOp(field="a.desired", clear_desired=True), "INVALID_ARGUMENT", "twins[1].ops[1].field"),
    ],
)
async def test_a_bad_op_in_a_mixed_batch_gets_the_general_paths_error_and_changes_nothing(
    api: tuple[Node, Stub], op: api_pb2.FieldOp, code: str, field: str
) -> None:
    """Each op the bulk path takes, made bad one way after good ops of every kind: the general path's error
    naming it, and nothing applied."""
    node, stub = api
    held = [
        report("note", text="a"),
        report("x", f64=1.0),
        api_pb2.FieldOp(field="n", increment=1),
        api_pb2.FieldOp(field="big", increment=(1 << 63) - 1),
        api_pb2.FieldOp(field="tags", add="t"),
        desire("note", text="warm"),
    ]
    await stub.Write(api_pb2.WriteRequest(twins=[create("m-1", ops=held), create("m-2")]))
    before = node.store.encode_state()
    good = [report("x", f64=2.0), api_pb2.FieldOp(field="n", increment=1), desire("sp", f64=1.0)]
    request = api_pb2.WriteRequest(
        twins=[
            api_pb2.TwinWrite(twin_id="m-2", ops=[*good, api_pb2.FieldOp(field="tags", add="u")]),
            api_pb2.TwinWrite(twin_id="m-1", ops=[good[0], op, *good[1:]]),
        ]
    )
    assert isinstance(parse_write(request.SerializeToString()), BulkWrite)  # it is in the bulk shape
    error = await refused(stub, request)
    assert (error.code().name, trailer(error, FIELD_KEY)) == (code, field), error.details()
    assert node.store.encode_state() == before
    assert node.api.write_paths["bulk"] == 0


async def test_model_checks_hold_for_the_other_kinds_of_op(api: tuple[Node, Stub]) -> None:
    """A model's numeric field takes no set or counter op; its desired value needs a desirable kind and
    its valid range. What passes takes the bulk path."""
    node, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("room-1", "room"), create("room-2", "room")]))
    before = node.store.encode_state()
    for op, field in [
        (desire("temp_1", f64=20.0), "twins[1].ops[0].desire"),
        (desire("fan", f64=2.0), "twins[1].ops[0].desire"),
        (api_pb2.FieldOp(field="temp_1", increment=1), "twins[1].ops[0].field"),
        (api_pb2.FieldOp(field="fan", add="x"), "twins[1].ops[0].field"),
    ]:
        request = api_pb2.WriteRequest(
            twins=[numbers("room-2", temp_1=20.0), api_pb2.TwinWrite(twin_id="room-1", ops=[op])]
        )
        error = await refused(stub, request)
        assert (error.code().name, trailer(error, FIELD_KEY)) == ("INVALID_ARGUMENT", field), error.details()
    assert node.store.encode_state() == before
    ok = [desire("fan", f64=1.0), api_pb2.FieldOp(field="visits", increment=1)]
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[numbers("room-2", temp_1=20.0), api_pb2.TwinWrite(twin_id="room-1", ops=ok)]
        )
    )
    assert node.api.write_paths["bulk"] == 1
    got = await fields(stub, "room-1")
    assert (got["fan.desired"], got["visits"]) == ((1.0,), 1)


async def test_a_bulk_write_of_no_f64_report_at_all(api: tuple[Node, Stub]) -> None:
    node, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("a"), create("b")]))
    inc = api_pb2.FieldOp(field="n", increment=2)
    for twins in (["a", "b"], ["a"]):
        await stub.Write(
            api_pb2.WriteRequest(
                twins=[api_pb2.TwinWrite(twin_id=t, ops=[inc, desire("sp", f64=1.5)]) for t in twins]
            )
        )
    assert node.api.write_paths["bulk"] == 2
    assert [(await fields(stub, t))["n"] for t in ("a", "b")] == [4, 2]
    record = (await stub.ReadAudit(api_pb2.AuditRequest(twin_id="a"))).records[-1]
    assert {c.name for c in record.changes} == {"n"}  # the desired value did not change


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, 5),
        (3, -(2**63)),
        (frozenset({"a", "é", 'q"\\', "\n\x01", "\u2028"}), frozenset()),
        (None, frozenset({"z", "b"})),
        ((1.5,), (0.1, 2, 1e-7, 1e300)),
        (("warm",), (1.0,)),
        (True, b"\x00"),
    ],
)
def test_a_fields_change_is_written_as_json_writes_it(old: FieldValue | None, new: FieldValue) -> None:
    """The bulk path spells out the changes of counters, sets and numbers desired; anything else by json."""
    want = json.dumps(
        Change(new, old, True).to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert write_bulk._change_json(old, new) == want
