"""The Write method on a real node over its real gRPC API: every kind of op, validation against the store
and the twin's model (a bad request changes nothing), conditional writes, idempotency keys (also across a
restart), deleted twins, audit with the caller."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from drsdtp.api.errors import FIELD_KEY
from drsdtp.client import connect, field_to_python
from drsdtp.config import Address, NodeConfig, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

Stub = api_pb2_grpc.TwinApiStub


def config(tmp: pathlib.Path, **limits: object) -> NodeConfig:
    return parse_config(
        {
            "node_id": "write-1",
            "data_dir": str(tmp),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "twins": [{"match": "room-*", "model": "room"}],
            "limits": limits,
        }
    )


@pytest.fixture
async def api(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Node, Stub]]:
    async with Node(config(tmp_path)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            yield node, stub


def report(field: str, **value: object) -> api_pb2.FieldOp:
    return api_pb2.FieldOp(field=field, report=api_pb2.FieldValue(**value))  # type: ignore[arg-type]


def desire(field: str, **value: object) -> api_pb2.FieldOp:
    return api_pb2.FieldOp(field=field, desire=api_pb2.FieldValue(**value))  # type: ignore[arg-type]


def create(
    twin: str, model: str = "", ops: list[api_pb2.FieldOp] | None = None, **meta: str
) -> api_pb2.TwinWrite:
    return api_pb2.TwinWrite(
        twin_id=twin, create=api_pb2.CreateTwin(model=model, metadata=meta), ops=ops or []
    )


async def fields(stub: Stub, twin: str) -> dict[str, object]:
    got = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=twin))
    return {f.name: field_to_python(f) for f in got.fields}


async def refused(stub: Stub, request: api_pb2.WriteRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Write(request)
    return info.value


def trailer(error: grpc.aio.AioRpcError, key: str) -> str:
    return str(dict(error.trailing_metadata() or ()).get(key, ""))


async def test_every_kind_of_write_applies_and_reads_back(api: tuple[Node, Stub]) -> None:
    node, stub = api
    reply = await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                create("line-1", site="plant-7", owner="mes"),
                create(
                    "room-1",
                    model="room",
                    ops=[report("temp_1", f64=21.5), desire("fan", f64=1.0), report("note", text="manual")],
                ),
            ],
            actor="operator-anna",
            reason="commissioning",
        )
    )
    assert [t.twin_id for t in reply.twins] == ["line-1", "room-1"]
    assert all(t.version != 0 for t in reply.twins) and not reply.repeated
    ops = [
        api_pb2.FieldOp(field="tags", add="inspected"),
        api_pb2.FieldOp(field="tags", add="calibrated"),
        api_pb2.FieldOp(field="batches", increment=5),
        api_pb2.FieldOp(field="batches", increment=-2),
        report("order", i64=4711),
    ]
    await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="line-1", ops=ops)]))
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                api_pb2.TwinWrite(twin_id="line-1", ops=[api_pb2.FieldOp(field="tags", remove="inspected")])
            ]
        )
    )
    line = await fields(stub, "line-1")
    assert line["meta.site"] == "plant-7" and line["meta.owner"] == "mes"
    assert line["tags"] == ["calibrated"] and line["batches"] == 3 and line["order"] == 4711
    room = await fields(stub, "room-1")
    assert room["temp_1"] == 21.5 and room["fan.desired"] == (1.0,) and room["_model"] == "room"
    got = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="room-1"))
    assert got.version == node.store.context_digest("room-1")
    # Durable before the reply: the node's log holds every write.
    assert node.durable.pending == 0
    audit = await stub.ReadAudit(api_pb2.AuditRequest(twin_id="room-1"))
    assert [(r.action, r.actor, r.reason, r.via) for r in audit.records] == [
        ("create", "operator-anna", "commissioning", "api")
    ]
    assert {c.name for c in audit.records[0].changes} >= {"temp_1", "fan.desired", "_model"}
    assert audit.chain_ok


async def test_a_requests_set_and_counter_ops_apply_in_their_order_in_one_delta_per_field(
    api: tuple[Node, Stub],
) -> None:
    """Adds and removes of one set go in one store call (one delta), increments of one sign as their sum:
    the result is the ops' one by one, in request order, across re-adds, removes and other fields."""
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(twins=[create("bag-1", ops=[api_pb2.FieldOp(field="tags", add="a")])])
    )
    records = node.durable.stats.records
    kinds = ["add", "remove", "add", "add", "remove", "add", "remove", "add"]
    elements = ["b", "a", "c", "a", "b", "b", "c", "d"]
    ops = [
        api_pb2.FieldOp(field="tags", add=e) if k == "add" else api_pb2.FieldOp(field="tags", remove=e)
        for k, e in zip(kinds, elements, strict=True)
    ]
    ops[3:3] = [api_pb2.FieldOp(field="other", add="z"), api_pb2.FieldOp(field="n", increment=2)]
    ops += [api_pb2.FieldOp(field="n", increment=5), api_pb2.FieldOp(field="m", increment=(1 << 62))]
    ops += [api_pb2.FieldOp(field="m", increment=(1 << 62) - 1), api_pb2.FieldOp(field="k", increment=3)]
    ops += [api_pb2.FieldOp(field="k", increment=-4)]
    await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="bag-1", ops=ops)]))
    assert node.durable.stats.records == records + 1
    got = await fields(stub, "bag-1")
    assert (got["tags"], got["other"]) == (["a", "b", "d"], ["z"])
    assert (got["n"], got["m"], got["k"]) == (7, (1 << 63) - 1, -1)
    record = (await stub.ReadAudit(api_pb2.AuditRequest(twin_id="bag-1"))).records[-1]
    assert {c.name for c in record.changes} == {"tags", "other", "n", "m", "k"}


