"""The gRPC server of the application API (``drsdtp.wire.v1.TwinApi`` on ``listen.api``).

Every method is served from its one implementation in :mod:`drsdtp.api.services` (the unary ones take and
return protobuf messages, so an HTTP/JSON face can call the same functions); every call passes the
:class:`~drsdtp.api.guard.ApiGuard` first (admission, caps, bad bodies, the one error mapping).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from drsdtp.api.auth import Authority
from drsdtp.api.convert import twin_message
from drsdtp.api.guard import ApiGuard
from drsdtp.api.idempotency import IdempotencyStore
from drsdtp.api.node import AuditEntry, NodeApi
from drsdtp.api.records import NodeRecords
from drsdtp.api.services import Unary, unary_methods
from drsdtp.api.services.alarms import AlarmStreams
from drsdtp.api.services.commands import CommandService, CommandStreams
from drsdtp.api.services.intel import AnomalyStreams
from drsdtp.api.services.watch import WatchService
from drsdtp.api.watch_limits import WatchGate, WatchLimits
from drsdtp.api.write_bulk import parse_write
from drsdtp.config import Address, ApiConfig, LimitsConfig, TlsConfig
from drsdtp.errors import DrsdtpError
from drsdtp.gossip.tls import NodeCertificates
from drsdtp.wire.v1 import api_pb2

__all__ = ["SERVICE", "ApiServer"]

log = logging.getLogger(__name__)

SERVICE = api_pb2.DESCRIPTOR.services_by_name["TwinApi"]
KEEPALIVE_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
# The shortest interval between a client's keepalive pings the server accepts. gRPC's default is 5 min, and a
# client that pings more often while idle (the SDK pings every 20 s, to find a dead node under an idle watch)
# collects strikes until the server closes its connection with GOAWAY `too_many_pings`.
MIN_CLIENT_PING_MS = 10_000
MAX_REQUEST_BYTES = 64 * 1024


def _message(name: str) -> Any:
    return getattr(api_pb2, name)


def _unary(call: Unary) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await call(request)  # the guard has set the caller (drsdtp.api.caller)

    return behavior


def _bytes_or_message(message: Any) -> bytes:
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def service_handler(
    unary: dict[str, Unary],
    streams: dict[str, Callable[[Any, grpc.aio.ServicerContext], Any]],
    watches: WatchService,
) -> grpc.GenericRpcHandler:
    """Every method of the service, from the proto's own list (a method without an implementation is a
    bug caught at start, not a call that fails later)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        request, reply = _message(method.input_type.name), _message(method.output_type.name)
        if method.server_streaming and method.name != "Watch":
            assert method.name in streams, f"no implementation of the stream {method.name}"
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                streams[method.name],
                request_deserializer=request.FromString,
                response_serializer=reply.SerializeToString,
            )
            continue
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                watches.serve,
                request_deserializer=request.FromString,
                # The stream writes changes it encoded once for every watcher (see WatchService.encoded).
                response_serializer=_bytes_or_message,
            )
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _unary(unary[method.name]),
            # Write: bulk numeric writes decoded natively into columns (drsdtp.api.write_bulk).
            request_deserializer=parse_write if method.name == "Write" else request.FromString,
            response_serializer=reply.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


class ApiServer:
    """The gRPC server of the application API; an async context manager."""

    name = "api"

    def __init__(
        self,
        node: NodeApi,
        address: Address,
        limits: LimitsConfig,
        tls: TlsConfig | None = None,
        *,
        keys: IdempotencyStore,
        api: ApiConfig | None = None,
    ) -> None:
        self.node = node
        self.keys = keys
        self.address = address
        self.tls = tls if tls is not None and tls.api != "off" else None
        self.port = 0
        mutual = self.tls is not None and self.tls.api == "mutual"

        async def audit_refusal(actor: str, method: str, twin: str, reason: str) -> None:
            await node.audit([AuditEntry(twin, "refused", {}, actor, reason)])

        self.authority = Authority(
            api if api is not None else ApiConfig(), audit=audit_refusal, records=NodeRecords(node)
        )
        self.requests = ApiGuard(
            max_requests=limits.api_max_requests,
            max_reply_bytes=limits.max_message_bytes,
            allowed_names=self.tls.allowed_names if self.tls is not None and mutual else (),
            authority=self.authority,
        )
        self.watchers = WatchGate(WatchLimits.from_config(limits))
        self._server = grpc.aio.server(
            interceptors=[self.requests],
            # A backstop below the guard's own caps (whose refusals say which limit): gRPC refuses calls
            # beyond this before any Python runs.
            maximum_concurrent_rpcs=limits.api_max_watchers + limits.api_max_requests + 32,
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # A client that stops answering pings (a frozen process) loses its connection, and with it
                # any stream still waiting for it to read.
                ("grpc.keepalive_time_ms", KEEPALIVE_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_MS),
            ],
        )
        # The one implementation of every method, which the HTTP/JSON face (drsdtp.api.http) serves too.
        self.write_paths: collections.Counter[str] = collections.Counter()  # Write requests by path
        self.methods = unary_methods(node, keys, self.write_paths, self.authority.audit_budget)
        self.watches = WatchService(
            node.store,
            node.feed,
            self.watchers,
            lambda store, twin, fields: twin_message(store, twin, fields, node.writer_name),
        )
        self.streams: dict[str, Callable[[Any, grpc.aio.ServicerContext], Any]] = {
            "WatchAnomalies": AnomalyStreams(node, self.watchers).serve,
            "WatchAlarms": AlarmStreams(node, self.watchers).serve,
            "FollowCommands": CommandStreams(
                CommandService(lambda: node.commands, node.audit, self.authority.audit_budget), self.watchers
            ).serve,
        }
        self._server.add_generic_rpc_handlers((service_handler(self.methods, self.streams, self.watches),))

    async def __aenter__(self) -> ApiServer:
        await self._open_keys()
        target = f"{self.address.host}:{self.address.port}"
        if self.tls is None:
            self.port = self._server.add_insecure_port(target)
        else:
            certificates = NodeCertificates(self.tls)
            creds = certificates.server_credentials(require_client_auth=self.tls.api == "mutual")
            self.port = self._server.add_secure_port(target, creds)
        if self.port == 0:
            raise DrsdtpError(f"cannot listen on {self.address.host}:{self.address.port} for the API")
        await self._server.start()
        mode = "plaintext" if self.tls is None else f"TLS ({self.tls.api})"
        log.info("application API on %s:%d, %s", self.address.host, self.port, mode)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._server.stop(grace=1.0)
        finally:
            self.keys.close()

    async def _open_keys(self) -> None:
        """Loads the idempotency keys; a remembered write the log lost (a crash between the two) is merged
        again and committed, so no key stands for a write that is not applied."""
        store, lost = self.node.store, []

        def merge(delta: bytes) -> None:
            changed = store.merge(delta)
            if changed:
                lost.append((delta, changed))

        self.keys.open(merge)
        for delta, twins in lost:
            await self.node.commit(delta, twins, "local")
        if lost:
            log.warning(
                "API writes: %d remembered writes were missing from the log and applied again", len(lost)
            )
