"""The dashboard's one read of its site page: every twin id and the change-feed position they were listed at,
as one compact JSON document (``GET /dashboard/twins.json`` -> ``{"cursor": "<n>", "twins": [id, ...]}``, ids
sorted). The page then watches with ``resume_after`` that cursor, so thousands of twins cost one small fetch
instead of a Watch snapshot of one event per twin, or ListTwins' summary of each (its model, scope, field
count, stamps and version, which the page does not show). Authorized as ListTwins and cut to the caller's
scopes as it is, counted as ``dashboard/twins``."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web

from drsdtp.api.http.auth import HttpAuthorizer
from drsdtp.api.http.errors import ApiHttpError
from drsdtp.api.services.watch import WatchService
from drsdtp.api.visibility import in_scope
from drsdtp.api.write_plan import DELETED_FIELD
from drsdtp.wire.v1 import api_pb2

__all__ = ["METHOD", "twins_handler"]

METHOD = "dashboard/twins"  # its name in the request counts


def twins_handler(
    auth: HttpAuthorizer, watches: WatchService, counts: collections.Counter[tuple[str, ...]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        code = grpc.StatusCode.OK
        try:
            await auth.authorize(request, "ListTwins", api_pb2.ListTwinsRequest())
            store = watches.store
            # The position first: a change between it and the listing is sent again, never missed (both
            # happen in this one step of the event loop anyway).
            cursor = watches.feed.seq
            within = in_scope()  # a scoped caller lists its twins only, as ListTwins does
            twins = sorted(
                t
                for t in store.twins()
                if not t.startswith("_")
                and (within is None or within(t))
                and store.get(t, DELETED_FIELD) is not True
            )
            return web.json_response({"cursor": str(cursor), "twins": twins})
        except ApiHttpError as exc:
            code = exc.code
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            counts[(METHOD, code.name)] += 1

    return handler