@pytest.mark.parametrize(
    ("op", "status", "field", "words"),
    [
        (report("temp_1", f64=float("nan")), "INVALID_ARGUMENT", "twins[0].ops[1].report", "not a finite"),
        (
            report("temp_1", f64=120.0),
            "INVALID_ARGUMENT",
            "twins[0].ops[1].report",
            "outside the valid range",
        ),
        (report("temp_1", text="warm"), "INVALID_ARGUMENT", "twins[0].ops[1].report", "is a number"),
        (desire("temp_1", f64=20.0), "INVALID_ARGUMENT", "twins[0].ops[1].desire", "measurement"),
        (desire("fan", f64=2.0), "INVALID_ARGUMENT", "twins[0].ops[1].desire", "outside the valid range"),
        (
            api_pb2.FieldOp(field="note", add="x"),
            "INVALID_ARGUMENT",
            "twins[0].ops[1].field",
            "is a register",
        ),
        (
            api_pb2.FieldOp(field="temp_1", increment=1),
            "INVALID_ARGUMENT",
            "twins[0].ops[1].field",
            "numeric",
        ),
        (report("note", f64=1.0), "INVALID_ARGUMENT", "twins[0].ops[1].field", "holds a text value"),
        (report("_scope", text="x"), "INVALID_ARGUMENT", "twins[0].ops[1].field", "reserved"),
        (api_pb2.FieldOp(field="x"), "INVALID_ARGUMENT", "twins[0].ops[1]", "no operation"),
        (report("x", counter=1), "INVALID_ARGUMENT", "twins[0].ops[1].report", "got counter"),
    ],
)
async def test_a_bad_op_anywhere_is_refused_naming_it_and_changes_nothing(
    api: tuple[Node, Stub], op: api_pb2.FieldOp, status: str, field: str, words: str
) -> None:
    node, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("room-1", "room", [report("note", text="a")])]))
    before = node.store.encode_state()
    records = node.durable.stats.records
    # The bad op comes second, after a good one on another twin: neither is applied.
    error = await refused(
        stub,
        api_pb2.WriteRequest(
            twins=[
                api_pb2.TwinWrite(twin_id="room-1", ops=[report("humidity", f64=40.0), op]),
                create("fresh"),
            ]
        ),
    )
    assert error.code().name == status, error.details()
    assert trailer(error, FIELD_KEY) == field and words in str(error.details()), error.details()
    assert str(error.details()).startswith("Write: ")
    assert node.store.encode_state() == before and "fresh" not in node.store
    assert node.durable.stats.records == records


async def test_unknown_twins_and_models_are_refused(api: tuple[Node, Stub]) -> None:
    _, stub = api
    missing = await refused(
        stub, api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="nope", ops=[report("x", f64=1)])])
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND and trailer(missing, FIELD_KEY) == "twins[0].twin_id"
    model = await refused(stub, api_pb2.WriteRequest(twins=[create("t", model="boiler")]))
    assert model.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown model 'boiler'" in str(
        model.details()
    )
    empty = await refused(stub, api_pb2.WriteRequest())
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and trailer(empty, FIELD_KEY) == "twins"


