"""The application API (``proto/drsdtp/wire/v1/api.proto``) served over gRPC on ``listen.api``, and a small
client for the CLI and applications.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio

from drsdtp._core import Store
from drsdtp.config import Address
from drsdtp.errors import DrsdtpError
from drsdtp.node.feed import ChangeFeed
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

MODEL_FIELD = "_model"
SCOPE_FIELD = "_scope"


class NodeView(Protocol):
    """What the API reads from the node."""

    @property
    def store(self) -> Store: ...
    @property
    def feed(self) -> ChangeFeed: ...
    def status(self) -> api_pb2.StatusReply: ...
    async def read_history(self, request: api_pb2.HistoryRequest) -> api_pb2.HistoryReply: ...
    def insight(self, twin_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...


def field_message(store: Store, twin: str, name: str, value: object) -> api_pb2.FieldValue:
    """One field as the API sends it (registers carry their stamp and writer)."""
    msg = api_pb2.FieldValue(name=name)
    entry = store.entry(twin, name)
    if entry is not None:
        msg.stamp, msg.writer = entry[1], entry[2]
        v = entry[0]
        if isinstance(v, bool):
            msg.flag = v
        elif isinstance(v, int):
            msg.i64 = v
        elif isinstance(v, float):
            msg.f64 = v
        elif isinstance(v, str):
            msg.text = v
        else:
            msg.blob = v
    elif isinstance(value, frozenset):
        msg.set.elements.extend(sorted(value))
    elif isinstance(value, int):
        msg.counter = value
    return msg


def twin_message(store: Store, twin: str, only: Sequence[str] = ()) -> api_pb2.Twin:
    fields = store.fields(twin)
    names = [n for n in only if n in fields] if only else sorted(fields)
    return api_pb2.Twin(twin_id=twin, fields=[field_message(store, twin, n, fields[n]) for n in names])


def field_to_python(f: api_pb2.FieldValue) -> object:
    """The Python value of an API field."""
    kind = f.WhichOneof("value")
    if kind is None:
        return None
    if kind == "set":
        return sorted(f.set.elements)
    return getattr(f, kind)


class TwinApiService(api_pb2_grpc.TwinApiServicer):
    def __init__(self, node: NodeView) -> None:
        self.node = node

    async def Status(
        self, request: api_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.StatusReply:
        return self.node.status()

    async def ListTwins(
        self, request: api_pb2.ListTwinsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ListTwinsReply:
        store = self.node.store
        out = api_pb2.ListTwinsReply()
        for twin in store.twins():
            if twin.startswith("_") or (request.prefix and not twin.startswith(request.prefix)):
                continue
            model = str(store.get(twin, MODEL_FIELD) or "")
            scope = str(store.get(twin, SCOPE_FIELD) or "default")
            if (request.model and model != request.model) or (request.scope and scope != request.scope):
                continue
            out.total += 1
            if request.limit and len(out.twins) >= request.limit:
                continue
            fields = store.fields(twin)
            stamps = [e[1] for n in fields if (e := store.entry(twin, n)) is not None]
            out.twins.append(
                api_pb2.TwinSummary(
                    twin_id=twin,
                    model=model,
                    scope=scope,
                    fields=len(fields),
                    updated_ms=(max(stamps) >> 16) if stamps else 0,
                )
            )
        return out

    async def GetTwin(
        self, request: api_pb2.GetTwinRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.Twin:
        if request.twin_id not in self.node.store:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no twin {request.twin_id!r} on this node")
        return twin_message(self.node.store, request.twin_id, list(request.fields))

    async def ReadHistory(
        self, request: api_pb2.HistoryRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.HistoryReply:
        try:
            return await self.node.read_history(request)
        except DrsdtpError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

    async def Watch(
        self, request: api_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_pb2.TwinChange]:
        wanted = set(request.twin_ids)

        def match(twin: str) -> bool:
            return (not wanted or twin in wanted) and twin.startswith(request.prefix)

        store = self.node.store
        sub = self.node.feed.subscribe()
        try:
            for twin in store.twins():
                if match(twin):
                    yield api_pb2.TwinChange(twin=twin_message(store, twin), origin="snapshot")
            async for batch in sub.changes():
                for twin, origin in sorted(batch.items()):
                    if match(twin) and twin in store:
                        yield api_pb2.TwinChange(twin=twin_message(store, twin), origin=origin)
        finally:
            sub.close()

    async def Insight(
        self, request: api_pb2.InsightRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.InsightReply:
        try:
            params = json.loads(request.params_json) if request.params_json else {}
            if not isinstance(params, dict):
                raise ValueError("params_json must hold a JSON object")
            doc = self.node.insight(request.twin_id, request.kind, params)
        except (ValueError, DrsdtpError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        return api_pb2.InsightReply(json=json.dumps(doc))


class ApiServer:
    """The gRPC server of the application API; an async context manager."""

    name = "api"

    def __init__(self, node: NodeView, address: Address, *, max_message_bytes: int) -> None:
        self.node = node
        self.address = address
        self.port = 0
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024),
                ("grpc.max_send_message_length", max_message_bytes),
            ]
        )
        api_pb2_grpc.add_TwinApiServicer_to_server(TwinApiService(node), self._server)

    async def __aenter__(self) -> ApiServer:
        self.port = self._server.add_insecure_port(f"{self.address.host}:{self.address.port}")
        if self.port == 0:
            raise DrsdtpError(f"cannot listen on {self.address.host}:{self.address.port} for the API")
        await self._server.start()
        log.info("application API on %s:%d", self.address.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.stop(grace=1.0)


def connect(address: Address) -> tuple[grpc.aio.Channel, api_pb2_grpc.TwinApiStub]:
    """A client channel and stub for a node's API."""
    channel = grpc.aio.insecure_channel(f"{address.host}:{address.port}")
    return channel, api_pb2_grpc.TwinApiStub(channel)
