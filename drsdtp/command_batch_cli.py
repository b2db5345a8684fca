"""``drsdtp command``'s batch form: many commands in one ``IssueCommands`` call, followed together.

::

    drsdtp command pump-1 --set valve=0.4 --set speed=1450 -m "morning" --wait   # actuators of one twin
    drsdtp command --file commands.txt --wait        # one command a line: TWIN ACTION [ARG...] ('-': stdin)

Each command is checked and answered on its own (a refused one is printed with its reason, the others are
issued all the same); ``--wait`` follows every issued command with ``FollowCommands`` (each answer as it
comes; ``WaitCommands`` from a node without it). The exit status is 0 only when no command was refused
(and, with ``--wait``, every one was applied). ``--key K`` gives the commands the keys ``K/1``, ``K/2``,
... in order, so the same invocation repeated names the same commands.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drsdtp.command_cli import arg_value, call_api, command_doc, show_command
from drsdtp.console import Console
from drsdtp.node_commands import EXIT_FAILURE, EXIT_OK, ApiTarget
from drsdtp.wire.v1 import api_pb2

__all__ = ["Line", "batch_usage", "parse_file", "parse_sets", "run_batch"]

MAX_PER_CALL = 512  # the node's IssueCommands / WaitCommands bound: a longer batch goes in several calls
MAX_COMMANDS = 100_000  # a file longer than this is refused (its commands are held in memory)
MAX_WAIT_CALL_S = 60.0


@dataclass(frozen=True, slots=True)
class Line:
    """One command of the batch: where it was given (for errors), its twin, action and arguments."""

    where: str
    twin: str
    action: str
    args: tuple[str, ...]


def parse_sets(twin: str, sets: Sequence[str]) -> list[Line]:
    """``--set ACTION=VALUE`` pairs on ``twin``; raises ValueError naming a malformed pair."""
    out = []
    for pair in sets:
        action, eq, value = pair.partition("=")
        if not eq or not action.strip() or not value:
            raise ValueError(f"--set {pair!r}: expected ACTION=VALUE")
        out.append(Line(f"--set {pair}", twin, action.strip(), (value,)))
    return out


def parse_file(name: str, lines: Iterable[str]) -> list[Line]:
    """``TWIN ACTION [ARG...]`` a line (shell quoting; blank lines and ``#`` comments skipped); raises
    ValueError naming the line that is not one."""
    out: list[Line] = []
    for n, text in enumerate(lines, 1):
        where = f"{name}:{n}"
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not words:
            continue
        if len(words) < 2:
            raise ValueError(f"{where}: expected TWIN ACTION [ARG...], got {text.strip()!r}")
        if len(out) >= MAX_COMMANDS:
            raise ValueError(f"{name}: more than {MAX_COMMANDS} commands; split the file")
        out.append(Line(where, words[0], words[1], tuple(words[2:])))
    return out


def batch_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with a batch invocation's arguments, None when they fit."""
    if args.cancel:
        return "command --cancel takes no --set or --file"
    if args.file is not None:
        if args.twin_id or args.sets:
            return "command --file FILE takes no TWIN, ACTION or --set (the file names them)"
        return None
    if not args.twin_id or args.action or args.args:
        return "command TWIN --set ACTION=VALUE ... takes one TWIN and no ACTION or ARG"
    return None


def read_lines(args: argparse.Namespace) -> list[Line]:
    if args.file is None:
        return parse_sets(args.twin_id, args.sets)
    if args.file == "-":
        return parse_file("stdin", sys.stdin)
    try:
        with open(args.file, encoding="utf-8") as f:
            return parse_file(args.file, f)
    except OSError as exc:
        raise ValueError(f"--file {args.file}: {exc.strerror or exc}") from None


def _request(line: Line, i: int, args: argparse.Namespace) -> api_pb2.CommandIssueRequest:
    return api_pb2.CommandIssueRequest(
        twin_id=line.twin, action=line.action, args=[arg_value(a) for a in line.args], args_positional=True,
        idempotency_key=f"{args.key}/{i + 1}" if args.key else "", deadline_s=args.deadline, actor=args.actor,
        reason=args.reason,
    )  # fmt: skip


async def _issue(
    target: ApiTarget, console: Console, lines: Sequence[Line], args: argparse.Namespace
) -> list[api_pb2.CommandResult] | None:
    results: list[api_pb2.CommandResult] = []
    for start in range(0, len(lines), MAX_PER_CALL):
        batch = api_pb2.CommandIssueBatch(
            commands=[
                _request(line, start + i, args) for i, line in enumerate(lines[start : start + MAX_PER_CALL])
            ]
        )
        reply = await call_api(target, console, "IssueCommands", batch, target.timeout_s)
        if reply is None:
            if results:
                console.error(f"the first {len(results)} commands were issued; the rest were not")
            return None
        results.extend(reply.results)
    return results


async def _follow(target: ApiTarget, console: Console, results: list[api_pb2.CommandResult]) -> bool:
    """Waits until every issued command reached an outcome (or its executor is 30 s past the deadline);
    updates ``results`` in place as each one gets there; False if a call failed."""
    while True:
        pending = [i for i, r in enumerate(results) if r.HasField("command") and not r.command.terminal]
        if not pending:
            return True
        left_s = max(results[i].command.deadline_ms for i in pending) / 1000 - time.time()
        if left_s < -30:
            return True  # the executor is away: say what we know
        wait_s = max(1.0, min(left_s + 5, MAX_WAIT_CALL_S))
        for start in range(0, len(pending), MAX_PER_CALL):
            part = pending[start : start + MAX_PER_CALL]
            request = api_pb2.CommandWaitBatch(
                command_ids=[results[i].command.command_id for i in part], timeout_s=wait_s
            )
            if not await _follow_call(target, console, request, wait_s + target.timeout_s, part, results):
                return False


async def _follow_call(
    target: ApiTarget,
    console: Console,
    request: api_pb2.CommandWaitBatch,
    timeout_s: float,
    part: Sequence[int],
    results: list[api_pb2.CommandResult],
) -> bool:
    """One ``FollowCommands`` stream over ``part`` of ``results``, each updated as its answer comes (a
    node without the stream: one ``WaitCommands`` call); False once its error is on the console."""
    import grpc

    from drsdtp.client import connect
    from drsdtp.client.channel import metadata_for

    def take(index: int, got: api_pb2.CommandResult) -> None:
        i = part[index]
        if got.HasField("command"):
            results[i] = api_pb2.CommandResult(command=got.command, repeated=results[i].repeated)

    channel, stub = connect(target.address, target.tls, target.server_name)
    try:
        answered = 0
        async for got in stub.FollowCommands(request, timeout=timeout_s, metadata=metadata_for(target.token)):
            take(got.index, got)
            answered += 1
        return True
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED or answered:
            where = f"{target.address.host}:{target.address.port}"
            console.error(f"FollowCommands on {where}: {exc.code().name}: {exc.details()}")
            return False
    finally:
        await channel.close()
    reply = await call_api(target, console, "WaitCommands", request, timeout_s)  # an older node
    if reply is None:
        return False
    for index, got in enumerate(reply.results):
        take(index, got)
    return True


def _report(console: Console, lines: Sequence[Line], results: Sequence[api_pb2.CommandResult]) -> None:
    if console.json_mode:
        console.json(
            [
                {**command_doc(r.command), "repeated": r.repeated}
                if r.HasField("command")
                else {"twin": line.twin, "action": line.action, "error_code": r.error_code, "error": r.error}
                for line, r in zip(lines, results, strict=True)
            ]
        )
        return
    for line, r in zip(lines, results, strict=True):
        if r.HasField("command"):
            show_command(console, r.command, r.repeated)
        else:
            console.error(f"{line.where}: {line.twin} {line.action}: {r.error_code}: {r.error}")


async def run_batch(
    target: ApiTarget, lines: Sequence[Line], args: argparse.Namespace, console: Console
) -> int:
    results = await _issue(target, console, lines, args)
    if results is None:
        return EXIT_FAILURE
    followed = await _follow(target, console, results) if args.wait else True
    _report(console, lines, results)
    refused = sum(1 for r in results if not r.HasField("command"))
    if refused:
        console.error(f"{refused} of {len(results)} commands refused")
    if not followed or refused:
        return EXIT_FAILURE
    if args.wait and any(r.command.state != "applied" for r in results):
        return EXIT_FAILURE
    return EXIT_OK
