"""The write path and Watch resume with real node processes: writes read on the peers, replicated acks,
a desired conflict made in a partition, a stale conditional write, an idempotent retry across SIGKILL, and
a Watch resumed across restarts without a gap."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest

from drsdtp.client import field_to_python
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode, Cluster, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def trio(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, ["a", "b", "c"])
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def solo(tmp_path: pathlib.Path) -> AsyncIterator[ApiNode]:
    node = ApiNode("solo", tmp_path)
    node.configure({})
    try:
        await node.start()
        yield node
    finally:
        node.stop()


def values(twin: api_pb2.Twin | None) -> dict[str, object]:
    return {} if twin is None else {f.name: field_to_python(f) for f in twin.fields}


def write(twin: str, *ops: api_pb2.FieldOp, **kw: object) -> api_pb2.WriteRequest:
    return api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=twin, ops=list(ops))], **kw)  # type: ignore[arg-type]


def report(field: str, value: float) -> api_pb2.FieldOp:
    return api_pb2.FieldOp(field=field, report=api_pb2.FieldValue(f64=value))


def desire(field: str, value: float) -> api_pb2.FieldOp:
    return api_pb2.FieldOp(field=field, desire=api_pb2.FieldValue(f64=value))


def create(twin: str, *ops: api_pb2.FieldOp, **kw: object) -> api_pb2.WriteRequest:
    tw = api_pb2.TwinWrite(twin_id=twin, create=api_pb2.CreateTwin(), ops=list(ops))
    return api_pb2.WriteRequest(twins=[tw], **kw)  # type: ignore[arg-type]


async def test_a_write_acknowledged_as_replicated_reads_on_its_peers(trio: Cluster) -> None:
    a, b, c = trio.nodes["a"], trio.nodes["b"], trio.nodes["c"]
    async with a.stub() as stub:
        await eventually(lambda: _peers_up(stub, 2), 60, "a connected to both peers")
        reply = await stub.Write(
            create("room-1", report("temp_1", 20.5), ack=api_pb2.ACK_REPLICATED, replicas=2), timeout=30
        )
    assert reply.replicated == 2
    # Acknowledged by both peers means durable (so merged) on both: no waiting needed to read it there.
    for peer in (b, c):
        got = await peer.get("room-1")
        assert values(got)["temp_1"] == 20.5 and got is not None and got.version == reply.twins[0].version

    # The replication probes: each peer's clock offset measured (one machine: one clock) and its state
    # digest found equal to a's once both hold the same twins.
    async def probed() -> bool:
        peers = (await a.call("Status", api_pb2.StatusRequest())).peers
        return len(peers) == 2 and all(p.HasField("clock_offset_s") and p.digest_equal for p in peers)

    await eventually(probed, 30, "a probed both peers")
    for p in (await a.call("Status", api_pb2.StatusRequest())).peers:
        assert abs(p.clock_offset_s) < 0.05 and p.round_trip_s >= 0, p
        assert p.digest_equal_age_s <= p.digest_checked_age_s + 1e-9 < 10, p

    trio.cut("a", "b")
    trio.cut("a", "c")
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await a.call(
            "Write",
            write("room-1", report("temp_1", 22.0), ack=api_pb2.ACK_REPLICATED, replicate_timeout_ms=500),
        )
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "durable here, replicated to 0 of 1 peers" in str(late.value.details())
    assert values(await a.get("room-1"))["temp_1"] == 22.0  # the write stays applied
    trio.heal("a", "b")
    trio.heal("a", "c")

    async def everywhere() -> bool:
        return all([values(await n.get("room-1")).get("temp_1") == 22.0 for n in (b, c)])

    await eventually(everywhere, 60, "the late write reached both peers after the heal")


async def _peers_up(stub: object, n: int) -> bool:
    status = await stub.Status(api_pb2.StatusRequest())  # type: ignore[attr-defined]
    return sum(p.up for p in status.peers) >= n  # type: ignore[no-any-return]


async def test_a_desired_conflict_from_a_partition_shows_after_the_heal_until_a_later_write(
    trio: Cluster,
) -> None:
    a, b = trio.nodes["a"], trio.nodes["b"]
    async with a.stub() as stub:
        await eventually(lambda: _peers_up(stub, 2), 60, "a connected to both peers")
        await stub.Write(create("room-2", ack=api_pb2.ACK_REPLICATED, replicas=2), timeout=30)
    trio.cut("a", "b")
    trio.cut("a", "c")
    await a.call("Write", write("room-2", desire("heater", 0.2), actor="anna"))
    await b.call("Write", write("room-2", desire("heater", 0.7), actor="ben"))
    trio.heal("a", "b")
    trio.heal("a", "c")

    async def conflict_everywhere() -> bool:
        seen = [values(await n.get("room-2")).get("heater.desired") for n in trio.nodes.values()]
        return all(isinstance(v, tuple) and sorted(v) == [0.2, 0.7] for v in seen)

    await eventually(conflict_everywhere, 60, "every node shows both intents")
    twin = await a.get("room-2")
    assert twin is not None
    field = next(f for f in twin.fields if f.name == "heater.desired")
    status = {n: await node.call("Status", api_pb2.StatusRequest()) for n, node in trio.nodes.items()}
    writers = {v.writer for v in field.desired.values}
    assert writers == {status["a"].replica_id, status["b"].replica_id}
    assert {v.writer_node for v in field.desired.values} == {"node-a", "node-b"}
    assert all(v.stamp > 0 for v in field.desired.values)  # each sibling's time
    # A later write that saw both resolves the conflict everywhere.
    await b.call("Write", write("room-2", desire("heater", 0.5)))

    async def resolved() -> bool:
        return all(
            [values(await n.get("room-2")).get("heater.desired") == (0.5,) for n in trio.nodes.values()]
        )

    await eventually(resolved, 60, "the later write replaced both intents on every node")


async def test_a_conditional_write_with_a_version_a_peer_made_stale_is_refused(trio: Cluster) -> None:
    a, b = trio.nodes["a"], trio.nodes["b"]
    async with a.stub() as stub:
        await eventually(lambda: _peers_up(stub, 2), 60, "a connected to both peers")
        await stub.Write(create("t", report("v", 1), ack=api_pb2.ACK_REPLICATED, replicas=2), timeout=30)
    seen = await b.get("t")
    assert seen is not None
    newer = await a.call("Write", write("t", report("v", 2), ack=api_pb2.ACK_REPLICATED, replicas=2))
    stale = api_pb2.WriteRequest(
        twins=[api_pb2.TwinWrite(twin_id="t", if_version=seen.version, ops=[report("v", 3)])]
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.call("Write", stale)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"at version {newer.twins[0].version}" in str(refused.value.details())
    assert values(await b.get("t"))["v"] == 2


async def test_an_idempotent_retry_after_sigkill_is_applied_once(solo: ApiNode) -> None:
    await solo.call("Write", create("t"))
    bump = write("t", api_pb2.FieldOp(field="n", increment=1), idempotency_key="pay-42")
    first = await solo.call("Write", bump)
    solo.kill()  # the reply came back: the write and its key are on disk
    await solo.start()
    retry = await solo.call("Write", bump)
    assert retry.repeated and list(retry.twins) == list(first.twins)
    assert values(await solo.get("t"))["n"] == 1


async def _watch_until(node: ApiNode, request: api_pb2.WatchRequest, want: set[str]) -> dict[str, int]:
    """Reads a Watch until every twin in ``want`` was sent; returns twin -> cursor of what was sent."""
    got: dict[str, int] = {}
    async with node.stub() as stub:
        call = stub.Watch(request, timeout=30)
        async for change in call:
            got[change.twin.twin_id] = change.cursor
            if want <= got.keys():
                call.cancel()
                break
    return got


@pytest.mark.parametrize("restart", ["clean", "sigkill"])
async def test_watch_resumes_after_a_node_restart_without_a_gap(solo: ApiNode, restart: str) -> None:
    # Many twins first, so the cursor is far into the feed: a feed renumbered from 1 after a restart (a
    # counter, not the HLC) would put a twin changed later below it, and the resume would skip that twin.
    noise = [api_pb2.TwinWrite(twin_id=f"noise-{i}", create=api_pb2.CreateTwin()) for i in range(300)]
    await solo.call("Write", api_pb2.WriteRequest(twins=noise))
    await solo.call("Write", create("before"))
    seen = await _watch_until(solo, api_pb2.WatchRequest(prefix="before"), {"before"})
    cursor = seen["before"]
    assert cursor > 0  # the snapshot's last message says where to resume
    await solo.call("Write", create("a-while-away"))  # nobody watching
    if restart == "clean":
        solo.stop()
    else:
        solo.kill()
    await solo.start()
    await solo.call("Write", create("after"))
    resumed = await _watch_until(solo, api_pb2.WatchRequest(resume_after=cursor), {"a-while-away", "after"})
    assert {"a-while-away", "after"} <= resumed.keys()
    assert all(c > cursor for c in resumed.values())
    if restart == "clean":
        assert "before" not in resumed  # unchanged since the cursor: not sent again
    # Origin and field filters.
    await solo.call("Write", write("after", report("x", 1.0)))
    only = await _watch_until(
        solo, api_pb2.WatchRequest(resume_after=cursor, fields=["x"], origins=["local"]), {"after"}
    )
    assert set(only) == {"after"}


async def _read_changes(call: object, n: int) -> list[api_pb2.TwinChange]:
    """The next ``n`` changes of a Watch call, each message's ``changes`` (or the message itself)."""
    got: list[api_pb2.TwinChange] = []
    while len(got) < n:
        message = await call.read()  # type: ignore[attr-defined]
        assert not (message.changes and message.HasField("twin")), "a batch leaves its own fields unset"
        got += list(message.changes) or [message]
    return got


