"""``drsdtp command`` and ``drsdtp commands``: issue a command to an actuator, follow it, list commands.

::

    drsdtp command pump-1 valve 0.4 --reason "less flow" --wait     # exit 0 once applied, 1 otherwise
    drsdtp command pump-1 start 2 fast --key morning-start          # an action with arguments
    drsdtp command --cancel 3f2a...  --reason "wrong pump"
    drsdtp command pump-1 --set valve=0.4 --set speed=1450 --wait      # many in one call (command_batch_cli)
    drsdtp command --file commands.txt --wait                           # one a line: TWIN ACTION [ARG...]
    drsdtp commands [pump-1] [--active] [--json]

A value or argument reads as a boolean (``true``/``false``), an integer, a number, else text. Client side
only: gRPC and the generated stubs (no daemon imports), registered into the CLI by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from drsdtp.config import NodeConfig
from drsdtp.console import Console
from drsdtp.errors import ConfigError
from drsdtp.node_commands import EXIT_FAILURE, EXIT_OK, ApiTarget
from drsdtp.wire.v1 import api_pb2

__all__ = ["HANDLERS", "add_parsers", "arg_value", "call_api", "check_config", "command_doc", "show_command"]

Client = Callable[[str, str], argparse.ArgumentParser]
RunClient = Callable[[argparse.Namespace, Callable[[ApiTarget], Coroutine[Any, Any, int]]], int]
_INT = re.compile(r"[+-]?\d+")


def arg_value(text: str) -> api_pb2.FieldValue:
    if text in ("true", "false"):
        return api_pb2.FieldValue(flag=text == "true")
    if _INT.fullmatch(text):
        return api_pb2.FieldValue(i64=int(text))
    try:
        return api_pb2.FieldValue(f64=float(text))
    except ValueError:
        return api_pb2.FieldValue(text=text)


def check_config(config: NodeConfig) -> list[ConfigError]:
    """``[[actuators]]`` validated as the node will at start: the tables, and the write targets of the
    actuators this node executes against its adapters (built, not connected)."""
    from drsdtp.actions.actuators import parse_actuators
    from drsdtp.adapters import build_adapter
    from drsdtp.adapters.write import writer_of

    try:
        actuators = parse_actuators(config.actuators)
        adapters = {t.get("name"): (i, t) for i, t in enumerate(config.adapters)}
        for spec in actuators.executed_by(config.node_id):
            if spec.adapter not in adapters:
                raise ConfigError(f"{spec.key}.adapter", f"this node has no adapter {spec.adapter!r}")
            i, table = adapters[spec.adapter]
            writer = writer_of(build_adapter(table, f"adapters[{i}]"))
            if writer is None:
                raise ConfigError(f"{spec.key}.adapter", f"adapter {spec.adapter!r} cannot write")
            writer.write_target(spec.write, f"{spec.key}.write")
    except ConfigError as exc:
        return [exc]
    return []


def add_parsers(client: Client, actor: Callable[[argparse.ArgumentParser], None]) -> None:
    p = client("command", "issue a command to an actuator (or --cancel one) and show its outcome")
    p.add_argument("twin_id", nargs="?", metavar="TWIN")
    p.add_argument("action", nargs="?", metavar="ACTION")
    p.add_argument("args", nargs="*", metavar="ARG", help="the value, or an action's arguments")
    p.add_argument("--reason", "-m", default="", help="why (recorded in the audit trail)")
    p.add_argument("--key", default="", help="idempotency key: a repeat names the same command")
    p.add_argument("--deadline", type=float, default=0.0, metavar="SECONDS", help="(default: the actuator's)")
    p.add_argument("--wait", action="store_true", help="wait for the outcome; exit 0 only when applied")
    p.add_argument("--cancel", metavar="COMMAND", help="cancel this command instead (needs --reason)")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="ACTION=VALUE",
        help="a command on TWIN; repeat it: all go in one call (--key K: keys K/1, K/2, ...)",
    )  # fmt: skip
    p.add_argument(
        "--file", metavar="FILE", help="commands from FILE, one a line: TWIN ACTION [ARG...] ('-': stdin)"
    )
    actor(p)
    p = client("commands", "list commands (newest first), or show one with --id")
    p.add_argument("twin_id", nargs="?", metavar="TWIN", help="only this twin's")
    p.add_argument("--active", action="store_true", help="only commands without an outcome yet")
    p.add_argument("--id", dest="command_id", help="show this command with its history")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")


async def call_api(target: ApiTarget, console: Console, method: str, request: Any, timeout_s: float) -> Any:
    """``method``'s reply from the node, or None once its error is on the console."""
    # The SDK is imported by the commands that call a node, not by every CLI start (`drsdtp run` too).
    from drsdtp.client import connect
    from drsdtp.client.channel import metadata_for

    channel, stub = connect(target.address, target.tls, target.server_name)
    try:
        return await getattr(stub, method)(request, timeout=timeout_s, metadata=metadata_for(target.token))
    except grpc.aio.AioRpcError as exc:
        where = f"{target.address.host}:{target.address.port}"
        console.error(f"{method} on {where}: {exc.code().name}: {exc.details()}")
        return None
    finally:
        await channel.close()


