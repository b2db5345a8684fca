"""Whatever a caller sends, a real node answers with a status it can act on, never a bare UNKNOWN, counts it,
logs it at WARNING at most (rate-limited), and serves on: request bodies that do not parse (every method,
Watch included), odd but well-formed requests, a method failing in a way it did not expect, too many
requests at once."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.errors import StorageError
from drsdtp.history.series import Rows, SeriesData
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.daemon.test_node_watch import fill, watch_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = api_pb2.DESCRIPTOR.services_by_name["TwinApi"]
GARBAGE = b"\xff\xff\xff not a protobuf message"


def method_path(name: str) -> str:
    return f"/{SERVICE.full_name}/{name}"


async def call_raw(channel: grpc.aio.Channel, name: str, body: bytes) -> grpc.aio.AioRpcError:
    """Sends ``body`` as the request of method ``name``; returns the error it ends with."""
    method = SERVICE.methods_by_name[name]
    try:
        if method.server_streaming:
            call = channel.unary_stream(method_path(name))(body, timeout=10)
            while await call.read() is not grpc.aio.EOF:
                pass
        else:
            await channel.unary_unary(method_path(name))(body, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"{name} accepted {body!r}")


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]


async def test_bodies_that_do_not_parse_get_invalid_argument_on_every_method(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Node(watch_config(tmp_path)) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            for name in SERVICE.methods_by_name:
                error = await call_raw(channel, name, GARBAGE)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error)
                assert str(error.details()).startswith(f"{name}: the request body does not parse"), error
            for _ in range(50):  # a client sending garbage in a loop
                await call_raw(channel, "GetTwin", GARBAGE)
            assert (await stub.Status(api_pb2.StatusRequest())).node_id == "watch-1"  # serves on
    counts = node.api.requests.counts
    for name in SERVICE.methods_by_name:
        expected = 51 if name == "GetTwin" else 1
        assert counts[(name, "INVALID_ARGUMENT")] == expected, name
    assert counts[("Status", "OK")] == 1
    no_errors_logged(caplog)
    # Rate-limited: one line for the GetTwin flood (the next would say how many were suppressed).
    get_twin_lines = [r for r in caplog.records if "GetTwin: the request body" in r.getMessage()]
    assert len(get_twin_lines) == 1 and get_twin_lines[0].levelno == logging.WARNING


def odd_request(message: Any) -> Any:
    """Every field of a request set to an awkward but valid value: long strings with separators and control
    characters, extreme numbers, lists of them."""
    text = "../\x00\n" + "x" * 5000
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            value: Any = text
        elif field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
            value = -(2**63)
        elif field.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64):
            value = 2**32 - 1
        else:
            continue
        if field.is_repeated:
            getattr(message, field.name).extend([value, value])
        else:
            setattr(message, field.name, value)
    return message


async def test_odd_but_well_formed_requests_never_get_unknown(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Node(watch_config(tmp_path, api_watch_stall_s=1.0)) as node:
        channel, _ = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            for name, method in SERVICE.methods_by_name.items():
                request = odd_request(getattr(api_pb2, method.input_type.name)())
                body = request.SerializeToString()
                if method.server_streaming:
                    call = channel.unary_stream(method_path(name))(body, timeout=3)
                    try:
                        while await call.read() is not grpc.aio.EOF:
                            pass
                    except grpc.aio.AioRpcError as exc:
                        code: grpc.StatusCode = exc.code()
                    else:
                        code = grpc.StatusCode.OK
                else:
                    try:
                        await channel.unary_unary(method_path(name))(body, timeout=10)
                        code = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code()
                # Watch of a twin that does not exist simply waits: the client's deadline ends it.
                assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (name, code)
    assert not [key for key in node.api.requests.counts if key[1] in ("UNKNOWN", "INTERNAL")]
    no_errors_logged(caplog)


async def test_a_method_failing_unexpectedly_gets_a_clear_status(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Node(watch_config(tmp_path)) as node:

        def broken_insight(*args: object) -> dict[str, Any]:
            raise RuntimeError("model table is gone")  # a bug, injected

        async def failed_disk(twin: str) -> list[object]:
            raise StorageError("snapshot directory unreadable")

        monkeypatch.setattr(node, "insight", broken_insight)
        monkeypatch.setattr(node.snapshots, "listing", failed_disk)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as bug:
                await stub.Insight(api_pb2.InsightRequest(twin_id="t", kind="health"))
            assert bug.value.code() == grpc.StatusCode.INTERNAL
            assert bug.value.details() == "Insight failed on the node: RuntimeError: model table is gone"
            with pytest.raises(grpc.aio.AioRpcError) as disk:
                await stub.ListSnapshots(api_pb2.ListSnapshotsRequest(twin_id="t"))
            assert disk.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert disk.value.details() == "ListSnapshots: snapshot directory unreadable"
            assert (await stub.Status(api_pb2.StatusRequest())).node_id == "watch-1"
    assert node.api.requests.counts[("Insight", "INTERNAL")] == 1
    assert node.api.requests.counts[("ListSnapshots", "FAILED_PRECONDITION")] == 1
    no_errors_logged(caplog)
    warned = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "Insight failed" in r.getMessage()
    ]
    assert [r.levelno for r in warned] == [logging.WARNING]
    # The traceback is there for whoever debugs, below WARNING.
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


async def test_requests_beyond_api_max_requests_are_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Node(watch_config(tmp_path, api_max_requests=2)) as node:
        await fill(node, 1, 1, 1)
        release = asyncio.Event()
        entered = 0

        async def slow_history(*args: object) -> SeriesData:
            nonlocal entered
            entered += 1
            await release.wait()
            return SeriesData.from_rows("t", "f", Rows.empty())

        monkeypatch.setattr(node, "read_history", slow_history)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            request = api_pb2.HistoryRequest(twin_id="t", field="f")
            held = [asyncio.ensure_future(stub.ReadHistory(request)) for _ in range(2)]
            while entered < 2:  # noqa: ASYNC110 - waits for the node to be inside both requests
                await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await stub.Status(api_pb2.StatusRequest())
            assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limits.api_max_requests = 2" in str(busy.value.details())
            # Watch streams have their own cap and are not refused here.
            assert (await stub.Watch(api_pb2.WatchRequest()).read()).origin == "snapshot"
            release.set()
            assert [r.resolution for r in await asyncio.gather(*held)] == ["raw", "raw"]
            assert (await stub.Status(api_pb2.StatusRequest())).node_id == "watch-1"
    assert node.api.requests.counts[("Status", "RESOURCE_EXHAUSTED")] == 1


async def test_a_reply_larger_than_the_message_limit_is_refused_with_a_reason(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Node(watch_config(tmp_path, max_message_bytes=65536)) as node:
        await fill(node, 3000, 1, 1)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as big:
                await stub.ListTwins(api_pb2.ListTwinsRequest())
            assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "ListTwins: the reply (" in str(big.value.details())
            assert "larger than limits.max_message_bytes (65536); ask for less" in str(big.value.details())
            small = await stub.ListTwins(api_pb2.ListTwinsRequest(limit=10))
            assert len(small.twins) == 10 and small.total == 3000
    assert node.api.requests.counts[("ListTwins", "RESOURCE_EXHAUSTED")] == 1
    no_errors_logged(caplog)
