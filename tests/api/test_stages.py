"""A write's stage timestamps (drsdtp.stages, the benches' round-trip breakdown) on a real node over its
real gRPC API: given only when the node enables them and the call asks, in the order the write passes them."""

from __future__ import annotations

import pathlib

import pytest

from drsdtp import stages
from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.node.node import COMMIT_STAGES, Node
from drsdtp.wire.v1 import api_pb2
from tests.api.test_write import config, report

ASK = ((stages.HEADER, "1"),)


def write(i: int) -> api_pb2.WriteRequest:
    create = api_pb2.CreateTwin() if i == 0 else None
    twin = api_pb2.TwinWrite(twin_id="s-1", create=create, ops=[report("v", f64=float(i))])
    return api_pb2.WriteRequest(twins=[twin])


async def stages_of(node: Node, request: api_pb2.WriteRequest, metadata: tuple[tuple[str, str], ...]) -> str:
    channel, stub = connect(Address("127.0.0.1", node.api.port))
    async with channel:
        call = stub.Write(request, metadata=metadata)
        await call
        return str(dict(await call.trailing_metadata() or ()).get(stages.HEADER, ""))


async def test_a_write_that_asks_gets_its_stages_in_order(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages, "ENABLED", True)
    async with Node(config(tmp_path)) as node:
        await stages_of(node, write(0), ())  # creates the twin
        got = stages.parse(await stages_of(node, write(1), ASK))
        names = [name for name, _ in got]
        assert names == [
            "handler",
            "admitted",
            "planned",
            "applied",
            "appended",
            *COMMIT_STAGES,
            "durable",
            "audited",
            "replied",
        ]
        at = dict(got)
        # The call's own path, and the group commit's, each in time order; the commit made the write durable
        # after it was appended.
        order = ("handler", "admitted", "planned", "applied", "appended", "durable", "replied")
        path = [at[n] for n in order]
        assert path == sorted(path)
        commit = [at[n] for n in COMMIT_STAGES]
        assert commit == sorted(commit)
        assert at["appended"] <= at["committer_woke"] and at["committer_resumed"] <= at["durable"]
        assert await stages_of(node, write(2), ()) == ""  # not asked: none


async def test_a_node_without_stages_enabled_gives_none(tmp_path: pathlib.Path) -> None:
    assert not stages.ENABLED, "DRSDTP_STAGES is set in the test environment"
    async with Node(config(tmp_path)) as node:
        assert await stages_of(node, write(0), ()) == ""
        assert await stages_of(node, write(1), ASK) == ""


def test_malformed_stages_are_named() -> None:
    assert stages.parse(stages.encode([("a", 1), ("b", 22)])) == [("a", 1), ("b", 22)]
    with pytest.raises(ValueError, match="'b=x'"):
        stages.parse("a=1,b=x")
