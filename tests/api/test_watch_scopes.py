"""Watch streams share what they send only within the same scopes: an admin's stream and a scoped viewer's,
with the same request at the same feed position, each get their own twins (a real node)."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import grpc.aio
import pytest

from drsdtp.wire.v1 import api_pb2, api_pb2_grpc
from tests.api.test_auth_scopes import TOKENS, Faces, faces, level

__all__ = ["faces"]  # the node fixture, shared with tests/api/test_auth_scopes.py

pytestmark = pytest.mark.integration

Stream: TypeAlias = "grpc.aio.UnaryStreamCall[api_pb2.WatchRequest, api_pb2.TwinChange]"


async def _twins(stream: Stream, first: api_pb2.TwinChange | None, n: int) -> list[str]:
    """The twin ids of the stream's next ``n`` changes (``first``: a message already read)."""
    ids: list[str] = []
    message = first
    while True:
        if message is not None:
            ids += [c.twin.twin_id for c in list(message.changes) or [message]]
        if len(ids) >= n:
            return ids
        message = await stream.read()


@pytest.mark.parametrize("max_changes", [0, 64])
async def test_streams_of_different_scopes_never_share_messages(faces: Faces, max_changes: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{faces.node.api_port}") as channel:
        stub = api_pb2_grpc.TwinApiStub(channel)
        request = api_pb2.WatchRequest(prefix="site/", fields=["level"], max_changes=max_changes)
        ops, viewer = (
            stub.Watch(request, metadata=(("authorization", f"Bearer {TOKENS[who]}"),))
            for who in ("ops", "a-view")
        )
        try:
            async with asyncio.timeout(30):  # a stream not sent what it should fails, rather than hangs
                first = await asyncio.gather(ops.read(), viewer.read())  # both open, at the same position
                assert await _twins(ops, first[0], 3) == ["site/a/x", "site/a/y", "site/b/x"]
                assert await _twins(viewer, first[1], 2) == ["site/a/x", "site/a/y"]
                # One write to a twin outside the viewer's scopes and one inside: each gets its own.
                writes = level("site/b/x", 93.0)["twins"] + level("site/a/x", 94.0)["twins"]
                faces.ok("grpc", "ops", "Write", {"twins": writes})
                assert sorted(await _twins(ops, None, 2)) == ["site/a/x", "site/b/x"]
                assert await _twins(viewer, None, 1) == ["site/a/x"]
        finally:
            ops.cancel()
            viewer.cancel()
