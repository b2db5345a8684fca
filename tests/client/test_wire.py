"""What the SDK puts on the wire, seen by a real gRPC server that records each call and answers as told:
the bearer token, retries of idempotent calls only (reads; writes with an idempotency key), the deadline
over all attempts, and the status-to-error mapping with its trailers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drsdtp.client import (
    AsyncClient,
    ConflictError,
    DeadlineExceededError,
    PermissionDeniedError,
    RetryPolicy,
    TwinWrite,
    UnauthenticatedError,
    UnavailableError,
    report,
)
from drsdtp.client.commands import CommandSpec, issue_request
from drsdtp.client.writes import (
    Ack,
    Columns,
    Create,
    add,
    clear_desired,
    desire,
    increment,
    remove,
    request,
    request_bytes,
)
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

FAST = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05)


@dataclass
class Recorder(api_pb2_grpc.TwinApiServicer):
    """Fails the first ``failures`` calls with ``code`` (and ``trailers``), then answers."""

    failures: int = 0
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    trailers: tuple[tuple[str, str], ...] = ()
    calls: list[dict[str, str]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # each Write's idempotency key

    async def _answer(self, context: grpc.aio.ServicerContext) -> None:
        self.calls.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        if len(self.calls) <= self.failures:
            if self.trailers:
                context.set_trailing_metadata(self.trailers)
            await context.abort(self.code, "told to fail")

    async def Status(
        self, request: api_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.StatusReply:
        await self._answer(context)
        return api_pb2.StatusReply(node_id="recorder")

    async def Write(
        self, request: api_pb2.WriteRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.WriteReply:
        self.keys.append(request.idempotency_key)
        await self._answer(context)
        return api_pb2.WriteReply(
            twins=[api_pb2.WrittenTwin(twin_id=t.twin_id, version=7) for t in request.twins]
        )


@pytest.fixture
async def server() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()  # type: ignore[abstract]  # only the methods the tests call
    srv = grpc.aio.server()
    api_pb2_grpc.add_TwinApiServicer_to_server(recorder, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield recorder, f"127.0.0.1:{port}"
    finally:
        await srv.stop(None)


async def test_the_token_is_sent_as_a_bearer(
    server: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, target = server
    async with AsyncClient(target, token="s3cret") as client:
        await client.status()
    monkeypatch.setenv("DRSDTP_TOKEN", "from-env")
    async with AsyncClient(target) as client:
        await client.status()
    monkeypatch.delenv("DRSDTP_TOKEN")
    async with AsyncClient(target) as client:
        await client.status()
    auth = [c.get("authorization") for c in recorder.calls]
    assert auth == ["Bearer s3cret", "Bearer from-env", None]
    with pytest.raises(ValueError, match="line break"):
        AsyncClient(target, token="a\nb")


async def test_a_read_is_retried_until_it_succeeds(server: tuple[Recorder, str]) -> None:
    recorder, target = server
    recorder.failures = 2
    async with AsyncClient(target, retry=FAST) as client:
        status = await client.status()
    assert status.node_id == "recorder" and len(recorder.calls) == 3


async def test_a_read_gives_up_after_its_attempts(server: tuple[Recorder, str]) -> None:
    recorder, target = server
    recorder.failures = 100
    async with AsyncClient(target, retry=FAST) as client:
        with pytest.raises(UnavailableError):
            await client.status()
    assert len(recorder.calls) == FAST.attempts


async def test_a_write_is_retried_only_with_an_idempotency_key(server: tuple[Recorder, str]) -> None:
    recorder, target = server
    recorder.failures = 1
    write = [TwinWrite("room-1", (report("temp_1", 1.0),))]
    async with AsyncClient(target, retry=FAST) as client:
        with pytest.raises(UnavailableError):
            await client.write(write)  # it may have been applied: not sent again
        assert len(recorder.calls) == 1
        recorder.failures = 2
        result = await client.write(write, idempotency_key="k-1")
    assert result.versions == {"room-1": 7}
    assert len(recorder.calls) == 3
    recorder.calls.clear()
    recorder.keys.clear()
    recorder.failures = 1
    async with AsyncClient(target, retry=FAST) as client:
        await client.report("room-1", {"temp_1": 2.0}, retry=True)  # a fresh key, the same on each attempt
    assert len(recorder.keys) == 2 and recorder.keys[0] == recorder.keys[1] != ""


async def test_statuses_map_to_the_error_tree_with_their_trailers(server: tuple[Recorder, str]) -> None:
    recorder, target = server
    cases = [
        (grpc.StatusCode.FAILED_PRECONDITION, ConflictError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    ]
    async with AsyncClient(target, retry=FAST) as client:
        for code, cls in cases:
            recorder.calls.clear()
            recorder.failures, recorder.code = 1, code
            recorder.trailers = (("drsdtp-version", "42"), ("drsdtp-field", "twins[0].if_version"))
            with pytest.raises(cls) as info:
                await client.status()
            assert info.value.code == code and info.value.field == "twins[0].if_version"
            assert len(recorder.calls) == 1  # not retried: the same request would fail the same way
    assert isinstance(info.value, PermissionError)


async def test_the_deadline_bounds_every_attempt() -> None:
    """A server that never answers (accepts, reads nothing): the call ends at its deadline."""
    srv = grpc.aio.server()

    class Silent(api_pb2_grpc.TwinApiServicer):
        async def Status(
            self, request: api_pb2.StatusRequest, context: grpc.aio.ServicerContext
        ) -> api_pb2.StatusReply:
            await asyncio.sleep(3600)
            return api_pb2.StatusReply()

    api_pb2_grpc.add_TwinApiServicer_to_server(Silent(), srv)  # type: ignore[abstract]
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=0.5) as client:
            with pytest.raises(DeadlineExceededError) as info:
                await client.status()
        assert isinstance(info.value, TimeoutError) and "DEADLINE_EXCEEDED" in str(info.value)
    finally:
        await srv.stop(None)


scalars = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**63), 2**63 - 1)
    | st.booleans()
    | st.text(max_size=4)
    | st.binary(max_size=4)
)
ops = st.one_of(
    st.builds(report, st.text(max_size=4), scalars),
    st.builds(
        report,
        st.text(max_size=4),
        st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0]),
    ),
    st.builds(desire, st.text(max_size=4), scalars),
    st.builds(clear_desired, st.text(max_size=4)),
    st.builds(add, st.text(max_size=4), st.text(min_size=1, max_size=4)),
    st.builds(remove, st.text(max_size=4), st.text(min_size=1, max_size=4)),
    st.builds(increment, st.text(max_size=4), st.integers(-(2**63), 2**63 - 1)),
)
twin_writes = st.builds(
    TwinWrite,
    st.text(max_size=6),
    st.lists(ops, max_size=4).map(tuple),
    st.none()
    | st.builds(
        Create,
        st.text(max_size=3),
        st.text(max_size=3),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    ),
    st.booleans(),
    st.none() | st.integers(0, 2**64 - 1),
)


@settings(max_examples=300, deadline=None)
@given(
    twins=st.lists(twin_writes, max_size=4),
    rows=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
    key=st.none() | st.text(max_size=4),
    ack=st.sampled_from(["durable", "replicated"]),
    actor=st.text(max_size=4),
)
def test_a_write_is_sent_as_the_bytes_protobuf_writes(
    twins: list[TwinWrite], rows: list[float], key: str | None, ack: Ack, actor: str
) -> None:
    """The SDK writes a request's ops as bytes itself (a bulk write's client cost): every kind of op,
    creates, deletes, versions, columns and non-ASCII names must come out as protobuf serializes them."""
    columns = Columns(["a"], ["x"], [0] * len(rows), [0] * len(rows), rows) if rows else None
    options = {"columns": columns, "idempotency_key": key, "ack": ack, "actor": actor, "reason": "r"}
    sent = request(twins, **options).SerializeToString(deterministic=True)  # type: ignore[arg-type]
    assert request_bytes(twins, **options) == sent  # type: ignore[arg-type]


def test_a_write_the_api_cannot_carry_is_refused_before_it_is_sent() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=r"twins\[1\]\.ops\[0\]\.report"):
            request_bytes([TwinWrite("a", (report("x", 1.0),)), TwinWrite("b", (report("x", bad),))])
    with pytest.raises(ValueError, match="ack"):
        request_bytes([], ack="soon")  # type: ignore[arg-type]


def test_a_command_the_api_cannot_carry_is_refused_naming_it_before_it_is_sent() -> None:
    with pytest.raises(ValueError, match=r"pump-1 valve value: nan is not a finite number"):
        issue_request(CommandSpec("pump-1", "valve", math.nan), "op")
    with pytest.raises(TypeError, match=r"pump-1 start args\[1\]: a list"):
        issue_request(CommandSpec("pump-1", "start", args=(2, [3])), "op")  # type: ignore[arg-type]
    fresh = [issue_request(CommandSpec("pump-1", "valve", 0.4), "op").idempotency_key for _ in range(2)]
    assert fresh[0] and fresh[0] != fresh[1]  # a fresh key each, so a retried batch is issued once
    given_key = issue_request(CommandSpec("pump-1", "valve", True, idempotency_key="k"), "op")
    assert (given_key.idempotency_key, given_key.value.WhichOneof("value")) == ("k", "flag")