async def test_a_conditional_write_on_a_stale_version_is_refused_with_the_current_one(
    api: tuple[Node, Stub],
) -> None:
    node, stub = api
    first = await stub.Write(api_pb2.WriteRequest(twins=[create("t", ops=[report("v", i64=1)])]))
    seen = first.twins[0].version
    ok = await stub.Write(
        api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id="t", if_version=seen, ops=[report("v", i64=2)])]
        )
    )
    now = ok.twins[0].version
    assert now != seen
    stale = await refused(
        stub,
        api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id="t", if_version=seen, ops=[report("v", i64=3)])]
        ),
    )
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert trailer(stale, "drsdtp-version") == str(now) and f"at version {now}" in str(stale.details())
    assert node.store.get("t", "v") == 2
    exists = await refused(stub, api_pb2.WriteRequest(twins=[create("t")]))
    assert exists.code() == grpc.StatusCode.FAILED_PRECONDITION and "exists" in str(exists.details())


async def test_a_deleted_twin_neither_lists_nor_reads_until_created_again(api: tuple[Node, Stub]) -> None:
    _, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("t", ops=[report("v", i64=1)])]))
    await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="t", delete=True)]))
    assert "t" not in [s.twin_id for s in (await stub.ListTwins(api_pb2.ListTwinsRequest())).twins]
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetTwin(api_pb2.GetTwinRequest(twin_id="t"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    write = await refused(
        stub, api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="t", ops=[report("v", i64=2)])])
    )
    assert write.code() == grpc.StatusCode.NOT_FOUND
    await stub.Write(api_pb2.WriteRequest(twins=[create("t", ops=[report("v", i64=3)])]))
    assert (await fields(stub, "t"))["v"] == 3


async def test_an_idempotent_retry_is_applied_once_even_after_a_restart(tmp_path: pathlib.Path) -> None:
    request = api_pb2.WriteRequest(
        twins=[create("t", ops=[api_pb2.FieldOp(field="n", increment=1)])], idempotency_key="order-17"
    )
    again = api_pb2.WriteRequest(
        twins=[api_pb2.TwinWrite(twin_id="t", ops=[api_pb2.FieldOp(field="n", increment=1)])],
        idempotency_key="order-18",
    )
    async with Node(config(tmp_path)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            first = await stub.Write(request)
            retry = await stub.Write(request)
            assert retry.repeated and not first.repeated
            assert list(retry.twins) == list(first.twins)
            await stub.Write(again)
            await stub.Write(again)
            assert node.store.get("t", "n") == 2
            assert node.idempotency.repeats == 2 and len(node.idempotency) == 2
            other = api_pb2.WriteRequest(twins=[create("u")], idempotency_key="order-17")
            reused = await refused(stub, other)
            assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert trailer(reused, FIELD_KEY) == "idempotency_key"
    async with Node(config(tmp_path)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            after = await stub.Write(request)
            assert after.repeated and node.store.get("t", "n") == 2
            assert (await stub.Write(again)).repeated


async def test_idempotency_keys_are_bounded_in_count(tmp_path: pathlib.Path) -> None:
    async with Node(config(tmp_path, api_idempotency_keys=3)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            await stub.Write(api_pb2.WriteRequest(twins=[create("t")]))
            for i in range(40):
                op = api_pb2.TwinWrite(twin_id="t", ops=[api_pb2.FieldOp(field="n", increment=1)])
                await stub.Write(api_pb2.WriteRequest(twins=[op], idempotency_key=f"k{i}"))
            assert len(node.idempotency) == 3
            # Compacted on disk too: at most 2 x keys + 64 records, whatever was written.
            assert node.idempotency._on_file <= 2 * 3 + 64
            old = api_pb2.TwinWrite(twin_id="t", ops=[api_pb2.FieldOp(field="n", increment=1)])
            assert not (await stub.Write(api_pb2.WriteRequest(twins=[old], idempotency_key="k0"))).repeated
            assert (await stub.Write(api_pb2.WriteRequest(twins=[old], idempotency_key="k39"))).repeated
            assert node.store.get("t", "n") == 41


async def test_desired_writes_keep_one_intent_and_a_clear_removes_it(api: tuple[Node, Stub]) -> None:
    _, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("room-2", "room", [desire("heater", f64=0.5)])]))
    await stub.Write(
        api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="room-2", ops=[desire("heater", f64=0.8)])])
    )
    assert (await fields(stub, "room-2"))["heater.desired"] == (0.8,)  # saw the first: replaces it
    clear = api_pb2.FieldOp(field="heater", clear_desired=True)
    await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="room-2", ops=[clear])]))
    assert (await fields(stub, "room-2"))["heater.desired"] == ()


