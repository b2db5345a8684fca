"""The intelligence commands of the CLI: ``drsdtp anomalies`` (and, with relations, ``drsdtp query``).

Client side only (the API's messages, no daemon imports; gRPC is imported when a command runs):
:func:`add_parsers` adds the subcommands to the CLI's parser; each ``run_*`` coroutine carries one out
against a node's API and returns the exit status.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drsdtp.console import Console
from drsdtp.node_commands import EXIT_FAILURE, EXIT_OK, ApiTarget

if TYPE_CHECKING:  # gRPC and the messages load only when a command runs (``--help`` stays fast)
    from drsdtp.wire.v1 import api_pb2

__all__ = ["add_parsers", "anomaly_doc", "run_anomalies"]

ClientParser = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(client: ClientParser) -> None:
    """Adds the subcommands; ``client(name, help)`` makes a subparser with the API options."""
    p = client("anomalies", "list a node's anomaly events (all twins', or one twin's), or follow them")
    p.add_argument("twin_id", nargs="?", metavar="TWIN", help="only this twin")
    p.add_argument("--limit", type=int, default=50, help="the newest this many (default: %(default)s)")
    p.add_argument("--follow", "-f", action="store_true", help="then print new events as they are logged")


def anomaly_doc(r: api_pb2.AnomalyRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "seq": r.seq,
        "twin": r.twin_id,
        "field": r.field,
        "model": r.model,
        "kind": r.kind,
        "severity": r.severity,
        "t_s": r.t_s,
        "value": r.value if r.HasField("value") else None,
        "detail": r.detail,
        "test": r.test,
        "magnitude": r.magnitude if r.HasField("magnitude") else None,
        "score": r.score if r.HasField("score") else None,
        "logged_ms": r.logged_ms,
        "related": list(r.related),
    }
    return doc


def _row(r: api_pb2.AnomalyRecord) -> tuple[object, ...]:
    logged = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.logged_ms / 1000))
    value = f"{r.value:.6g}" if r.HasField("value") else ""
    return (r.seq, logged, r.twin_id, r.field, r.kind, r.severity, value, r.detail, ", ".join(r.related))


_HEADERS = ("seq", "logged", "twin", "field", "kind", "severity", "value", "detail", "may affect")


async def run_anomalies(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    import grpc.aio

    from drsdtp.client import connect
    from drsdtp.wire.v1 import api_pb2

    if args.limit < 1:
        console.error("--limit must be at least 1")
        return EXIT_FAILURE
    channel, stub = connect(target.address, target.tls, target.server_name)
    where = f"{target.address.host}:{target.address.port}"
    try:
        request = api_pb2.ListAnomaliesRequest(twin_id=args.twin_id or "", limit=args.limit)
        reply = await stub.ListAnomalies(request, timeout=target.timeout_s)
        if console.json_mode:
            if not args.follow:
                console.json([anomaly_doc(r) for r in reply.anomalies])
        else:
            title = (
                f"{len(reply.anomalies)} of {reply.held} anomaly events held"
                f"{' for ' + args.twin_id if args.twin_id else ''} "
                f"(kept: {reply.per_twin} per twin, {reply.max_events} in all)"
            )
            console.table(_HEADERS, [_row(r) for r in reply.anomalies], title=title)
        if not args.follow:
            return EXIT_OK
        last = reply.anomalies[-1].seq if reply.anomalies else None
        watch = api_pb2.WatchAnomaliesRequest(twin_id=args.twin_id or "")
        if last is not None:
            watch.after_seq = last
        async for record in stub.WatchAnomalies(watch):
            if console.json_mode:
                console.json(anomaly_doc(record))
            else:
                console.line("  ".join(str(c) for c in _row(record)))
        return EXIT_OK
    except grpc.aio.AioRpcError as exc:
        console.error(f"anomalies on {where}: {exc.code().name}: {exc.details()}")
        return EXIT_FAILURE
    finally:
        await channel.close()
