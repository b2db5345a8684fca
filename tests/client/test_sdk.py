"""The SDK against a real node process: typed results, the error tree (with the field at fault and the
current version of a conflict), conditional and idempotent writes, every kind of op, and watch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from drsdtp.client import (
    AsyncClient,
    Client,
    Columns,
    ConflictError,
    Create,
    InvalidArgumentError,
    NotFoundError,
    SnapshotInfo,
    Status,
    Twin,
    TwinWrite,
    UnavailableError,
    add,
    clear_desired,
    desire,
    increment,
    new_idempotency_key,
    remove,
    report,
)
from drsdtp.errors import DrsdtpError, PreconditionError, UnknownTwinError
from tests.ingest.support import free_port


@pytest.fixture(scope="module")
def client(target: str) -> Iterator[Client]:
    with Client(target, timeout=10, actor="sdk-test") as c:
        yield c


def test_reads_are_typed_frozen_dataclasses(client: Client) -> None:
    client.create("room-typed", model="room", values={"temp_1": 21.5}, metadata={"site": "lab"})
    twin = client.get("room-typed")
    assert isinstance(twin, Twin) and twin.version != 0
    assert twin["temp_1"] == 21.5 and twin.fields["temp_1"].kind == "f64"
    assert twin["meta.site"] == "lab" and twin["_model"] == "room"
    assert twin.fields["temp_1"].writer_node == "node-sdk" and twin.fields["temp_1"].time_ms > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        twin.version = 1  # type: ignore[misc]
    status = client.status()
    assert isinstance(status, Status) and status.node_id == "node-sdk" and status.ready
    listing = client.list_twins(prefix="room-typed")
    assert [t.twin_id for t in listing.twins] == ["room-typed"] and listing.twins[0].version == twin.version


def test_every_kind_of_op_in_one_batch(client: Client) -> None:
    client.create("room-ops", model="room")
    client.create("bag-ops")
    result = client.write(
        [
            TwinWrite("room-ops", (report("temp_1", 20.0), desire("heater", 1.0), desire("fan", 0.5))),
            TwinWrite("bag-ops", (add("tags", "a"), add("tags", "b"), increment("count", 5))),
        ]
    )
    assert set(result.versions) == {"room-ops", "bag-ops"}
    client.write([TwinWrite("bag-ops", (remove("tags", "a"), increment("count", -2)))])
    client.write([TwinWrite("room-ops", (clear_desired("fan"),))])
    room, bag = client.get("room-ops"), client.get("bag-ops")
    assert room["temp_1"] == 20.0 and room.desired("heater") == (1.0,) and room.desired("fan") == ()
    assert bag["tags"] == ("b",) and bag["count"] == 3
    assert room.version != result.versions["room-ops"]  # the clear was a write too


def test_a_missing_twin_is_not_found_in_every_form(client: Client) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get("room-nowhere")
    error = info.value
    assert isinstance(error, KeyError | UnknownTwinError | DrsdtpError)
    assert "room-nowhere" in str(error) and "NOT_FOUND" in str(error)
    with pytest.raises(NotFoundError) as write_info:
        client.report("room-nowhere", {"temp_1": 1.0})
    assert write_info.value.field == "twins[0].twin_id"


def test_a_bad_value_names_its_field_and_changes_nothing(client: Client) -> None:
    client.create("room-bad", model="room", values={"temp_1": 20.0})
    before = client.get("room-bad")
    with pytest.raises(InvalidArgumentError) as info:
        client.write([TwinWrite("room-bad", (report("humidity", 50.0), report("temp_1", 500.0)))])
    assert info.value.field == "twins[0].ops[1].report" and isinstance(info.value, ValueError)
    assert "valid range" in str(info.value)
    assert client.get("room-bad") == before  # the valid op of the batch was not applied either
    with pytest.raises(ValueError, match="finite"):  # refused before it is sent
        client.report("room-bad", {"temp_1": float("nan")})


def test_a_stale_conditional_write_is_refused_with_the_current_version(client: Client) -> None:
    client.create("room-cond", model="room", values={"temp_1": 20.0})
    seen = client.get("room-cond").version
    newer = client.report("room-cond", {"temp_1": 21.0}, if_version=seen)
    with pytest.raises(ConflictError) as info:
        client.report("room-cond", {"temp_1": 22.0}, if_version=seen)
    assert isinstance(info.value, PreconditionError)
    assert info.value.current_version == newer and info.value.field == "twins[0].if_version"
    assert client.get("room-cond")["temp_1"] == 21.0
    client.report("room-cond", {"temp_1": 22.0}, if_version=info.value.current_version)
    assert client.get("room-cond")["temp_1"] == 22.0
    with pytest.raises(ConflictError) as exists:
        client.create("room-cond")
    assert exists.value.current_version == client.get("room-cond").version


def test_an_idempotent_retry_is_applied_once(client: Client) -> None:
    client.create("bag-idem")
    key = new_idempotency_key()
    first = client.write([TwinWrite("bag-idem", (increment("n", 1),))], idempotency_key=key)
    again = client.write([TwinWrite("bag-idem", (increment("n", 1),))], idempotency_key=key)
    assert (first.repeated, again.repeated) == (False, True) and first.versions == again.versions
    assert client.get("bag-idem")["n"] == 1


def test_create_and_delete(client: Client) -> None:
    version = client.create("room-gone", model="room", scope="", values={"humidity": 40.0})
    assert client.get("room-gone").version == version
    client.delete("room-gone", if_version=version)
    with pytest.raises(NotFoundError):
        client.get("room-gone")
    assert "room-gone" not in {t.twin_id for t in client.list_twins(prefix="room-gone").twins}


def test_columns_write_many_readings_at_once(client: Client) -> None:
    client.write([TwinWrite(f"room-col-{i}", create=Create("room")) for i in range(3)])
    rows = [(f"room-col-{i}", "temp_2", 10.0 + i) for i in range(3)] * 4
    result = client.write([], columns=Columns.from_rows(rows))
    assert set(result.versions) == {f"room-col-{i}" for i in range(3)}
    assert [client.get(f"room-col-{i}")["temp_2"] for i in range(3)] == [10.0, 11.0, 12.0]


async def test_async_client_and_watch_see_a_write(target: str) -> None:
    async with AsyncClient(target, timeout=10) as client:
        await client.create("room-watched", model="room", values={"temp_1": 18.0})
        async with client.watch(["room-watched"], fields=["temp_1"]) as watch:
            seen = []
            async for change in watch:
                seen.append((change.origin, change.twin["temp_1"]))
                if change.origin == "snapshot":
                    assert change.cursor != 0  # the last (only) snapshot message says where to resume
                    await client.report("room-watched", {"temp_1": 18.5})
                else:
                    break
        assert seen == [("snapshot", 18.0), ("local", 18.5)]
        assert watch.cursor is not None and watch.cursor > 0


def test_blocking_watch_resumes_from_a_cursor(client: Client) -> None:
    client.create("room-cursor", model="room", values={"temp_1": 1.0})
    with client.watch(["room-cursor"]) as watch:
        first = next(watch)
    assert first.origin == "snapshot" and watch.cursor
    client.report("room-cursor", {"temp_1": 2.0})
    with client.watch(["room-cursor"], since=watch.cursor) as resumed:
        change = next(resumed)
    assert change.origin == "local" and change.twin["temp_1"] == 2.0


def test_a_blocking_watch_takes_what_arrived_at_once_and_its_cursor_follows_what_it_handed_out(
    client: Client,
) -> None:
    """A blocking watch takes every change already received in one hop to its loop: its cursor is still
    that of the last change handed out, so a resume from it gets the ones not yet read."""
    twins = [f"room-syncwatch-{i}" for i in range(6)]
    for twin in twins:
        client.create(twin, values={"v": 0.0})
    with client.watch(twins, fields=["v"]) as watch:
        assert {next(watch).twin.twin_id for _ in twins} == set(twins)  # the snapshot: the stream is open
        for twin in twins:
            client.report(twin, {"v": 1.0})
        first, second = next(watch), next(watch)
        assert [first.origin, second.origin] == ["local", "local"]
        assert watch.cursor == second.cursor and second.cursor > first.cursor
        rest = [next(watch) for _ in range(len(twins) - 2)]
    read = [first.twin.twin_id, second.twin.twin_id, *(c.twin.twin_id for c in rest)]
    assert sorted(read) == sorted(twins) and [c.twin.get("v") for c in rest] == [1.0] * len(rest)
    with client.watch(twins, fields=["v"], since=second.cursor) as resumed:
        again = {next(resumed).twin.twin_id for _ in rest}
    assert again == {c.twin.twin_id for c in rest}


def test_a_stopped_node_is_unavailable_saying_what_to_check() -> None:
    with Client(f"127.0.0.1:{free_port()}", timeout=2) as client, pytest.raises(UnavailableError) as info:
        client.status()
    assert isinstance(info.value, ConnectionError)
    assert "UNAVAILABLE" in str(info.value) and "is the node running" in str(info.value)


def test_a_new_watch_starts_with_a_snapshot_after_another_saw_the_change(client: Client) -> None:
    """The node encodes a change once for every stream: the snapshot that a later stream gets, at the same
    position, must still say "snapshot" (it once said "local", the cached origin of the other stream)."""
    client.create("room-snap", model="room", values={"temp_1": 5.0})
    with client.watch(["room-snap"]) as first:
        assert next(first).origin == "snapshot"
        client.report("room-snap", {"temp_1": 6.0})
        change = next(first)
    assert change.origin == "local"
    with client.watch(["room-snap"]) as second:
        again = next(second)
    assert (again.origin, again.cursor, again.twin["temp_1"]) == ("snapshot", change.cursor, 6.0)


def test_snapshot_rollback_and_audit_are_typed(client: Client) -> None:
    client.create("room-snapshot", model="room", values={"temp_1": 20.0})
    taken = client.snapshot("room-snapshot", "before the test change")
    assert isinstance(taken, SnapshotInfo) and taken.twin_id == "room-snapshot" and len(taken.sha256) == 64
    assert taken.actor == "sdk-test" and taken.reason == "before the test change"
    client.report("room-snapshot", {"temp_1": 25.0, "humidity": 50.0})
    assert [s.id for s in client.snapshots("room-snapshot")] == [taken.id]
    undone = client.rollback("room-snapshot", taken.id, "the change was wrong")
    assert [(c.name, c.before, c.after) for c in undone.changed] == [("temp_1", 25.0, 20.0)]
    assert undone.extra_fields == ("humidity",) and undone.safety_snapshot is not None
    assert client.get("room-snapshot")["temp_1"] == 20.0
    audit = client.audit("room-snapshot")
    assert audit.chain_ok and audit.problems == ()
    actions = [r.action for r in audit.records]
    assert "snapshot" in actions and actions[-1] == "rollback" and audit.records[-1].actor == "sdk-test"
    with pytest.raises(NotFoundError):
        client.rollback("room-snapshot", "1700000000000-00000000", "no such snapshot")
