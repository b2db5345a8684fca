"""The intelligence commands of the CLI: ``drsdtp anomalies``, ``drsdtp relate`` and ``drsdtp query``.

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

__all__ = ["add_parsers", "anomaly_doc", "run_anomalies", "run_query", "run_relate"]

ClientParser = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(client: ClientParser) -> None:
    """Adds the subcommands; ``client(name, help)`` makes a subparser with the API options."""
    p = client("anomalies", "list a node's anomaly events (all twins', or one twin's), or follow them")
    p.add_argument("twin_id", nargs="?", metavar="TWIN", help="only this twin")
    p.add_argument("--limit", type=int, default=50, help="the newest this many (default: %(default)s)")
    p.add_argument("--follow", "-f", action="store_true", help="then print new events as they are logged")

    p = client("relate", "relate two twins (replicated): TWIN RELATION TARGET, e.g. pump-1 feeds tank-3")
    p.add_argument("twin_id", metavar="TWIN")
    p.add_argument(
        "relation", metavar="RELATION", help="located_in (child to parent), feeds, powers, any name"
    )
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--remove", action="store_true", help="remove the relation instead")

    p = client("query", "find twins by position, relation, field values and health (answered locally)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--under", metavar="TWIN", help="everything located in TWIN, at any depth")
    where.add_argument("--above", metavar="TWIN", help="where TWIN is located, up to the top")
    where.add_argument("--related", metavar="TWIN", help="TWIN's neighbours (by --relation if given)")
    p.add_argument("--relation", metavar="NAME", help="follow this relation / keep twins that have one")
    p.add_argument(
        "--where", action="append", default=[], metavar="COND", help='e.g. "temp > 40" (repeatable, all hold)'
    )
    p.add_argument(
        "--health",
        action="append",
        default=[],
        type=str.upper,
        choices=("HEALTHY", "DEGRADED", "FAILED"),
        help="keep twins with this health (repeatable)",
    )
    p.add_argument("--limit", type=int, default=1000, help="at most this many twins (default: %(default)s)")


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


async def _unary(target: ApiTarget, console: Console, method: str, request: Any) -> Any:
    import grpc.aio

    from drsdtp.client import connect

    channel, stub = connect(target.address, target.tls, target.server_name)
    try:
        return await getattr(stub, method)(request, timeout=target.timeout_s)
    except grpc.aio.AioRpcError as exc:
        where = f"{target.address.host}:{target.address.port}"
        console.error(f"{method} on {where}: {exc.code().name}: {exc.details()}")
        return None
    finally:
        await channel.close()


async def run_relate(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    from drsdtp.wire.v1 import api_pb2

    edge = api_pb2.RelationEdge(twin_id=args.twin_id, relation=args.relation, target=args.target)
    request = api_pb2.RelateRequest(remove=[edge]) if args.remove else api_pb2.RelateRequest(add=[edge])
    reply = await _unary(target, console, "Relate", request)
    if reply is None:
        return EXIT_FAILURE
    verb = "removed" if args.remove else "added"
    if console.json_mode:
        console.json({"changed": reply.changed})
    else:
        state = verb if reply.changed else f"already {'absent' if args.remove else 'there'}"
        console.line(f"{args.twin_id} --{args.relation}--> {args.target}: {state}")
    return EXIT_OK


async def run_query(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    import json

    from drsdtp.wire.v1 import api_pb2

    request = api_pb2.QueryRequest(
        under=args.under or "",
        above=args.above or "",
        related=args.related or "",
        relation=args.relation or "",
        where=args.where,
        health=args.health,
        limit=args.limit,
    )
    reply = await _unary(target, console, "Query", request)
    if reply is None:
        return EXIT_FAILURE
    docs = [
        {
            "twin": h.twin_id,
            "model": h.model,
            "health": h.health or None,
            "values": json.loads(h.values_json) if h.values_json else {},
            "relations": [{"relation": e.relation, "target": e.target} for e in h.edges],
        }
        for h in reply.twins
    ]
    if console.json_mode:
        console.json(docs)
        return EXIT_OK
    rows = [
        (
            d["twin"],
            d["model"],
            d["health"] or "",
            ", ".join(f"{k}={v}" for k, v in d["values"].items()),
            ", ".join(f"{r['relation']} {r['target']}" for r in d["relations"]),
        )
        for d in docs
    ]
    console.table(
        ["twin", "model", "health", "values", "relations"], rows, title=f"{len(rows)} of {reply.total} twins"
    )
    return EXIT_OK
