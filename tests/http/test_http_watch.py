"""Watch over server-sent events on a real node process: the snapshot then live changes with their
cursors as event ids, resuming with ``Last-Event-ID`` misses nothing, filters are checked, the per-caller
cap answers 429, and a client that stops reading is cut off without stalling the node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.http.support import HttpNode, field_values, http_node

pytestmark = pytest.mark.integration

PER_CALLER = 3
LIMITS = f"[limits]\napi_max_watchers_per_caller = {PER_CALLER}\napi_watch_stall_s = 1.0\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpNode]:
    with http_node(tmp_path_factory.mktemp("watch"), LIMITS) as n:
        yield n


class Events:
    """The events of one SSE response, parsed as the EventSource algorithm does (id, data)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str | None, dict[str, Any]]:
        event_id: str | None = None
        data: list[str] = []
        async with asyncio.timeout(20):
            while True:
                line = (await self.response.content.readline()).decode()
                assert line, "the stream ended"
                line = line.rstrip("\n")
                if not line:
                    if data:
                        return event_id, json.loads("\n".join(data))
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "id":
                    event_id = value
                elif key == "data":
                    data.append(value)


@asynccontextmanager
async def watch(node: HttpNode, query: str, last_id: str | None = None) -> AsyncIterator[Events]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.base}/api/v2/Watch?{query}", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield Events(response)


def write(node: HttpNode, twin: str, value: float, create: bool = False) -> None:
    op = {"field": "temperature", "report": {"f64": value}}
    node.post(
        "Write",
        {"twins": [{"twinId": twin, **({"create": {"model": "room"}} if create else {}), "ops": [op]}]},
    )


async def test_snapshot_then_live_changes_then_resume_with_last_event_id(node: HttpNode) -> None:
    write(node, "room-sse", 1.0, create=True)
    async with watch(node, "twin_ids=room-sse") as events:
        cursor, change = await events.next()
        assert change["origin"] == "snapshot" and cursor is not None and int(cursor) > 0
        assert field_values(change["twin"])["temperature"] == 1.0
        write(node, "room-sse", 2.0)
        cursor, change = await events.next()
        assert change["origin"] == "local" and cursor is not None and cursor == change["cursor"]
        assert field_values(change["twin"])["temperature"] == 2.0
    # Written while no one watched: a reconnect with the last id gets it (what EventSource does).
    write(node, "room-sse", 3.0)
    async with watch(node, "twin_ids=room-sse", last_id=cursor) as events:
        resumed, change = await events.next()
        assert int(resumed or 0) > int(cursor)
        assert field_values(change["twin"])["temperature"] == 3.0


async def test_filters_are_checked_and_applied(node: HttpNode) -> None:
    status, body = node.request("GET", "/api/v2/Watch?origins=telepathy")
    assert status == 400 and body["code"] == "INVALID_ARGUMENT" and body["field"] == "origins", body
    assert "telepathy" in body["message"]
    status, body = node.request("GET", "/api/v2/Watch", headers={"Last-Event-ID": "yesterday"})
    assert status == 400 and body["field"] == "resume_after", body
    write(node, "room-f1", 1.0, create=True)
    write(node, "room-f2", 1.0, create=True)
    async with watch(node, "prefix=room-f&fields=temperature&origins=local") as events:
        await events.next()
        await events.next()  # the snapshot of both
        write(node, "room-f2", 5.0)
        _, change = await events.next()
        assert change["twin"]["twinId"] == "room-f2"
        assert field_values(change["twin"]) == {"temperature": 5.0}


async def test_max_changes_puts_several_changes_in_one_event(node: HttpNode) -> None:
    for twin in ("room-b1", "room-b2"):
        write(node, twin, 1.0, create=True)
    async with watch(node, "prefix=room-b&fields=temperature&max_changes=16") as events:
        cursor, batch = await events.next()
        assert [c["twin"]["twinId"] for c in batch["changes"]] == ["room-b1", "room-b2"]
        assert "twin" not in batch and cursor == batch["changes"][-1]["cursor"]  # the id: its last cursor


async def test_streams_per_caller_are_capped(node: HttpNode) -> None:
    write(node, "room-cap", 1.0, create=True)
    async with aiohttp.ClientSession() as session:
        opened = [await session.get(f"{node.base}/api/v2/Watch?twin_ids=room-cap") for _ in range(PER_CALLER)]
        try:
            assert all(r.status == 200 for r in opened)
            async with session.get(f"{node.base}/api/v2/Watch?twin_ids=room-cap") as refused:
                body = await refused.json()
                assert refused.status == 429 and body["code"] == "RESOURCE_EXHAUSTED", body
                assert "api_max_watchers_per_caller" in body["message"]
        finally:
            for r in opened:
                r.close()
    # Closed streams give their slots back (the node notices the client went away).
    deadline = time.monotonic() + 30
    while True:
        async with aiohttp.ClientSession() as session:
            streams = [
                await session.get(f"{node.base}/api/v2/Watch?twin_ids=room-cap") for _ in range(PER_CALLER)
            ]
            ok = all(r.status == 200 for r in streams)
            for r in streams:
                r.close()
        if ok:
            break
        assert time.monotonic() < deadline, "closed streams kept their slots"
        await asyncio.sleep(0.2)


async def test_a_client_that_stops_reading_is_cut_off(node: HttpNode) -> None:
    # A twin whose every change is a large event, so the socket buffers fill after a few hundred.
    ops = [{"field": f"note{i}", "report": {"text": "x" * 1000}} for i in range(40)]
    node.post("Write", {"twins": [{"twinId": "room-big", "create": {"model": "room"}, "ops": ops}]})
    before = node.metric("drsdtp_api_watchers_cut_off_total")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.http_port))
    sock.sendall(b"GET /api/v2/Watch?twin_ids=room-big HTTP/1.1\r\nHost: node\r\n\r\n")
    try:
        deadline, value = time.monotonic() + 120, 0.0
        while node.metric("drsdtp_api_watchers_cut_off_total") == before:  # never read meanwhile
            assert time.monotonic() < deadline, "a stream that is never read was not cut off"
            for _ in range(25):
                value += 1
                write(node, "room-big", value)
            await asyncio.sleep(0.5)
        # The node dropped the connection: what was buffered reads out, then it ends.
        sock.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
    finally:
        sock.close()
    assert node.post("Status")["nodeId"] == node.node_id  # the node served on meanwhile
    counts = node.metric_lines("drsdtp_api_http_requests_total")
    assert any('method="Watch"' in line and 'code="RESOURCE_EXHAUSTED"' in line for line in counts), counts


async def test_the_other_streams_are_server_sent_events_too(node: HttpNode) -> None:
    status, body = node.request("GET", "/api/v2/WatchAnomalies", headers={"Last-Event-ID": "soon"})
    assert status == 400 and body["field"] == "after_seq", body
    status, body = node.request("GET", "/api/v2/WatchAnomalies?after_seq=-1")
    assert status == 400 and body["field"] == "after_seq", body
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.base}/api/v2/WatchAnomalies?after_seq=0") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert await response.content.readline() == b"retry: 2000\n"
