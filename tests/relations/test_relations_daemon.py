"""Relations with real ``drsdtp run`` processes: declared in one node's config and written over its API,
queried on a peer that only replicates them (tree, relation, values, health), and used by the anomaly log
(the twins an event may affect; a related sensor that saw nothing makes it a sensor suspect)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterator

import grpc
import pytest

from drsdtp.wire.v1 import api_pb2
from tests.daemon.model_nodes import NodeProcess, drsdtp, eventually, stuck_rooms_toml

SPEED = 20

RELATIONS = """
[[relations]]
twin = "site/hall-1"
relation = "located_in"
target = "site"
[[relations]]
twin = "a/room-1"
relation = "located_in"
target = "site/hall-1"
[[relations]]
twin = "a/room-2"
relation = "located_in"
target = "site/hall-1"
[[relations]]
twin = "a/room-1"
relation = "feeds"
target = "a/room-2"
"""

ROOMS = stuck_rooms_toml(SPEED, extra=RELATIONS)


def peer(node: NodeProcess) -> str:
    return f'[[peers]]\nname = "{node.name}"\naddress = "127.0.0.1:{node.peer_port}"\n'


@pytest.fixture
def pair(tmp_path: pathlib.Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    origin = NodeProcess(tmp_path, "edge-a", "")
    replica = NodeProcess(tmp_path, "edge-b", "")
    origin.write(ROOMS + peer(replica))
    replica.write(f"[intelligence]\ntime_scale = {SPEED}\n" + peer(origin))
    try:
        yield origin, replica
    finally:
        origin.stop()
        replica.stop()


async def query(node: NodeProcess, **kw: object) -> list[str]:
    try:
        reply = await node.call("Query", api_pb2.QueryRequest(**kw))  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return []
        raise
    return [h.twin_id for h in reply.twins]


def cli(node: NodeProcess, *args: str) -> asyncio.Future[object]:
    return asyncio.ensure_future(asyncio.to_thread(drsdtp, *args, "--api", f"127.0.0.1:{node.api_port}"))


@pytest.mark.integration
async def test_relations_written_on_one_node_are_queried_on_its_peer(
    pair: tuple[NodeProcess, NodeProcess],
) -> None:
    origin, replica = pair
    origin.start()
    replica.start()

    # declared on the origin, replicated: the replica answers from its own state
    async def under_site() -> list[str]:
        twins = await query(replica, under="site")
        return twins if {"a/room-1", "a/room-2"} <= set(twins) else []

    assert await eventually(under_site, 90, "the replica holds the declared tree") == [
        "site/hall-1",
        "a/room-1",
        "a/room-2",
    ]
    assert await query(replica, under="site/hall-1", relation="feeds") == ["a/room-1"]
    assert await query(replica, above="a/room-2") == ["site/hall-1", "site"]

    # written over the origin's API (the CLI), then seen by the replica
    added = await cli(origin, "relate", "a/room-2", "powers", "site/hall-1/fan-1")
    assert added.returncode == 0 and "added" in added.stdout, added.stderr  # type: ignore[attr-defined]

    async def powered() -> list[str]:
        return await query(replica, related="site/hall-1/fan-1", relation="powers")

    assert await eventually(powered, 60, "the replica sees the new relation") == ["a/room-2"]
    removed = await cli(origin, "relate", "a/room-2", "powers", "site/hall-1/fan-1", "--remove")
    assert removed.returncode == 0, removed.stderr  # type: ignore[attr-defined]

    async def unpowered() -> bool:
        return not await query(replica, related="site/hall-1/fan-1")

    await eventually(unpowered, 60, "the replica sees the relation removed")

    # values and health, judged by the replica's own intelligence from replicated readings
    async def unwell() -> list[str]:
        return await query(
            replica, under="site/hall-1", where=["temp_1 > -50"], health=["DEGRADED", "FAILED"]
        )

    assert await eventually(unwell, 120, "the replica finds the stuck room by health") == ["a/room-1"]
    shown = await cli(
        replica, "query", "--under", "site/hall-1", "--relation", "feeds", "--where", "temp_1 > -50", "--json"
    )
    assert shown.returncode == 0, shown.stderr  # type: ignore[attr-defined]
    docs = json.loads(shown.stdout)  # type: ignore[attr-defined]
    assert [d["twin"] for d in docs] == ["a/room-1"] and "temp_1" in docs[0]["values"]
    assert {"relation": "feeds", "target": "a/room-2"} in docs[0]["relations"]

    # a bad query: a clear error, the node goes on
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await replica.call("Query", api_pb2.QueryRequest(where=["temp_1 >"]))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected '<field> <op> <value>'" in (bad.value.details() or "")
    edge = api_pb2.RelationEdge(twin_id="a/room-1", relation="feeds", target="a/room-1")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await origin.call("Relate", api_pb2.RelateRequest(add=[edge]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # the anomaly log: the stuck sensor's event names what it may affect, and its sibling that measures
    # the same field and saw nothing makes it a sensor suspect
    async def stuck() -> list[api_pb2.AnomalyRecord]:
        reply = await origin.call("ListAnomalies", api_pb2.ListAnomaliesRequest(twin_id="a/room-1"))
        return [r for r in reply.anomalies if r.field == "temp_2" and r.kind == "stuck"]

    event = (await eventually(stuck, 120, "the origin logs the stuck sensor"))[0]
    assert list(event.related) == ["a/room-2"]
    assert event.cause == "sensor" and list(event.evidence) == ["a/room-2"]
    assert origin.alive() and replica.alive()
