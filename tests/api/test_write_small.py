"""Small writes (drsdtp.api.write_small): a few f64 reports to one twin, checked in plain Python and applied
with one native call. The same write through the bulk path (drsdtp.api.write_bulk) on a store with the
same history and the same clock gives the same state, delta, version and audit; on a real node, a bad
small write gets the general path's error naming the field and changes nothing."""

from __future__ import annotations

import math

import pytest

from drsdtp._core import Store, decode_write
from drsdtp.api import write_bulk, write_small
from drsdtp.api.errors import FIELD_KEY
from drsdtp.api.write_bulk import BulkWrite, parse_write
from drsdtp.api.write_plan import Applied
from drsdtp.history.audit import Readings
from drsdtp.kernels import default_registry
from drsdtp.models import AssetModel, library_models
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.api.test_write import Stub, api, create, fields, refused, report, trailer  # noqa: F401

NOW_MS = 1_765_000_000_000


MODELS = {m.name: m for m in library_models(default_registry(plugins=False), check_kernels=False)}


def models(name: str) -> AssetModel | None:
    return MODELS.get(name)


def store_with_history() -> Store:
    store = Store(7)
    store.set_manual_time(NOW_MS)
    store.set_many("t", {"x": 1.0, "y": 2.0, "note": "text"})
    store.set_many("room-1", {"_model": "room", "temp_1": 20.0})
    store.increment("t", "n", 1)
    return store


def one_twin(twin: str, *rows: tuple[str, float], if_version: int | None = None) -> api_pb2.WriteRequest:
    return api_pb2.WriteRequest(
        twins=[
            api_pb2.TwinWrite(
                twin_id=twin, ops=[report(name, f64=value) for name, value in rows], if_version=if_version
            )
        ],
        actor="app",
        reason="small",
    )


CASES = [
    pytest.param(one_twin("t", ("x", 5.0)), id="overwrite"),
    pytest.param(one_twin("t", ("x", 1.0)), id="unchanged"),
    pytest.param(one_twin("t", ("new", -0.5)), id="new-field"),
    pytest.param(one_twin("t", ("y", 3.0), ("x", 4.0), ("y", 2.0), ("z", 9.0)), id="a-name-twice"),
    pytest.param(one_twin("room-1", ("temp_1", 21.5), ("other", 1e300)), id="model-in-range"),
    pytest.param(one_twin("t", *((f"f{k:02}", k / 3) for k in range(write_small.MAX_ROWS))), id="most-rows"),
]


@pytest.mark.parametrize("request_", CASES)
def test_a_small_write_gives_the_bulk_paths_state_delta_and_audit(request_: api_pb2.WriteRequest) -> None:
    body = request_.SerializeToString()
    assert parse_write(body) == request_  # the deserializer hands it to the small path
    small_store, bulk_store = store_with_history(), store_with_history()
    assert small_store.encode_state() == bulk_store.encode_state()

    small = write_small.plan(small_store, request_, models, 1024)
    assert small is not None
    by_small = Applied()
    assert write_small.apply(small_store, small, by_small)

    cols = decode_write(body)
    assert not isinstance(cols, str)
    planned = write_bulk.plan(bulk_store, BulkWrite(cols, body), models, 1024)
    assert planned is not None
    by_bulk = Applied()
    assert write_bulk.apply(bulk_store, planned, by_bulk) is None

    assert small_store.encode_state() == bulk_store.encode_state()
    assert by_small.deltas == by_bulk.deltas
    assert (by_small.versions, by_small.actions) == (by_bulk.versions, by_bulk.actions)
    assert by_small.extra_twins == by_bulk.extra_twins and by_bulk.record is None
    assert by_small.changes.keys() == by_bulk.changes.keys()
    for twin, changes in by_small.changes.items():
        want = by_bulk.changes[twin]
        assert isinstance(changes, Readings) and isinstance(want, Readings)
        assert (dict(changes), changes.canonical()) == (dict(want), want.canonical())
    twin = request_.twins[0].twin_id
    assert by_small.versions[twin] == small_store.context_digest(twin)


