"""The HTTP/JSON face of the application API on ``[api.http] listen`` (aiohttp), an async context manager.

Every method is served by the same implementation as on gRPC (:mod:`drsdtp.api.services`, the table
:class:`drsdtp.api.server.ApiServer` builds): ``POST /api/v2/<Method>`` with the request message as JSON
(protobuf's canonical JSON mapping; an empty body is the empty request), the reply as JSON. Reads also
answer ``GET`` with the request's fields as query parameters (:mod:`.query`). Watch is server-sent events
(:mod:`.sse`). ``GET /api/v2/openapi.json`` is the document of all this (:mod:`.openapi`).

What every request goes through, as on gRPC: a bounded body (64 KiB, 413 beyond), a cap on requests served
at once (``limits.api_max_requests``), a reply bound (``limits.max_message_bytes``), the one error mapping
(:mod:`.errors`), rate-limited logging of refusals, and the count of requests by method and code.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from drsdtp.api.auth import Authority
from drsdtp.api.caller import ANONYMOUS
from drsdtp.api.http.auth import TOKEN_PARAMETER, HttpAuthorizer, grpc_peer
from drsdtp.api.http.dashboard import twins_handler
from drsdtp.api.http.errors import ApiHttpError, error_response, from_drsdtp
from drsdtp.api.http.openapi import PREFIX, is_read, openapi_document
from drsdtp.api.http.query import message_from_query
from drsdtp.api.http.sse import WatchEvents
from drsdtp.api.http.streams import Stream, serve_stream
from drsdtp.api.services import Unary
from drsdtp.api.services.watch import WatchService
from drsdtp.api.watch_limits import caller_of
from drsdtp.config import Address, LimitsConfig
from drsdtp.errors import DrsdtpError
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.wire.v1 import api_pb2

__all__ = ["MAX_BODY_BYTES", "HttpApiServer"]

log = logging.getLogger(__name__)

SERVICE = api_pb2.DESCRIPTOR.services_by_name["TwinApi"]
MAX_BODY_BYTES = 64 * 1024  # as the gRPC face's request bound


def peer_identity(request: web.Request) -> str:
    """The caller's address as the gRPC face names it (``ipv4:127.0.0.1``, ``ipv6:[::1]``), no port."""
    remote = request.remote or ""
    if not remote:
        return ANONYMOUS.identity
    return f"ipv6:[{remote}]" if ":" in remote else f"ipv4:{remote}"


def _query(request: web.Request) -> list[tuple[str, str]]:
    """The query parameters that are request fields (the credential is not)."""
    return [(k, v) for k, v in request.query.items() if k != TOKEN_PARAMETER]


def _json_reply(message: Message) -> web.Response:
    text = json_format.MessageToJson(message, indent=None, always_print_fields_with_no_presence=True)
    return web.Response(text=text, content_type="application/json", charset="utf-8")