async def test_watch_sends_many_changes_a_message_and_resumes_from_any_of_them(solo: ApiNode) -> None:
    twins = [f"batch-{i:03d}" for i in range(150)]
    made = [api_pb2.TwinWrite(twin_id=t, create=api_pb2.CreateTwin(), ops=[report("x", 1.0)]) for t in twins]
    await solo.call("Write", api_pb2.WriteRequest(twins=made))
    async with solo.stub() as stub:
        batched = stub.Watch(api_pb2.WatchRequest(prefix="batch-", fields=["x"], max_changes=64), timeout=30)
        v1 = stub.Watch(api_pb2.WatchRequest(prefix="batch-", fields=["x"]), timeout=30)
        sizes: list[int] = []
        snapshot: list[api_pb2.TwinChange] = []
        while len(snapshot) < len(twins):
            message = await batched.read()
            sizes.append(len(message.changes) or 1)
            snapshot += list(message.changes) or [message]
        assert sizes == [64, 64, 22]  # the snapshot in id order, 64 twins a message at most
        assert [c.twin.twin_id for c in snapshot] == twins
        assert all(c.origin == "snapshot" for c in snapshot)
        assert snapshot[-1].cursor > 0 and not any(c.cursor for c in snapshot[:-1])
        # A request without max_changes (a v1 reader) gets one change a message, in the message's own fields.
        for twin in twins:
            message = await v1.read()
            assert not message.changes and message.twin.twin_id == twin
        # One write of 100 twins: each change once, in feed order, each with its own cursor.
        bump = [api_pb2.TwinWrite(twin_id=t, ops=[report("x", 2.0)]) for t in twins[:100]]
        await solo.call("Write", api_pb2.WriteRequest(twins=bump))
        changed = await _read_changes(batched, 100)
        assert [c.twin.twin_id for c in changed] == twins[:100]
        assert all(c.origin == "local" and values(c.twin) == {"x": 2.0} for c in changed)
        cursors = [c.cursor for c in changed]
        assert cursors == sorted(set(cursors)) and cursors[0] > snapshot[-1].cursor
        batched.cancel()
        v1.cancel()
        # Resumed after a change in the middle of a message: exactly the twins changed after it.
        await solo.call("Write", write(twins[140], report("x", 3.0)))
        resumed = stub.Watch(api_pb2.WatchRequest(resume_after=cursors[49], max_changes=64), timeout=30)
        again = await _read_changes(resumed, 51)
        resumed.cancel()
    assert [c.twin.twin_id for c in again] == [*twins[50:100], twins[140]]