def test_requests_of_another_shape_are_not_small() -> None:
    store = store_with_history()
    too_many = one_twin("t", *((f"f{k}", 1.0) for k in range(write_small.MAX_ROWS + 1)))
    two = one_twin("t", ("x", 1.0))
    two.twins.append(api_pb2.TwinWrite(twin_id="room-1", ops=[report("temp_1", f64=20.0)]))
    keyed = one_twin("t", ("x", 1.0))
    keyed.idempotency_key = "k"
    text = one_twin("t")
    text.twins[0].ops.append(report("note", text="b"))
    for request in (too_many, two, keyed, text, api_pb2.WriteRequest(twins=[create("c")])):
        assert not write_small.is_small(request)
        assert write_small.plan(store, request, models, 1024) is None
    assert isinstance(parse_write(too_many.SerializeToString()), BulkWrite)


def test_a_field_held_as_something_else_writes_nothing() -> None:
    """The plan does not read the fields; the native call finds a counter (or text) and writes nothing."""
    store = store_with_history()
    before = store.encode_state()
    for name in ("n", "note"):
        small = write_small.plan(store, one_twin("t", ("x", 3.0), (name, 1.0)), models, 1024)
        assert small is not None
        out = Applied()
        assert not write_small.apply(store, small, out)
        assert out.deltas == [] and out.changes == {}
    assert store.encode_state() == before


async def test_a_bad_small_write_is_refused_naming_the_field_and_changes_nothing(
    api: tuple[Node, Stub],  # noqa: F811  (the fixture of tests/api/test_write.py)
) -> None:
    node, stub = api
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[
                create("room-1", "room", [report("temp_1", f64=20.0)]),
                create("m-1", ops=[report("x", f64=1.0), report("note", text="a")]),
                create("gone"),
            ]
        )
    )
    await stub.Write(
        api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id="m-1", ops=[api_pb2.FieldOp(field="n", increment=1)])]
        )
    )
    await stub.Write(api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id="gone", delete=True)]))
    version = node.store.context_digest("m-1")
    assert version is not None
    before = node.store.encode_state()
    paths = dict(node.api.write_paths)
    cases = [
        (one_twin("m-1", ("x", math.nan)), "INVALID_ARGUMENT", "twins[0].ops[0].report"),
        (one_twin("m-1", ("x", 1.0), ("y", -math.inf)), "INVALID_ARGUMENT", "twins[0].ops[1].report"),
        (one_twin("ghost", ("x", 1.0)), "NOT_FOUND", "twins[0].twin_id"),
        (one_twin("gone", ("x", 1.0)), "NOT_FOUND", "twins[0].twin_id"),
        (one_twin("_node", ("x", 1.0)), "INVALID_ARGUMENT", "twins[0].twin_id"),
        (one_twin("m-1", ("_x", 1.0)), "INVALID_ARGUMENT", "twins[0].ops[0].field"),
        (one_twin("m-1", ("x.desired", 1.0)), "INVALID_ARGUMENT", "twins[0].ops[0].field"),
        (one_twin("m-1", ("", 1.0)), "INVALID_ARGUMENT", "twins[0].ops[0].field"),
        (one_twin("m-1", ("x", 2.0), ("n", 2.0)), "INVALID_ARGUMENT", "twins[0].ops[1].field"),
        (one_twin("m-1", ("note", 2.0)), "INVALID_ARGUMENT", "twins[0].ops[0].field"),
        (one_twin("room-1", ("temp_1", 99.0)), "INVALID_ARGUMENT", "twins[0].ops[0].report"),
        (one_twin("m-1", ("x", 2.0), if_version=version + 1), "FAILED_PRECONDITION", "twins[0].if_version"),
    ]
    for request, code, field in cases:
        error = await refused(stub, request)
        assert (error.code().name, trailer(error, FIELD_KEY)) == (code, field), error.details()
    assert node.store.encode_state() == before
    assert node.api.write_paths.get("small", 0) == paths.get("small", 0)
    # A good one applies through the small path, durable before the reply, audited with its caller.
    reply = await stub.Write(one_twin("m-1", ("x", 2.0), if_version=version))
    assert node.api.write_paths["small"] == paths.get("small", 0) + 1
    assert [(t.twin_id, t.version) for t in reply.twins] == [("m-1", node.store.context_digest("m-1"))]
    assert (await fields(stub, "m-1"))["x"] == 2.0 and node.durable.pending == 0
    record = (await stub.ReadAudit(api_pb2.AuditRequest(twin_id="m-1"))).records[-1]
    assert (record.actor, record.reason, record.action) == ("app", "small", "write")
    assert [(c.name, c.before.f64, c.after.f64) for c in record.changes] == [("x", 1.0, 2.0)]
