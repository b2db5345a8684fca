"""The read methods: Status, ListTwins, GetTwin, ReadHistory, Insight."""

from __future__ import annotations

import json
import time

from drsdtp.api import convert
from drsdtp.api.node import NodeApi
from drsdtp.api.visibility import in_scope
from drsdtp.api.write_plan import DELETED_FIELD, twin_version, visible
from drsdtp.errors import InvalidValueError, UnknownTwinError
from drsdtp.gossip.scopes import scope_of
from drsdtp.models import MODEL_FIELD
from drsdtp.wire.v1 import api_pb2

__all__ = ["ReadService"]

DEFAULT_HISTORY_MS = 3_600_000
DEFAULT_HISTORY_POINTS = 10_000


class ReadService:
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    async def status(self, request: api_pb2.StatusRequest) -> api_pb2.StatusReply:
        return convert.status_message(self.node.status())

    async def list_twins(self, request: api_pb2.ListTwinsRequest) -> api_pb2.ListTwinsReply:
        store = self.node.store
        out = api_pb2.ListTwinsReply()
        within = in_scope()  # a scoped caller lists its twins only, counted in total and limit as such
        for twin in store.twins():
            if twin.startswith("_") or (request.prefix and not twin.startswith(request.prefix)):
                continue
            if within is not None and not within(twin):
                continue
            if store.get(twin, DELETED_FIELD) is True:
                continue
            model = str(store.get(twin, MODEL_FIELD) or "")
            scope = scope_of(store, twin)
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
                    version=twin_version(store, twin),
                )
            )
        return out

    async def get_twin(self, request: api_pb2.GetTwinRequest) -> api_pb2.Twin:
        if not visible(self.node.store, request.twin_id):
            raise UnknownTwinError(f"no twin {request.twin_id!r} on this node")
        return convert.twin_message(
            self.node.store, request.twin_id, list(request.fields), self.node.writer_name
        )

    async def read_history(self, request: api_pb2.HistoryRequest) -> api_pb2.HistoryReply:
        now = int(time.time() * 1000)
        data = await self.node.read_history(
            request.twin_id,
            request.field,
            request.start_ms or now - DEFAULT_HISTORY_MS,
            request.end_ms or now,
            request.resolution,
            request.limit or DEFAULT_HISTORY_POINTS,
        )
        return convert.history_message(data)

    async def insight(self, request: api_pb2.InsightRequest) -> api_pb2.InsightReply:
        try:
            params = json.loads(request.params_json) if request.params_json else {}
        except ValueError as exc:
            raise InvalidValueError(f"params_json is not JSON: {exc}") from None
        if not isinstance(params, dict):
            raise InvalidValueError("params_json must hold a JSON object")
        try:
            doc = self.node.insight(request.twin_id, request.kind, params)
        except ValueError as exc:  # a bad parameter the intelligence found (not one of our errors)
            if isinstance(exc, InvalidValueError):
                raise
            raise InvalidValueError(str(exc)) from None
        return api_pb2.InsightReply(json=json.dumps(doc))
