"""A bare ``grpc.aio`` server in its own process, whose one unary method answers an empty reply at once: the
ceiling a Python gRPC server on this machine puts on any round trip (``bench_sdk.py`` runs it beside the node
in the same run).

    .venv/bin/python benches/grpc_echo.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import grpc.aio

METHOD = "/bench.Echo/Call"


async def serve(port: int) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(call)  # bytes in, bytes out: no (de)serializer
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Call": handler}),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
