"""A Watch client that opens streams and then stops reading, as a hung application does: it freezes itself
(SIGSTOP), so not even its gRPC library reads the socket. Once continued (SIGCONT), it reads every stream to
its end and prints one JSON line per stream: the status code, details and trailing metadata.

usage: python -m tests.daemon.watch_client PORT STREAMS [--channels N] [--no-freeze] [--freeze-at-once]
                                           [--max-changes N]
Prints {"opened": n, "refused": [...]} once the streams are open (refused ones with their status), then
freezes; with --freeze-at-once it prints {"sent": n} and freezes as soon as the calls are sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import grpc
import grpc.aio

from drsdtp.wire.v1 import api_pb2, api_pb2_grpc


async def drain(call: grpc.aio.UnaryStreamCall) -> dict[str, object]:
    messages, last = 0, list[str]()
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            messages += 1
            last = [*last[-1:], (message.changes[-1] if message.changes else message).twin.twin_id]
    except grpc.aio.AioRpcError:
        pass  # the status is read below
    trailing = await call.trailing_metadata()
    return {
        "code": (await call.code()).name,
        "details": await call.details(),
        "trailing": dict(trailing or ()),
        "messages": messages,
        "last_two": last,  # the twin ids of the last two messages read (each message's last change)
    }


async def main(port: int, streams: int, channels: int, freeze: bool, at_once: bool, max_changes: int) -> None:
    target = f"127.0.0.1:{port}"
    pool = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    request = api_pb2.WatchRequest(max_changes=max_changes)
    calls = [api_pb2_grpc.TwinApiStub(pool[i % channels]).Watch(request) for i in range(streams)]
    if at_once:  # freeze with the calls just sent: every admitted stream stalls from its start
        print(json.dumps({"sent": streams}), flush=True)
        await asyncio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGSTOP)
    # Wait until each stream is answered (its first message) or refused (its status).
    first = await asyncio.gather(*(call.read() for call in calls), return_exceptions=True)
    refused = [str(r.code().name) for r in first if isinstance(r, grpc.aio.AioRpcError)]
    print(json.dumps({"opened": streams - len(refused), "refused": refused}), flush=True)
    if freeze and not at_once:
        os.kill(os.getpid(), signal.SIGSTOP)
    open_calls = [c for c, r in zip(calls, first, strict=True) if not isinstance(r, BaseException)]
    for result in await asyncio.gather(*(drain(c) for c in open_calls)):
        print(json.dumps(result), flush=True)
    for channel in pool:
        await channel.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("streams", type=int)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--no-freeze", dest="freeze", action="store_false")
    parser.add_argument("--freeze-at-once", dest="at_once", action="store_true")
    parser.add_argument("--max-changes", type=int, default=0, help="changes a message (0: one, as v1)")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.streams, args.channels, args.freeze, args.at_once, args.max_changes))