async def test_replicated_ack_without_enough_peers_says_so(api: tuple[Node, Stub]) -> None:
    node, stub = api
    error = await refused(
        stub,
        api_pb2.WriteRequest(twins=[create("t")], ack=api_pb2.ACK_REPLICATED, replicas=2),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and trailer(error, FIELD_KEY) == "replicas"
    assert "durable here" in str(error.details()) and "t" in node.store  # applied all the same


async def test_a_v1_client_reads_what_v2_writes(api: tuple[Node, Stub]) -> None:
    """The generated stubs of the API before v2, in a process that cannot import the project's own."""
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[create("room-9", "room", [report("temp_1", f64=19.5), desire("heater", f64=0.25)])]
        )
    )
    stub_dir = pathlib.Path(__file__).parent / "v1_stub"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(stub_dir / "v1_client.py"),
        f"127.0.0.1:{node.api.port}",
        "room-9",
        cwd=stub_dir,
        env={**os.environ, "PYTHONPATH": str(stub_dir)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen["node_id"] == "write-1" and seen["twins"] == ["room-9"]
    assert seen["fields"]["temp_1"] == 19.5 and seen["fields"]["heater.desired"] == [0.25]
    assert seen["watch"][:2] == ["snapshot", "room-9"] and seen["watch"][2]["temp_1"] == 19.5


async def test_a_remembered_write_the_log_lost_is_applied_again_on_start(tmp_path: pathlib.Path) -> None:
    """The key file holds each write's delta: should the log lose a write whose key was kept (a power cut
    between the two fsyncs), the start merges it again, so a key never stands for a write not applied."""
    request = api_pb2.WriteRequest(
        twins=[create("t", ops=[api_pb2.FieldOp(field="n", increment=7)])], idempotency_key="k"
    )
    async with Node(config(tmp_path)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            await stub.Write(request)
    for path in (tmp_path / "wal").iterdir():  # the log, as if its last commit never reached the disk
        path.unlink()
    keys = tmp_path / "api" / "idempotency"
    with keys.open("ab") as f:
        f.write(b"\x01\x02torn")  # and a torn record after the good one
    async with Node(config(tmp_path)) as node:
        assert node.idempotency.cut_bytes == 6
        assert node.store.get("t", "n") == 7
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            assert (await stub.Write(request)).repeated
        assert node.store.get("t", "n") == 7
    async with Node(config(tmp_path)) as node:  # and the log now holds it
        assert node.store.get("t", "n") == 7


def columns(twins: list[str], fields: list[str], rows: list[tuple[int, int, float]]) -> api_pb2.WriteRequest:
    return api_pb2.WriteRequest(
        columns=api_pb2.NumericColumns(
            twin_ids=twins,
            fields=fields,
            twin=[r[0] for r in rows],
            field=[r[1] for r in rows],
            values=[r[2] for r in rows],
        )
    )


async def test_a_columns_write_is_audited_per_twin_naming_the_fields_it_wrote(
    api: tuple[Node, Stub],
) -> None:
    """Columns are telemetry: each twin's record names the fields they wrote (a FieldChange with neither
    before nor after), the values are in the history; the chain verifies."""
    node, stub = api
    await stub.Write(api_pb2.WriteRequest(twins=[create("audited-1"), create("audited-2")]))
    # Names out of order and one listed twice (the same field), a twin listed twice, rows interleaved.
    twins, names = ["audited-2", "audited-1", "audited-2"], ["z", "a", "z", "m"]
    rows = [(0, 0, 1.0), (1, 1, 2.0), (2, 2, 3.0), (1, 3, 4.0), (0, 1, 5.0), (1, 1, 6.0)]
    await stub.Write(columns(twins, names, rows))
    got = {}
    for twin in ("audited-1", "audited-2"):
        reply = await stub.ReadAudit(api_pb2.AuditRequest(twin_id=twin))
        assert reply.chain_ok, list(reply.chain_problems)
        record = reply.records[-1]
        assert not any(c.HasField("before") or c.HasField("after") for c in record.changes)
        got[twin] = [c.name for c in record.changes]
    assert got == {"audited-1": ["a", "m"], "audited-2": ["a", "z"]}
    assert node.snapshots.audit.records(twin="audited-1")[-1].readings == ("a", "m")
    stored = await fields(stub, "audited-2")
    assert (stored["z"], stored["a"]) == (3.0, 5.0)  # the store agrees: the last row of a field wins


async def test_numeric_columns_write_in_bulk_and_refuse_a_bad_row_by_its_index(
    api: tuple[Node, Stub],
) -> None:
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(twins=[create("room-1", "room", [report("note", text="a")]), create("line")])
    )
    rows = [(t, f, float(10 * t + f)) for t in range(2) for f in range(2)] + [(0, 0, 33.0)]
    reply = await stub.Write(columns(["room-1", "line"], ["temp_1", "speed"], rows))
    assert {t.twin_id for t in reply.twins} == {"room-1", "line"}
    assert (await fields(stub, "room-1"))["temp_1"] == 33.0  # the last row of a field wins
    assert (await fields(stub, "line"))["speed"] == 11.0
    audit = await stub.ReadAudit(api_pb2.AuditRequest(twin_id="line"))
    assert {c.name for c in audit.records[-1].changes} == {"temp_1", "speed"}
    before = node.store.encode_state()
    cases = [
        (
            columns(["line"], ["x"], [(0, 0, 1.0), (0, 0, float("inf"))]),
            "INVALID_ARGUMENT",
            "columns.values[1]",
        ),
        (
            columns(["room-1"], ["temp_1"], [(0, 0, 20.0), (0, 0, 99.0)]),
            "INVALID_ARGUMENT",
            "columns.values[1]",
        ),
        (columns(["line", "ghost"], ["x"], [(1, 0, 1.0)]), "NOT_FOUND", "columns.twin_ids[1]"),
        (columns(["line"], ["x"], [(0, 3, 1.0)]), "INVALID_ARGUMENT", "columns.field[0]"),
        (
            columns(["room-1"], ["humidity", "note"], [(0, 0, 5.0), (0, 1, 1.0)]),
            "INVALID_ARGUMENT",
            "columns[1].field",
        ),
        (columns(["line"], ["_scope"], [(0, 0, 1.0)]), "INVALID_ARGUMENT", "columns.fields[0]"),
    ]
    for request, code, field in cases:
        error = await refused(stub, request)
        assert (error.code().name, trailer(error, FIELD_KEY)) == (code, field), error.details()
    assert node.store.encode_state() == before


async def test_numeric_reports_of_many_twins_apply_together_and_audit_what_they_changed(
    api: tuple[Node, Stub],
) -> None:
    """Twins whose ops all report f64s (one listed twice) take one batch write, in one commit, audited with
    what they changed."""
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                create("n-1", ops=[report("a", f64=1.0), report("b", f64=2.0)]),
                create("n-2", ops=[api_pb2.FieldOp(field="hits", increment=3)]),
                create("n-3"),
            ]
        )
    )
    records = node.durable.stats.records
    ops = [report("a", f64=1.0), report("b", f64=5.0), report("c", f64=7.0), report("c", f64=8.0)]
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                api_pb2.TwinWrite(twin_id="n-1", ops=ops),
                api_pb2.TwinWrite(twin_id="n-3", ops=[report("a", f64=3.0)]),
                api_pb2.TwinWrite(twin_id="n-3", ops=[report("b", f64=4.0)]),
                api_pb2.TwinWrite(twin_id="n-2", ops=[report("x", f64=9.0)]),
            ]
        )
    )
    assert node.durable.stats.records == records + 1  # one commit
    assert {k: v for k, v in (await fields(stub, "n-1")).items() if len(k) == 1} == {
        "a": 1.0,
        "b": 5.0,
        "c": 8.0,
    }
    assert {"a": 3.0, "b": 4.0}.items() <= (await fields(stub, "n-3")).items()
    assert (await fields(stub, "n-2"))["x"] == 9.0
    record = (await stub.ReadAudit(api_pb2.AuditRequest(twin_id="n-1"))).records[-1]
    changes = {
        c.name: (field_to_python(c.before) if c.HasField("before") else None, c.after.f64)
        for c in record.changes
    }
    assert changes == {"b": (2.0, 5.0), "c": (None, 8.0)}  # "a" kept its value: not a change
    # A numeric report to a field held as a counter is refused as the general path refuses it.
    error = await refused(
        stub, api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="n-2", ops=[report("hits", f64=1.0)])])
    )
    assert (error.code().name, trailer(error, FIELD_KEY)) == ("INVALID_ARGUMENT", "twins[0].ops[0].field")
