"""The rules and alarms commands of the CLI: ``drsdtp alarms``, ``drsdtp ack ALARM``, ``drsdtp rules``, and
the check of ``[[rules]]``/``[[notify]]`` for ``check-config``.

Client side only (the API's messages; gRPC is imported when a command runs): :func:`add_parsers` adds the
subcommands; each ``run_*`` coroutine carries one out against a node's API and returns the exit status.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drsdtp.config import NodeConfig
from drsdtp.console import Console
from drsdtp.errors import ConfigError
from drsdtp.node_commands import EXIT_FAILURE, EXIT_OK, ApiTarget

if TYPE_CHECKING:
    from drsdtp.wire.v1 import api_pb2

__all__ = ["add_parsers", "alarm_doc", "check_config", "run_ack", "run_alarms", "run_rules"]

ClientParser = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(client: ClientParser, actor: Callable[[argparse.ArgumentParser], None]) -> None:
    p = client("alarms", "list the alarms rules raised (replicated: any node shows them), or follow them")
    p.add_argument("--active", action="store_true", help="only alarms not cleared")
    p.add_argument("--twin", default="", help="only this twin's")
    p.add_argument("--rule", default="", help="only this rule's")
    p.add_argument("--limit", type=int, default=100, help="the newest this many (default: %(default)s)")
    p.add_argument("--follow", "-f", action="store_true", help="then print each change as it happens")
    p = client("ack", "acknowledge an alarm (its current episode)")
    p.add_argument("alarm_id", metavar="ALARM", help="the alarm's id (drsdtp alarms lists them)")
    p.add_argument("--reason", "-m", default="", help="why (recorded in the alarm)")
    actor(p)
    client("rules", "list the node's rules: what each matches, has fired, and its last error")


def check_config(config: NodeConfig) -> list[ConfigError]:
    """``[[rules]]`` and ``[[notify]]`` validated as the node will at start."""
    from drsdtp.rules.alerting import parse_alerting  # numpy: only when checking a config

    try:
        parse_alerting(config)
    except ConfigError as exc:
        return [exc]
    return []


def rules_table(config: NodeConfig) -> list[tuple[object, ...]]:
    from drsdtp.rules.alerting import parse_alerting

    spec = parse_alerting(config)
    return [
        (
            r.name,
            ", ".join(r.twins),
            r.when.source,
            f"{r.for_s:g}s",
            r.severity if r.alarm else "-",
            len(r.actions),
        )
        for r in spec.rules
    ]


def alarm_doc(a: api_pb2.Alarm) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule": a.rule,
        "twin": a.twin_id,
        "severity": a.severity,
        "state": a.state,
        "count": a.count,
        "message": a.message,
        "first_ms": a.first_ms,
        "raised_ms": a.raised_ms,
        "last_ms": a.last_ms,
        "raised_by": a.raised_by,
        "acked_by": a.acked_by,
        "acked_ms": a.acked_ms,
        "ack_reason": a.ack_reason,
        "cleared_ms": a.cleared_ms,
        "cleared_by": a.cleared_by,
    }


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""


def _row(a: api_pb2.Alarm) -> tuple[object, ...]:
    state = a.state + (f" by {a.acked_by}" if a.acked_by else "")
    return (a.id, a.rule, a.twin_id, a.severity, state, a.count, _when(a.raised_ms), a.message)


_HEADERS = ("alarm", "rule", "twin", "severity", "state", "count", "raised", "message")


async def run_alarms(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    import grpc.aio

    from drsdtp.client import connect
    from drsdtp.wire.v1 import api_pb2

    if not 1 <= args.limit <= 10_000:
        console.error("--limit must be between 1 and 10000")
        return EXIT_FAILURE
    channel, stub = connect(target.address, target.tls, target.server_name)
    where = f"{target.address.host}:{target.address.port}"
    try:
        if args.follow:
            request = api_pb2.WatchAlarmsRequest(active=args.active, twin_id=args.twin, rule=args.rule)
            async for alarm in stub.WatchAlarms(request):
                if console.json_mode:
                    console.json(alarm_doc(alarm))
                else:
                    console.line("  ".join(str(c) for c in _row(alarm)))
            return EXIT_OK
        reply = await stub.ListAlarms(
            api_pb2.ListAlarmsRequest(
                active=args.active, twin_id=args.twin, rule=args.rule, limit=args.limit
            ),
            timeout=target.timeout_s,
        )
        if console.json_mode:
            console.json([alarm_doc(a) for a in reply.alarms])
        else:
            console.table(_HEADERS, [_row(a) for a in reply.alarms])
            if reply.total > len(reply.alarms):
                console.line(f"({len(reply.alarms)} of {reply.total}; --limit shows more)")
        return EXIT_OK
    except grpc.aio.AioRpcError as exc:
        console.error(f"alarms on {where}: {exc.code().name}: {exc.details()}")
        return EXIT_FAILURE
    finally:
        await channel.close()


async def run_ack(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    import grpc.aio

    from drsdtp.client import connect
    from drsdtp.wire.v1 import api_pb2

    channel, stub = connect(target.address, target.tls, target.server_name)
    where = f"{target.address.host}:{target.address.port}"
    try:
        request = api_pb2.AcknowledgeAlarmRequest(
            alarm_id=args.alarm_id, actor=args.actor, reason=args.reason
        )
        alarm = await stub.AcknowledgeAlarm(request, timeout=target.timeout_s)
    except grpc.aio.AioRpcError as exc:
        console.error(f"ack on {where}: {exc.code().name}: {exc.details()}")
        return EXIT_FAILURE
    finally:
        await channel.close()
    if console.json_mode:
        console.json(alarm_doc(alarm))
    else:
        console.line(f"alarm {alarm.id} ({alarm.rule} on {alarm.twin_id}) acknowledged by {alarm.acked_by}")
    return EXIT_OK


async def run_rules(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    import grpc.aio

    from drsdtp.client import connect
    from drsdtp.wire.v1 import api_pb2

    channel, stub = connect(target.address, target.tls, target.server_name)
    where = f"{target.address.host}:{target.address.port}"
    try:
        reply = await stub.ListRules(api_pb2.ListRulesRequest(), timeout=target.timeout_s)
    except grpc.aio.AioRpcError as exc:
        console.error(f"rules on {where}: {exc.code().name}: {exc.details()}")
        return EXIT_FAILURE
    finally:
        await channel.close()
    docs = [
        {
            "name": r.name, "twins": list(r.twins), "when": r.when, "for_s": r.for_s,
            "clear_when": r.clear_when, "deadband": r.deadband, "severity": r.severity, "alarm": r.alarm,
            "enabled": r.enabled, "actions": list(r.actions), "matched": r.matched, "active": r.active,
            "fired": r.fired, "cleared": r.cleared, "errors": r.errors, "last_error": r.last_error,
            "suspended_until_ms": r.suspended_until_ms,
        }
        for r in reply.rules
    ]  # fmt: skip
    if console.json_mode:
        console.json({"passes": reply.passes, "last_pass_s": reply.last_pass_s, "rules": docs})
        return EXIT_OK
    rows = [
        (r.name, r.when, r.matched, r.active, r.fired, r.errors,
         ("suspended: " if r.suspended_until_ms else "") + r.last_error)
        for r in reply.rules
    ]  # fmt: skip
    console.table(("rule", "when", "twins", "active", "fired", "errors", "last error"), rows)
    console.line(
        f"{reply.passes} passes every {reply.period_s:g}s; the last took {reply.last_pass_s * 1000:.2f} ms"
    )
    return EXIT_OK