class HttpApiServer:
    name = "api-http"

    def __init__(
        self,
        methods: Mapping[str, Unary],
        watches: WatchService,
        streams: Mapping[str, Stream],
        address: Address,
        limits: LimitsConfig,
        *,
        version: str,
        authority: Authority,
        static: Mapping[str, Path] | None = None,
    ) -> None:
        """``static``: URL prefix -> directory of files served as they are (the dashboard), beside its
        compact twin listing (:mod:`.dashboard`)."""
        self.methods = methods
        self.streams = streams
        self.address = address
        self.max_requests = limits.api_max_requests
        self.max_reply_bytes = limits.max_message_bytes
        self.auth = HttpAuthorizer(authority)
        self.port = 0
        self.active = 0
        self.counts: collections.Counter[tuple[str, ...]] = collections.Counter()  # (method, code)
        self._warn = RateLimitedLog(log, "HTTP API")
        self.document = json.dumps(openapi_document(SERVICE, version))
        missing = [
            m.name
            for m in SERVICE.methods
            if m.name not in methods and m.name not in streams and m.name != "Watch"
        ]
        assert not missing, f"no implementation of {missing}"
        self.events = WatchEvents(watches, self.counts, self._warn)
        self.app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        self.app.router.add_get(f"{PREFIX}/openapi.json", self._openapi)
        self.app.router.add_route("*", f"{PREFIX}/Watch", self._watch)
        self.app.router.add_route("*", PREFIX + "/{method}", self._unary)
        for prefix, directory in (static or {}).items():
            # The site page's compact listing, ahead of the static files of the same prefix.
            self.app.router.add_get(prefix + "/twins.json", twins_handler(self.auth, watches, self.counts))
            self.app.router.add_get(prefix, self._redirect(prefix + "/"))
            self.app.router.add_get(prefix + "/", self._file(directory / "index.html"))
            self.app.router.add_static(prefix, directory)
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _redirect(target: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(target)

        return handler

    @staticmethod
    def _file(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(path)

        return handler

    async def __aenter__(self) -> HttpApiServer:
        # Cancels a handler whose client went away, so an idle Watch gives its slot back at once.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address.host, self.address.port, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise DrsdtpError(
                f"cannot listen on {self.address.host}:{self.address.port} for the HTTP API: {exc}"
            ) from None
        server = site._server  # aiohttp has no public accessor for the bound port (port 0: tests)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.address.port
        log.info("HTTP/JSON API on http://%s:%d%s/", self.address.host, self.port, PREFIX)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----- handlers ---------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every error as the JSON error body, aiohttp's own (unknown path, body too large) included."""
        try:
            return await handler(request)
        except ApiHttpError as exc:
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                ApiHttpError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request body is larger than {MAX_BODY_BYTES} bytes",
                    http_status=413,
                )
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = grpc.StatusCode.NOT_FOUND if exc.status == 404 else grpc.StatusCode.INVALID_ARGUMENT
            return error_response(
                ApiHttpError(code, f"{request.method} {request.path}: {exc.reason}", http_status=exc.status)
            )

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=self.document, content_type="application/json", charset="utf-8")

    async def _unary(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        method = SERVICE.methods_by_name.get(name)
        if method is None:
            raise ApiHttpError(
                grpc.StatusCode.NOT_FOUND,
                f"no method {name!r} (see {PREFIX}/openapi.json)",
                http_status=404,
            )
        code = grpc.StatusCode.OK
        try:
            if method.server_streaming:
                response, code = await self._stream(request, name, method)
                return response
            return await self._call(request, name, method)
        except ApiHttpError as exc:
            code = exc.code
            if exc.code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL):
                self._warn.warn(f"{exc.code.name}-{name}", "refused %s: %s", peer_identity(request), exc)
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.counts[(name, code.name)] += 1

    async def _call(self, request: web.Request, name: str, method: Any) -> web.Response:
        if request.method == "GET" and is_read(method):
            message = message_from_query(name, getattr(api_pb2, method.input_type.name)(), _query(request))
        elif request.method == "POST":
            message = await self._body(request, name, getattr(api_pb2, method.input_type.name)())
        else:
            allowed = "GET or POST" if is_read(method) else "POST"
            raise ApiHttpError(
                grpc.StatusCode.UNIMPLEMENTED, f"{name}: use {allowed}, not {request.method}", http_status=405
            )
        await self.auth.authorize(request, name, message)  # sets the caller for this request's task
        if self.active >= self.max_requests:
            raise ApiHttpError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{name}: too many API requests at once (limits.api_max_requests = {self.max_requests}); "
                "try again shortly",
            )
        self.active += 1
        try:
            reply = await self.methods[name](message)
        except DrsdtpError as exc:
            raise from_drsdtp(name, exc) from None
        except Exception as exc:
            self._warn.warn(f"failed-{name}", "%s failed: %s: %s", name, type(exc).__name__, exc)
            log.debug("%s failed", name, exc_info=True)
            raise ApiHttpError(
                grpc.StatusCode.INTERNAL, f"{name} failed on the node: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            self.active -= 1
        size = reply.ByteSize()
        if size > self.max_reply_bytes:
            raise ApiHttpError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{name}: the reply ({size} bytes) is larger than limits.max_message_bytes "
                f"({self.max_reply_bytes}); ask for less (a prefix, a limit, a shorter range)",
            )
        return _json_reply(reply)

    @staticmethod
    async def _body(request: web.Request, name: str, message: Message) -> Message:
        data = await request.read()  # bounded by client_max_size: 413 beyond
        if not data.strip():
            return message
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiHttpError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{name}: the request body is not JSON ({exc})"
            ) from None
        if not isinstance(parsed, dict):
            raise ApiHttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name}: the request body must be a JSON object (a {message.DESCRIPTOR.name})",
            )
        try:
            json_format.ParseDict(parsed, message)
        except json_format.ParseError as exc:
            raise ApiHttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name}: the request body does not parse as its message ({exc})",
            ) from None
        return message

    async def _stream(
        self, request: web.Request, name: str, method: Any
    ) -> tuple[web.StreamResponse, grpc.StatusCode]:
        message = getattr(api_pb2, method.input_type.name)()
        if request.method == "GET":
            message = message_from_query(name, message, _query(request))
        elif request.method == "POST":
            message = await self._body(request, name, message)
        else:
            raise ApiHttpError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{name}: use GET or POST, not {request.method}",
                http_status=405,
            )
        await self.auth.authorize(request, name, message)
        return await serve_stream(request, name, message, self.streams[name], peer_identity(request))

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            message = message_from_query("Watch", api_pb2.WatchRequest(), _query(request))
        elif request.method == "POST":
            message = await self._body(request, "Watch", api_pb2.WatchRequest())
        else:
            raise ApiHttpError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Watch: use GET or POST, not {request.method}",
                http_status=405,
            )
        assert isinstance(message, api_pb2.WatchRequest)
        await self.auth.authorize(request, "Watch", message)
        # Capped per caller as on gRPC: the proven identity (a token ...), else the address.
        return await self.events.serve(request, message, caller_of(grpc_peer(request), {}))
