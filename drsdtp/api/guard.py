"""What every API method goes through, the Watch stream included: who may call (mutual TLS names, then
:mod:`drsdtp.api.auth`: the caller's identity, role, twin scopes and rate limit), how many requests run at
once, request bodies that do not parse, exceptions a method did not expect, and the count of requests by
method and final status (``drsdtp_api_requests_total{method,code}``).

Whatever a caller sends, it gets a status it can act on, never a bare UNKNOWN: INVALID_ARGUMENT naming the
method for a body that does not parse, PERMISSION_DENIED for a certificate outside ``tls.allowed_names``,
UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED as :mod:`drsdtp.api.auth` decides (each refusal
audited with who was refused), RESOURCE_EXHAUSTED over ``limits.api_max_requests`` or for a reply larger
than ``limits.max_message_bytes``, the status :mod:`drsdtp.api.errors` maps a :class:`DrsdtpError` to,
INTERNAL for anything else. The node logs these at WARNING at most, rate-limited (the traceback of an
unexpected exception at DEBUG), so a client sending garbage in a loop cannot flood the log.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from drsdtp import stages
from drsdtp.api.auth import Access, Authority, Credentials, Decision
from drsdtp.api.caller import set_caller
from drsdtp.api.errors import abort_with
from drsdtp.api.watch_limits import caller_of
from drsdtp.config import ApiConfig
from drsdtp.errors import DrsdtpError
from drsdtp.gossip.tls import peer_names
from drsdtp.ingest.ratelog import RateLimitedLog

__all__ = ["ApiGuard"]

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

_STATUS = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _asks_stages(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call asks for its stage timestamps (drsdtp.stages; only when the node enables them)."""
    return any(key == stages.HEADER for key, _ in context.invocation_metadata() or ())


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


class _Unparsed:
    """Stands in for a request body that did not parse, so the method can refuse it with a status (a
    deserializer that raises makes gRPC answer with a bare error and log it)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class ApiGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio ships no stubs for it
    def __init__(
        self,
        *,
        max_requests: int,
        max_reply_bytes: int,
        allowed_names: Sequence[str] = (),
        authority: Authority | None = None,
    ) -> None:
        self.authority = authority if authority is not None else Authority(ApiConfig())
        self.max_requests = max_requests
        self.max_reply_bytes = max_reply_bytes
        self.allowed_names = frozenset(allowed_names)  # empty: any certificate the CA signed
        self.counts: collections.Counter[tuple[str, ...]] = collections.Counter()  # (method, code)
        self.active = 0  # unary requests running
        self._warn = RateLimitedLog(log, "API")
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler  # an unknown method: gRPC answers UNIMPLEMENTED
        # Wrapped once per method, not once per call (the service's handlers never change): bounded by the
        # service's methods, as an unknown one has no handler.
        got = self._wrapped.get(details.method)
        if got is None or got[0] is not handler:
            got = self._wrapped[details.method] = (handler, self._wrap(details.method, handler))
        return got[1]

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        method = full_method.rsplit("/", 1)[-1]
        parse = handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data) if parse is not None else data
            except Exception as exc:  # any parser failure means the caller sent a bad body
                return _Unparsed(exc)

        if handler.unary_unary is not None:
            inner: Behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await self._guard(method, inner, request, context, unary=True)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream_inner: Behavior = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> None:
                # A coroutine (not a generator), so the method writes itself: see drsdtp.api.services.watch.
                await self._guard(method, stream_inner, request, context, unary=False)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=deserialize, response_serializer=handler.response_serializer
            )
        return handler  # the API has no client-streaming methods

    async def _guard(
        self, method: str, inner: Behavior, request: Any, context: grpc.aio.ServicerContext, *, unary: bool
    ) -> Any:
        counted = False
        traced = stages.ENABLED and unary and _asks_stages(context)
        if traced:
            stages.begin()
            stages.mark("handler")
        try:
            await self._admit(method, request, context)
            stages.mark("admitted")
            if not unary:
                return await inner(request, context)
            if self.active >= self.max_requests:
                await self._refuse(
                    context,
                    method,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{method}: too many API requests at once (limits.api_max_requests = "
                    f"{self.max_requests}); try again shortly",
                    "busy",
                )
            self.active += 1
            try:
                reply = await inner(request, context)
            finally:
                self.active -= 1
            size = reply.ByteSize()
            if size > self.max_reply_bytes:  # gRPC would fail the send, logging it at ERROR
                await self._refuse(
                    context,
                    method,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{method}: the reply ({size} bytes) is larger than limits.max_message_bytes "
                    f"({self.max_reply_bytes}); ask for less (a prefix, a limit, a shorter range)",
                    "too-large",
                )
            if traced:
                stages.mark("replied")
                context.set_trailing_metadata(((stages.HEADER, stages.encode(stages.taken())),))
            return reply
        except grpc.aio.AbortError:
            raise  # the method (or this guard) chose the status
        except asyncio.CancelledError:
            self.counts[(method, grpc.StatusCode.CANCELLED.name)] += 1
            counted = True
            raise
        except DrsdtpError as exc:
            await abort_with(context, method, exc)
        except Exception as exc:
            if context.cancelled() or type(exc).__name__ == "ExecuteBatchError":
                # The client went away mid-call (gRPC failed a send): nothing to answer, nothing to log.
                log.debug("%s: call ended by the client: %r", method, exc)
                self.counts[(method, grpc.StatusCode.CANCELLED.name)] += 1
                counted = True
                raise asyncio.CancelledError from exc
            self._warn.warn(f"failed-{method}", "%s failed: %s: %s", method, type(exc).__name__, exc)
            log.debug("%s failed", method, exc_info=True)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"{method} failed on the node: {type(exc).__name__}: {exc}"
            )
        finally:
            if not counted:
                code = context.code()
                self.counts[(method, (code or grpc.StatusCode.OK).name)] += 1
        raise AssertionError("unreachable: abort raises")

    async def _admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        if isinstance(request, _Unparsed):
            await self._refuse(
                context,
                method,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method}: the request body does not parse as its message ({request.error})",
                "unparsed",
            )
        if self.allowed_names:
            names = peer_names(context.auth_context())
            if not names & self.allowed_names:
                shown = ", ".join(sorted(names)) or "none"
                await self._refuse(
                    context,
                    method,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method}: the client certificate (names: {shown}) is not in tls.allowed_names",
                    "not-allowed",
                )
        await self._authorize(method, request, context)

    async def _authorize(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Identifies the caller, checks the call, and hands the caller to the services."""
        auth = context.auth_context()
        names = frozenset(peer_names(auth))
        caller = await self.authority.identify(Credentials(context.peer(), names, _authorization(context)))
        if isinstance(caller, Decision):
            await self._deny(context, method, caller, caller_of(context.peer(), auth), Access((method,)))
            return
        access = self.authority.access(method, request)
        decision = self.authority.check(caller, access)
        if not decision.allowed:
            await self._deny(context, method, decision, caller.identity, access)
        set_caller(caller)  # this call's task only: each call runs in its own task

    async def _deny(
        self, context: grpc.aio.ServicerContext, method: str, decision: Decision, actor: str, access: Access
    ) -> None:
        await self.authority.refused(actor, method, decision, access.twins)
        await self._refuse(
            context, method, _STATUS[decision.status], f"{method}: {decision.reason}", decision.kind
        )

    async def _refuse(
        self, context: grpc.aio.ServicerContext, method: str, code: grpc.StatusCode, detail: str, kind: str
    ) -> None:
        self._warn.warn(f"{kind}-{method}", "refused a request from %s: %s", context.peer(), detail)
        await context.abort(code, detail)