def command_doc(c: api_pb2.Command) -> dict[str, Any]:
    from drsdtp.client import field_to_python

    return {
        "id": c.command_id, "twin": c.twin_id, "action": c.action, "field": c.field,
        "value": field_to_python(c.value) if c.HasField("value") else None,
        "args": [field_to_python(a) for a in c.args], "origin": c.origin, "key": c.idempotency_key,
        "issued_ms": c.issued_ms, "deadline_ms": c.deadline_ms, "executor": c.executor, "issuer": c.issuer,
        "actor": c.actor, "reason": c.reason, "state": c.state, "why": c.why, "attempts": c.attempts,
        "held": c.held, "result": c.result, "terminal": c.terminal,
        "marks": [{"state": m.state, "ms": m.ms, "node": m.node, "reason": m.reason} for m in c.marks],
    }  # fmt: skip


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}" if ms else ""


def _value_text(c: api_pb2.Command) -> str:
    from drsdtp.client import field_to_python

    parts = [repr(field_to_python(c.value))] if c.HasField("value") else []
    return " ".join(parts + [repr(field_to_python(a)) for a in c.args])


def show_command(console: Console, c: api_pb2.Command, repeated: bool = False) -> None:
    """A command's state and marks, or its JSON document in ``--json`` mode."""
    if console.json_mode:
        console.json({**command_doc(c), "repeated": repeated})
        return
    head = f"command {c.command_id}: {c.twin_id} {c.action} {_value_text(c)}".rstrip()
    console.line(head + (" (repeat of an earlier request with this key)" if repeated else ""))
    console.line(f"  state: {c.state}" + (f": {c.why}" if c.why else ""))
    console.line(
        f"  by {c.actor or 'anonymous'} on {c.issuer}, executed by {c.executor}; attempts {c.attempts}"
    )
    for m in c.marks:
        console.line(f"  {_when(m.ms)}  {m.state:<12} {m.node}: {m.reason}")


async def _command(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    if args.cancel:
        cancel = api_pb2.CommandCancelRequest(command_id=args.cancel, actor=args.actor, reason=args.reason)
        reply = await call_api(target, console, "CancelCommand", cancel, target.timeout_s)
        if reply is None:
            return EXIT_FAILURE
        show_command(console, reply.command)
        return EXIT_OK
    request = api_pb2.CommandIssueRequest(
        twin_id=args.twin_id, action=args.action, args=[arg_value(a) for a in args.args],
        args_positional=True, idempotency_key=args.key, deadline_s=args.deadline, actor=args.actor,
        reason=args.reason,
    )  # fmt: skip
    reply = await call_api(target, console, "IssueCommand", request, target.timeout_s)
    if reply is None:
        return EXIT_FAILURE
    command, repeated = reply.command, reply.repeated
    if args.wait:
        while not command.terminal:
            left_s = command.deadline_ms / 1000 - time.time()
            wait = api_pb2.CommandWaitRequest(
                command_id=command.command_id, timeout_s=max(1.0, min(left_s + 5, 60))
            )
            got = await call_api(target, console, "WaitCommand", wait, wait.timeout_s + target.timeout_s)
            if got is None:
                return EXIT_FAILURE
            command = got.command
            if not command.terminal and left_s < -30:
                break  # the executor is away: say what we know
    show_command(console, command, repeated)
    if args.wait:
        return EXIT_OK if command.state == "applied" else EXIT_FAILURE
    return EXIT_OK


async def _commands(target: ApiTarget, args: argparse.Namespace, console: Console) -> int:
    if args.command_id:
        reply = await call_api(
            target,
            console,
            "GetCommand",
            api_pb2.CommandGetRequest(command_id=args.command_id),
            target.timeout_s,
        )
        if reply is None:
            return EXIT_FAILURE
        show_command(console, reply.command)
        return EXIT_OK
    request = api_pb2.CommandListRequest(twin_id=args.twin_id or "", active=args.active, limit=args.limit)
    reply = await call_api(target, console, "ListCommands", request, target.timeout_s)
    if reply is None:
        return EXIT_FAILURE
    if console.json_mode:
        console.json([command_doc(c) for c in reply.commands])
        return EXIT_OK
    rows = [
        (c.command_id, _when(c.issued_ms), c.twin_id, c.action, _value_text(c), c.state, c.why, c.actor)
        for c in reply.commands
    ]
    console.table(
        ["command", "issued", "twin", "action", "value", "state", "why", "by"],
        rows,
        title=f"{len(rows)} commands",
    )
    return EXIT_OK


def _cmd_command(args: argparse.Namespace, run: RunClient, console: Console) -> int:
    if args.sets or args.file is not None:
        return _cmd_batch(args, run, console)
    if args.cancel:
        if args.twin_id or args.args or not args.reason.strip():
            console.error("command --cancel COMMAND takes no TWIN/ACTION and needs --reason")
            return 2
    elif not args.twin_id or not args.action:
        console.error("command needs TWIN and ACTION (or --cancel COMMAND)")
        return 2
    return run(args, lambda target: _command(target, args, console))


def _cmd_batch(args: argparse.Namespace, run: RunClient, console: Console) -> int:
    from drsdtp import command_batch_cli as batch

    problem = batch.batch_usage(args)
    if problem is not None:
        console.error(problem)
        return 2
    try:
        lines = batch.read_lines(args)
    except ValueError as exc:
        console.error(str(exc))
        return 2
    if not lines:
        console.error(f"{args.file}: no commands")
        return 2
    return run(args, lambda target: batch.run_batch(target, lines, args, console))


def _cmd_commands(args: argparse.Namespace, run: RunClient, console: Console) -> int:
    if args.limit < 1:
        console.error("--limit must be at least 1")
        return 2
    return run(args, lambda target: _commands(target, args, console))


HANDLERS: dict[str, Callable[[argparse.Namespace, RunClient, Console], int]] = {
    "command": _cmd_command,
    "commands": _cmd_commands,
}
