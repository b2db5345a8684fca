"""A v1 application: only the v1 generated stubs (this directory's drsdtp package, never the project's), run
as `python v1_client.py HOST:PORT TWIN` with this directory first on the path. Prints what it read as JSON."""

import asyncio
import json
import sys

import grpc

from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

assert not hasattr(api_pb2, "WriteRequest"), "the v1 stub must not know v2 messages"


def value(f):
    kind = f.WhichOneof("value")
    if kind == "set":
        return sorted(f.set.elements)
    if kind == "desired":
        return [value(v) for v in f.desired.values]
    return getattr(f, kind) if kind else None


async def main(target, twin):
    async with grpc.aio.insecure_channel(target) as channel:
        stub = api_pb2_grpc.TwinApiStub(channel)
        status = await stub.Status(api_pb2.StatusRequest(), timeout=10)
        listing = await stub.ListTwins(api_pb2.ListTwinsRequest(), timeout=10)
        got = await stub.GetTwin(api_pb2.GetTwinRequest(twin_id=twin), timeout=10)
        call = stub.Watch(api_pb2.WatchRequest(twin_ids=[twin]), timeout=10)
        first = await call.read()
        call.cancel()
        print(json.dumps({
            "node_id": status.node_id,
            "twins": [t.twin_id for t in listing.twins],
            "fields": {f.name: value(f) for f in got.fields},
            "watch": [first.origin, first.twin.twin_id, {f.name: value(f) for f in first.twin.fields}],
        }))


asyncio.run(main(sys.argv[1], sys.argv[2]))
